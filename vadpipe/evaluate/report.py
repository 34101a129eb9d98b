"""Report writing: ``report.json``, ``report.md`` and the PNG figures of one evaluation.

Layout of a report folder::

    report.json               every number, the protocol, the per-class and per-video tables
    report.md                 the same as Markdown tables, headline first
    roc.png, pr.png           pooled frame-level curves
    timelines/<video_id>.png  score per frame with the ground truth shaded (capped); for scores of
                              objects, the frames behind the peaks with the object boxed
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import quote

import numpy as np

from vadpipe.data_manifests.schema import Manifest, VideoEntry, intervals_from_labels
from vadpipe.evaluate.metrics import VideoResult
from vadpipe.errors import output_dir
from vadpipe.evaluate.protocol import METRIC_LABELS, describe_variant, fmt, metric_order

EXPANSION_NOTES = {
    "repeat": "each frame takes the score of the last sample at or before it (a sample's score "
              "holds over its stride / snippet)",
    "nearest": "each frame takes the score of the nearest sample (ties to the earlier one)",
    "linear": "linear interpolation between samples, constant outside them",
}
INTERVAL_CONVENTION = "0-based, half-open [start, end)"
AP_DEFINITIONS = {
    "sklearn": "average precision over all test frames pooled (sklearn average_precision_score, step-wise)",
    "trapezoid": "area under the precision-recall curve over all test frames pooled, by the trapezoid rule "
                 "(auc(recall, precision), as the convention's peer reports it)",
}


def protocol_line(report: dict) -> str:
    """One line: ground-truth variant, evaluated split, headline, expansion and smoothing."""
    p = report["protocol"]
    headline = ", ".join(METRIC_LABELS[m] for m in p["headline"])
    return (
        f"protocol: {describe_variant(p['variant'])}; {p['split']} split; "
        f"headline: {headline} ({p['headline_source']}); convention={p.get('convention', 'vadpipe')}; "
        f"expansion={p['expansion']}, sigma={p['smoothing_sigma']}"
    )


def table_metrics(report: dict) -> list[str]:
    return metric_order(report["protocol"]["headline"], report.get("recognition") is not None)


def format_table(report: dict) -> str:
    """The protocol line (and, under a peer's convention, vadpipe's own numbers), then a
    Markdown table with the headline metrics first.

    The last line is always this run's row (``vadpipe demo`` prints only that row).
    """
    metrics = table_metrics(report)
    header = ["head", "encoder", *(METRIC_LABELS[m] for m in metrics), "videos", "frames"]
    row = [str(report.get("head")), str(report.get("encoder")), *(fmt(report.get(m)) for m in metrics),
           str(report["num_videos"]), str(report["num_frames"])]
    lines = [protocol_line(report)]
    baseline = report.get("vadpipe_convention")
    if baseline:
        lines.append("under vadpipe's convention: "
                     + ", ".join(f"{METRIC_LABELS[m]} {fmt(baseline.get(m))}" for m in metrics))
    return "\n".join([*lines, md_row(header), md_row(["---"] * len(header)), md_row(row)])


def md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def gt_spans(entry: VideoEntry, labels: np.ndarray) -> list[tuple[int, int, str]]:
    """Runs of anomalous frames, each with the class name(s) of the intervals under it."""
    spans = []
    for run in intervals_from_labels(labels):
        names = set() if entry.mask_path is not None else {
            iv.label or entry.label for iv in entry.intervals if iv.start < run.end and iv.end > run.start
        }
        spans.append((run.start, run.end, "/".join(sorted(names)) or entry.label))
    return spans


def write_figures(out: Path, results: list[VideoResult], manifest: Manifest, report: dict,
                  max_timelines: int) -> dict:
    """ROC, PR and per-video timeline PNGs; returns the figures' relative paths."""
    from vadpipe.evaluate.plots import plot_pr, plot_roc, plot_timeline

    figures: dict = {"roc": None, "pr": None, "timelines": [], "timelines_total": len(results)}
    y = np.concatenate([r.labels for r in results])
    s = np.concatenate([r.scores for r in results])
    if y.size and y.min() != y.max():
        plot_roc(out / "roc.png", y, s, report["micro_auc"])
        plot_pr(out / "pr.png", y, s, report["ap"])
        figures.update(roc="roc.png", pr="pr.png")
    aucs = {v["video_id"]: v["auc"] for v in report["videos"]}
    for r in results[: max(max_timelines, 0)]:
        rel = f"timelines/{r.video_id}.png"
        title = f"{r.video_id}  ({r.label}, {len(r.labels)} frames, AUC {fmt(aucs[r.video_id])})"
        spans = [(a + r.first_frame, b + r.first_frame, text) for a, b, text in gt_spans(manifest[r.video_id], r.labels)]
        evidence = None
        if r.evidence:
            from vadpipe.evaluate.evidence import read_frames

            pixels = read_frames(manifest[r.video_id].path, [ev.frame for ev in r.evidence])
            evidence = [(ev, pixels.get(ev.frame)) for ev in r.evidence]
        plot_timeline(out / rel, r.scores, spans, title, first_frame=r.first_frame, evidence=evidence)
        figures["timelines"].append(rel)
    return figures


def write_report(out_dir: str | Path, report: dict, results: list[VideoResult], manifest: Manifest,
                 plots: bool = True, max_timelines: int = 50) -> Path:
    """Write ``report.json``, ``report.md`` and (``plots``) the PNGs into ``out_dir``."""
    out = output_dir(out_dir)
    report["figures"] = write_figures(out, results, manifest, report, max_timelines) if plots else None
    (out / "report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    (out / "report.md").write_text(format_markdown(report))
    return out


def format_markdown(report: dict) -> str:
    p = report["protocol"]
    recognition = report.get("recognition")
    headline = ", ".join(METRIC_LABELS[m] for m in p["headline"])
    source = ("the benchmark protocol recorded in the manifest" if p["headline_source"] == "manifest"
              else "default: the manifest records no protocol")
    lines = [
        "# Evaluation report",
        "",
        f"- scores: `{report.get('scores')}` (head `{report.get('head')}`, encoder `{report.get('encoder')}`)",
        f"- manifest: `{report.get('manifest') or '(in memory)'}`",
        f"- ground truth: {describe_variant(p['variant'])}",
        f"- evaluated: {p['split']} split, {report['num_videos']} videos, {report['num_frames']:,} frames "
        f"({report['num_anomalous_frames']:,} anomalous)",
        f"- headline: **{headline}** ({source})",
        f"- convention: **{report['convention']['name']}** -- {report['convention']['description']}",
        "",
        "## Headline metrics",
        "",
    ]
    baseline = report.get("vadpipe_convention")
    if baseline:
        lines += ["| metric | value | under vadpipe's convention |", "|---|---|---|"]
    else:
        lines += ["| metric | value |", "|---|---|"]
    for m in table_metrics(report):
        name = f"**{METRIC_LABELS[m]}** (headline)" if m in p["headline"] else METRIC_LABELS[m]
        lines.append(f"| {name} | {fmt(report.get(m))} |" + (f" {fmt(baseline.get(m))} |" if baseline else ""))
    clipped = report["clipped_gt_frames"]
    if clipped["total"]:
        lines += ["", f"{clipped['total']:,} annotated anomalous frames lie past the evaluated frames of "
                      f"{len(clipped['videos'])} video(s) and were clipped (per video in report.json)."]
    if recognition is None:
        lines += ["", "No class probabilities in the scores: recognition metrics (mAUC, mAP) not computed."]
    lines += ["", "## Protocol", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _protocol_rows(report)]
    if recognition is not None:
        lines += ["", *_recognition_section(recognition)]
    lines += ["", *_videos_section(report)]
    if report.get("figures"):
        lines += ["", *_figures_section(report["figures"])]
    return "\n".join(lines) + "\n"


def _protocol_rows(report: dict) -> list[tuple[str, str]]:
    p = report["protocol"]
    sigma = p["smoothing_sigma"]
    meta = p.get("manifest_meta") or {}
    rows = [
        ("expansion", f"`{p['expansion']}`: {EXPANSION_NOTES[p['expansion']]}"),
        ("smoothing", f"Gaussian, sigma = {sigma} frames" if sigma else "none (sigma = 0)"),
        ("interval convention", p["interval_convention"]),
        ("ground-truth variant", describe_variant(p["variant"])),
    ]
    if "source_convention" in meta:
        rows.append(("source annotation convention", str(meta["source_convention"])))
    rows += [
        ("evaluated split", p["split"]),
        ("micro AUC", "ROC AUC over all test frames pooled"),
        ("macro AUC", f"mean of per-video ROC AUCs over the {len(report['per_video_auc'])} videos whose "
                      "ground truth has both normal and anomalous frames"),
        ("AP", AP_DEFINITIONS[report["convention"]["ap"]]),
    ]
    if report.get("recognition") is not None:
        rows.append(("mAUC / mAP", report["recognition"]["definition"]))
    return rows


def _table_section(title: str, note: str, columns: list[str]) -> list[str]:
    """A ``## title`` heading, a note, and the header of a Markdown table."""
    return [f"## {title}", "", note, "", md_row(columns), md_row(["---"] * len(columns))]


def _recognition_section(rec: dict) -> list[str]:
    lines = _table_section("Recognition per class", "One-vs-rest over all test frames (AnomalyCLIP, Table 4 style).",
                           ["class", "AUC", "AP", "positive frames", "AUC on class + normal videos"])
    lines += [f"| {c['class']} | {fmt(c['auc'])} | {fmt(c['ap'])} | {c['num_positive_frames']:,} | "
              f"{fmt(c.get('subset_auc'))} |" for c in rec["classes"]]
    lines.append(f"| **mean** | **{fmt(rec['mauc'])}** (mAUC) | **{fmt(rec['map'])}** (mAP) | | "
                 f"**{fmt(rec.get('subset_mauc'))}** |")
    lines += ["", "Last column: Ueki 2024 Table II as vadpipe reads it -- each class's AUC over the frames of that "
                  "class's test videos plus every normal test video (the paper states no subset)."]
    if rec["classes_without_positives"]:
        lines += ["", f"No positive test frames (n/a, left out of the means): "
                      f"{', '.join(rec['classes_without_positives'])}."]
    if rec["multi_label_frames"]:
        lines += ["", f"{rec['multi_label_frames']:,} frames carry more than one class (overlapping "
                      "intervals); each counts as a positive for every class it carries."]
    return lines


def _videos_section(report: dict) -> list[str]:
    lines = _table_section(
        "Per-video AUC", "n/a: the video's ground truth is all normal (or all anomalous), so its AUC is undefined.",
        ["video", "label", "frames", "anomalous frames", "AUC"],
    )
    lines += [f"| {v['video_id']} | {v['label']} | {v['num_frames']:,} | {v['num_anomalous_frames']:,} | "
              f"{fmt(v['auc'])} |" for v in report["videos"]]
    return lines


def _figures_section(figures: dict) -> list[str]:
    lines = ["## Figures", ""]
    if figures["roc"]:
        lines += ["![ROC curve](roc.png) ![precision-recall curve](pr.png)", ""]
    shown, total = len(figures["timelines"]), figures["timelines_total"]
    if shown < total:
        lines.append(f"Score timelines: {shown} of {total} videos (capped; the first {shown} in manifest "
                     "order; raise `--max-timelines` for more).")
    else:
        lines.append(f"Score timelines: all {total} videos.")
    lines += ["", *(f"- [{Path(rel).stem}]({quote(rel)})" for rel in figures["timelines"])]
    return lines


def jsonable(x):
    """``x`` with NaN -> ``None`` and numpy scalars -> Python, ready for ``json.dumps``."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x


__all__ = ["format_markdown", "format_table", "jsonable", "protocol_line", "write_report"]
