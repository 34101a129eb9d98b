"""``vadpipe evaluate``: a scores store + a manifest -> report.json (and a printed table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError
from vadpipe.evaluate.metrics import VideoResult, expand, frame_metrics, smooth
from vadpipe.scores import ScoresStore


@dataclass(frozen=True)
class EvalConfig:
    expansion: str = "repeat"
    sigma: float = 0.0  # Gaussian smoothing in frames; 0 = none
    split: str = "test"


def collect_results(store: ScoresStore, manifest: Manifest, config: EvalConfig) -> list[VideoResult]:
    """Expanded per-frame scores and labels of every evaluated video, in manifest order.

    Every test video of the manifest must have scores and frame-level ground truth whose
    length matches the decoded video; a mismatch is an error naming the videos.
    """
    entries = manifest.select(split=config.split)
    if not entries:
        raise VadpipeError(f"{manifest.source}: no {config.split} videos to evaluate")
    no_gt = [e.video_id for e in entries if not e.has_frame_gt]
    if no_gt:
        raise VadpipeError(
            f"{manifest.source}: {len(no_gt)} {config.split} video(s) have no frame-level ground "
            f"truth (intervals or mask): {', '.join(no_gt[:5])}"
        )
    have = set(store.video_ids())
    missing = [e.video_id for e in entries if e.video_id not in have]
    if missing:
        raise VadpipeError(
            f"{store.path}: no scores for {len(missing)} of {len(entries)} {config.split} videos: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    results = []
    for e in entries:
        s = store.read(e.video_id)
        labels = e.frame_labels(s.num_frames)
        scores = smooth(expand(s.frame_index, s.score, s.num_frames, config.expansion), config.sigma)
        results.append(VideoResult(e.video_id, labels, scores))
    return results


def evaluate(scores_path: str | Path, manifest: Manifest, out_dir: str | Path | None = None,
             config: EvalConfig = EvalConfig()) -> dict:
    """Compute the metrics; write ``out_dir/report.json`` when ``out_dir`` is given."""
    store = ScoresStore(scores_path)
    results = collect_results(store, manifest, config)
    metrics = frame_metrics(results)
    head = store.meta.get("head", {})
    report = {
        **{k: v for k, v in metrics.as_dict().items() if k != "per_video_auc"},
        "protocol": {
            "expansion": config.expansion,
            "smoothing_sigma": config.sigma,
            "split": config.split,
            "interval_convention": "0-based, end exclusive",
            "manifest_meta": manifest.meta,
        },
        "per_video_auc": metrics.per_video_auc,
        "head": head.get("head"),
        "encoder": store.meta.get("encoder"),
        "scores": str(Path(scores_path).resolve()),
        "manifest": manifest.source,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    return report


def format_table(report: dict) -> str:
    """A short Markdown table of the headline metrics."""
    def f(x):
        return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"

    rows = [
        "| head | encoder | micro AUC | macro AUC | AP | videos | frames |",
        "|---|---|---|---|---|---|---|",
        f"| {report.get('head')} | {report.get('encoder')} | {f(report['micro_auc'])} | "
        f"{f(report['macro_auc'])} | {f(report['ap'])} | {report['num_videos']} | {report['num_frames']} |",
    ]
    return "\n".join(rows)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x
