"""``vadpipe evaluate``: a scores store + a manifest -> report.json, report.md and PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError
from vadpipe.evaluate.metrics import VideoResult, expand, frame_metrics, smooth
from vadpipe.evaluate.protocol import headline_of, variant_of
from vadpipe.evaluate.recognition import frame_class_targets, match_classes, recognition_metrics
from vadpipe.evaluate.report import INTERVAL_CONVENTION, format_table, write_report
from vadpipe.scores import ScoresStore


@dataclass(frozen=True)
class EvalConfig:
    expansion: str = "repeat"
    sigma: float = 0.0  # Gaussian smoothing in frames; 0 = none
    split: str = "test"
    plots: bool = True  # write roc.png, pr.png and timelines/ with the report
    max_timelines: int = 50  # timeline PNGs for at most this many videos (manifest order)

    def __post_init__(self):
        if self.sigma < 0:
            raise VadpipeError(f"smoothing sigma must be >= 0 frames, got {self.sigma}")
        if self.max_timelines < 0:
            raise VadpipeError(f"max timelines must be >= 0, got {self.max_timelines}")


def collect_results(store: ScoresStore, manifest: Manifest, config: EvalConfig) -> list[VideoResult]:
    """Expanded per-frame scores and labels of every evaluated video, in manifest order.

    Every test video of the manifest must have scores and frame-level ground truth whose
    length matches the decoded video; a mismatch is an error naming the videos. When the
    scores carry class probabilities, each result also gets the expanded probabilities of
    the manifest's anomaly classes and the per-frame multi-hot class ground truth.
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
    classes = manifest.anomaly_classes
    columns = match_classes(classes, store.class_names, str(store.path)) if store.class_names and classes else None
    results, no_probs = [], []
    for e in entries:
        s = store.read(e.video_id)
        labels = e.frame_labels(s.num_frames)
        r = VideoResult(e.video_id, labels, _expanded(s.frame_index, s.score, s.num_frames, config), label=e.label)
        if columns is not None:
            if s.class_probs is None or s.class_probs.shape[1] != len(store.class_names):
                no_probs.append(e.video_id)
                continue
            r.class_probs = _expanded(s.frame_index, s.class_probs[:, columns], s.num_frames, config)  # (N C)
            r.class_targets = frame_class_targets(e, s.num_frames, classes)  # (N C)
        results.append(r)
    if no_probs:
        raise VadpipeError(
            f"{store.path}: the store names {len(store.class_names)} classes but {len(no_probs)} video(s) "
            f"lack class probabilities of that width: {', '.join(no_probs[:5])}"
        )
    return results


def _expanded(frame_index: np.ndarray, values: np.ndarray, num_frames: int, config: EvalConfig) -> np.ndarray:
    return smooth(expand(frame_index, values, num_frames, config.expansion), config.sigma)


def evaluate(scores_path: str | Path, manifest: Manifest, out_dir: str | Path | None = None,
             config: EvalConfig = EvalConfig()) -> dict:
    """Compute the metrics; with ``out_dir``, write report.json, report.md and the PNGs there.

    The report's ``protocol.headline`` is the manifest's ``meta["protocol"]`` (set by the
    benchmark builders) or micro AUC for a manifest without one.
    """
    store = ScoresStore(scores_path)
    where = manifest.source or "manifest"
    headline, headline_source = headline_of(manifest.meta, where)
    results = collect_results(store, manifest, config)
    metrics = frame_metrics(results)
    recognition = None
    if results[0].class_targets is not None:
        probs = np.concatenate([r.class_probs for r in results])
        if not np.isfinite(probs).all():
            bad = [r.video_id for r in results if not np.isfinite(r.class_probs).all()]
            raise VadpipeError(f"{store.path}: non-finite class probabilities in video(s): {', '.join(bad[:5])}")
        recognition = recognition_metrics(
            np.concatenate([r.class_targets for r in results]), probs, manifest.anomaly_classes
        ).as_dict()
    values = {
        "micro_auc": metrics.micro_auc,
        "macro_auc": metrics.macro_auc,
        "ap": metrics.ap,
        "mauc": recognition["mauc"] if recognition else None,
        "map": recognition["map"] if recognition else None,
    }
    head = store.meta.get("head", {})
    report = {
        **values,
        "num_videos": metrics.num_videos,
        "num_frames": metrics.num_frames,
        "num_anomalous_frames": metrics.num_anomalous_frames,
        "headline": {m: values[m] for m in headline},
        "protocol": {
            "headline": headline,
            "headline_source": headline_source,
            "variant": variant_of(manifest.meta),
            "expansion": config.expansion,
            "smoothing_sigma": config.sigma,
            "split": config.split,
            "interval_convention": INTERVAL_CONVENTION,
            "manifest_meta": manifest.meta,
        },
        "recognition": recognition,
        "per_video_auc": metrics.per_video_auc,
        "videos": [
            {
                "video_id": r.video_id,
                "label": r.label,
                "num_frames": int(r.labels.size),
                "num_anomalous_frames": int(r.labels.sum()),
                "auc": metrics.per_video_auc.get(r.video_id),
            }
            for r in results
        ],
        "head": head.get("head"),
        "encoder": store.meta.get("encoder"),
        "scores": str(Path(scores_path).resolve()),
        "manifest": manifest.source,
    }
    if out_dir is not None:
        write_report(out_dir, report, results, manifest, plots=config.plots, max_timelines=config.max_timelines)
    return report


__all__ = ["EvalConfig", "collect_results", "evaluate", "format_table"]
