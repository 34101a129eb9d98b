"""``vadpipe evaluate --compare``: several report folders side by side.

Runs are comparable when they were evaluated on the same ground truth: the same recorded
variant (dataset, split, gt, end, cross_scene), the same evaluated split, the same
headline, the same test videos and the same frame / anomalous-frame counts. Anything else
is refused with a message naming the runs and what differs. Expansion and smoothing may
differ (they are part of a method's choices) and are shown as columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from vadpipe.errors import VadpipeError, output_dir, read_json
from vadpipe.evaluate.protocol import METRIC_LABELS, VARIANT_KEYS, describe_variant, format_value
from vadpipe.evaluate.report import fmt, jsonable, md_row, protocol_line, table_metrics


def load_report(path: str | Path) -> dict:
    """``report.json`` of a report folder (or the file itself)."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if path.is_dir() and (path / "zarr.json").exists():
        raise VadpipeError(
            f"{path}: is a scores store, not a report folder; evaluate it first "
            "(vadpipe evaluate SCORES --manifest MANIFEST -o REPORT_DIR) and compare the report folders"
        )
    report = read_json(file, "report not found (expected a folder written by `vadpipe evaluate`)")
    if not isinstance(report, dict) or "protocol" not in report or "videos" not in report:
        raise VadpipeError(f"{file}: not a vadpipe evaluation report (re-run `vadpipe evaluate` to refresh it)")
    return report


def _run_names(paths: list[Path]) -> list[str]:
    names = [p.name if p.name != "report.json" else p.parent.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _differences(a: dict, b: dict) -> list[str]:
    from vadpipe.evaluate.conventions import CONVENTIONS

    pa, pb = a["protocol"], b["protocol"]
    out = []
    conv_a, conv_b = pa.get("convention", "vadpipe"), pb.get("convention", "vadpipe")
    # a convention with its own end rule for the dataset reads both manifests the same way
    own_end = conv_a == conv_b and conv_a in CONVENTIONS and \
        pa["variant"].get("dataset") in CONVENTIONS[conv_a].end_offsets
    for key in VARIANT_KEYS:
        if key == "end" and own_end:
            continue
        va, vb = pa["variant"].get(key, "not recorded"), pb["variant"].get(key, "not recorded")
        if va != vb:
            label = "ground truth" if key in ("gt", "end") else key
            out.append(f"{label} ({key}={format_value(va)} vs {format_value(vb)})")
    if conv_a != conv_b:
        out.append(f"evaluation convention ({conv_a} vs {conv_b}: another frame set, end rule or AP)")
    if pa["split"] != pb["split"]:
        out.append(f"evaluated split ({pa['split']} vs {pb['split']})")
    if pa["headline"] != pb["headline"]:
        out.append(f"headline ({','.join(pa['headline'])} vs {','.join(pb['headline'])})")
    ids_a, ids_b = [v["video_id"] for v in a["videos"]], [v["video_id"] for v in b["videos"]]
    if set(ids_a) != set(ids_b):
        only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
        out.append(f"test videos ({len(only_a)} only in the first, e.g. {', '.join(only_a[:3]) or '-'}; "
                   f"{len(only_b)} only in the second, e.g. {', '.join(only_b[:3]) or '-'})")
    else:
        for key in ("num_frames", "num_anomalous_frames"):
            if a[key] != b[key]:
                out.append(f"ground truth ({key} {a[key]} vs {b[key]})")
    return out


def compare_reports(paths: list[str | Path], out_dir: str | Path | None = None) -> dict:
    """Check that the runs are comparable and build the comparison; write it to ``out_dir``.

    Writes ``out_dir/report.md`` (the tables) and ``out_dir/comparison.json``.
    """
    if len(paths) < 2:
        raise VadpipeError("--compare needs at least two report folders")
    paths = [Path(p) for p in paths]
    reports = [load_report(p) for p in paths]
    names = _run_names(paths)
    for name, report in zip(names[1:], reports[1:]):
        diff = _differences(reports[0], report)
        if diff:
            raise VadpipeError(
                f"cannot compare {names[0]} and {name}: different {'; '.join(diff)}"
            )
    with_recognition = any(r.get("recognition") for r in reports)
    metrics = table_metrics({**reports[0], "recognition": {} if with_recognition else None})
    comparison = {
        "protocol": {**{k: reports[0]["protocol"][k] for k in ("headline", "headline_source", "variant", "split")},
                     "convention": reports[0]["protocol"].get("convention", "vadpipe")},
        "metrics": metrics,
        "runs": [
            {
                "name": name,
                "report": str(path),
                "head": r.get("head"),
                "encoder": r.get("encoder"),
                "expansion": r["protocol"]["expansion"],
                "smoothing_sigma": r["protocol"]["smoothing_sigma"],
                **{m: r.get(m) for m in metrics},
                "classes": {c["class"]: c for c in (r.get("recognition") or {}).get("classes", [])},
            }
            for name, path, r in zip(names, paths, reports)
        ],
        "num_videos": reports[0]["num_videos"],
        "num_frames": reports[0]["num_frames"],
    }
    if out_dir is not None:
        out = output_dir(out_dir)
        (out / "comparison.json").write_text(json.dumps(jsonable(comparison), indent=2) + "\n")
        (out / "report.md").write_text(format_comparison(comparison, markdown=True))
    return comparison


def format_comparison(comparison: dict, markdown: bool = False) -> str:
    """The side-by-side table (headline metrics first; best value of each metric in bold)."""
    p, metrics, runs = comparison["protocol"], comparison["metrics"], comparison["runs"]
    first = {"protocol": {**p, "expansion": "per run", "smoothing_sigma": "per run"}}
    lines = [protocol_line(first)]
    if markdown:
        lines = ["# Comparison", "", f"- ground truth: {describe_variant(p['variant'])}",
                 f"- evaluated: {p['split']} split, {comparison['num_videos']} videos, "
                 f"{comparison['num_frames']:,} frames",
                 f"- headline: **{', '.join(METRIC_LABELS[m] for m in p['headline'])}** ({p['headline_source']})",
                 "", "## Metrics", ""]
    header = ["run", "head", "encoder", "expansion", "sigma", *(METRIC_LABELS[m] for m in metrics)]
    best = {m: max((r[m] for r in runs if _finite(r[m])), default=None) for m in metrics}
    lines += [md_row(header), md_row(["---"] * len(header))]
    for r in runs:
        cells = [r["name"], str(r["head"]), str(r["encoder"]), r["expansion"], str(r["smoothing_sigma"])]
        cells += [f"**{fmt(r[m])}**" if best[m] is not None and r[m] == best[m] else fmt(r[m]) for m in metrics]
        lines.append(md_row(cells))
    classes = list(dict.fromkeys(c for r in runs for c in r["classes"]))
    if classes:
        lines += ["", "## Recognition per class (AUC / AP)" if markdown else "per class (AUC / AP):", ""]
        lines += [md_row(["class", *(r["name"] for r in runs)]), md_row(["---"] * (len(runs) + 1))]
        for c in classes:
            cells = [f"{fmt(r['classes'][c]['auc'])} / {fmt(r['classes'][c]['ap'])}" if c in r["classes"] else "n/a"
                     for r in runs]
            lines.append(md_row([c, *cells]))
    return "\n".join(lines) + "\n"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x
