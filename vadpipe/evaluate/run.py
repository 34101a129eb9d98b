"""``vadpipe evaluate``: a scores store + a manifest -> report.json, report.md and PNGs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError
from vadpipe.evaluate.conventions import end_shift, get_convention
from vadpipe.evaluate.evidence import peak_evidence
from vadpipe.evaluate.frames import convention_scores, ground_truth
from vadpipe.evaluate.metrics import VideoResult, expand, frame_metrics, smooth
from vadpipe.evaluate.protocol import headline_of, variant_of
from vadpipe.evaluate.recognition import class_subsets, match_classes, recognition_metrics
from vadpipe.evaluate.report import INTERVAL_CONVENTION, format_table, write_report
from vadpipe.scores import InMemoryScores, ScoresStore


@dataclass(frozen=True)
class EvalConfig:
    expansion: str = "repeat"
    sigma: float = 0.0  # Gaussian smoothing in frames; 0 = none
    split: str = "test"
    plots: bool = True  # write roc.png, pr.png and timelines/ with the report
    max_timelines: int = 50  # timeline PNGs for at most this many videos (manifest order)
    convention: str = "vadpipe"  # whose evaluation code to reproduce (vadpipe.evaluate.conventions)

    def __post_init__(self):
        if self.sigma < 0:
            raise VadpipeError(f"smoothing sigma must be >= 0 frames, got {self.sigma}")
        if self.max_timelines < 0:
            raise VadpipeError(f"max timelines must be >= 0, got {self.max_timelines}")
        get_convention(self.convention)
        if self.convention != "vadpipe" and self.expansion != "repeat":
            raise VadpipeError(
                f"--convention {self.convention} repeats each sample's score (np.repeat); "
                f"--expansion {self.expansion} goes only with --convention vadpipe"
            )


def collect_results(store: ScoresStore, manifest: Manifest, config: EvalConfig) -> list[VideoResult]:
    """The evaluated frames of every test video, in manifest order: scores expanded to the
    decoded frames, then ground truth and scores on the convention's frame set
    (:mod:`vadpipe.evaluate.frames`).

    Every test video of the manifest must have scores and frame-level ground truth; a
    decoded length that disagrees with the manifest's ``num_frames`` or a mask's length is
    an error naming the video, an interval past the evaluated frames is clipped and counted
    (``VideoResult.clipped``). When the scores carry class probabilities, each result also
    gets those of the manifest's anomaly classes and the per-frame class ground truth.
    """
    convention = get_convention(config.convention)
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
    shift = end_shift(convention, manifest.meta, manifest.source or "manifest")
    classes = manifest.anomaly_classes
    columns = match_classes(classes, store.class_names, str(store.path)) if store.class_names and classes else None
    results, no_probs = [], []
    for e in entries:
        s = store.read(e.video_id)
        if columns is not None and (s.class_probs is None or s.class_probs.shape[1] != len(store.class_names)):
            no_probs.append(e.video_id)
            continue
        truth = ground_truth(e, s.num_frames, convention, shift, classes if columns is not None else None)
        first, _ = convention.frame_range(s.num_frames)
        scores = convention_scores(_expanded(s.frame_index, s.score, s.num_frames, config), s.num_frames, convention)
        r = VideoResult(e.video_id, truth.labels, scores, label=e.label, first_frame=first, clipped=truth.clipped)
        if s.objects is not None:
            r.evidence = peak_evidence(s.objects, s.num_frames)
        if columns is not None:
            probs = _expanded(s.frame_index, s.class_probs[:, columns], s.num_frames, config)  # (n C)
            r.class_probs = convention_scores(probs, s.num_frames, convention, normalise=False)
            r.class_targets = truth.targets
        results.append(r)
    if no_probs:
        raise VadpipeError(
            f"{store.path}: the store names {len(store.class_names)} classes but {len(no_probs)} video(s) "
            f"lack class probabilities of that width: {', '.join(no_probs[:5])}"
        )
    return results


def _expanded(frame_index: np.ndarray, values: np.ndarray, num_frames: int, config: EvalConfig) -> np.ndarray:
    return smooth(expand(frame_index, values, num_frames, config.expansion), config.sigma)


def evaluate(scores: str | Path | dict, manifest: Manifest, out_dir: str | Path | None = None,
             config: EvalConfig = EvalConfig()) -> dict:
    """Compute the metrics; with ``out_dir``, write report.json, report.md and the PNGs there.

    ``scores``: a scores store written by ``vadpipe score`` (a path), or ``{video_id: Scores}``
    held in Python.

    The report's ``protocol.headline`` is the manifest's ``meta["protocol"]`` (set by the
    benchmark builders) or micro AUC for a manifest without one. Under a convention other
    than ``vadpipe`` the report also keeps, in ``vadpipe_convention``, the same metrics as
    vadpipe computes them, so the difference a convention makes is in every report.
    """
    store = _read_once(scores, manifest, config.split)
    where = manifest.source or "manifest"
    headline, headline_source = headline_of(manifest.meta, where)
    convention = get_convention(config.convention)
    results = collect_results(store, manifest, config)
    dataset = (manifest.meta or {}).get("dataset")
    interval_rule = INTERVAL_CONVENTION
    if dataset in convention.end_offsets:  # the convention's own end rule, not the manifest's
        inclusive = convention.end_offsets[dataset] == 1
        interval_rule = (f"{convention.name}'s rule for {dataset}: an annotated pair s e covers frames "
                         f"{'s..e (s <= f <= e)' if inclusive else 's..e-1 ([s, e))'}; "
                         f"the manifest's ends moved by {end_shift(convention, manifest.meta, where):+d}")
    values, metrics, recognition = _metrics(results, convention, manifest, store)
    baseline = None
    if convention.name != "vadpipe":
        base_values, _, _ = _metrics(collect_results(store, manifest, replace(config, convention="vadpipe")),
                                     get_convention("vadpipe"), manifest, store)
        baseline = {"headline": {m: base_values[m] for m in headline}, **base_values}
    head = store.meta.get("head", {})
    clipped = {r.video_id: r.clipped for r in results if r.clipped}
    report = {
        **values,
        "num_videos": metrics.num_videos,
        "num_frames": metrics.num_frames,
        "num_anomalous_frames": metrics.num_anomalous_frames,
        "headline": {m: values[m] for m in headline},
        "convention": {"name": convention.name, "description": convention.description, "ap": convention.ap},
        "vadpipe_convention": baseline,
        "protocol": {
            "headline": headline,
            "headline_source": headline_source,
            "variant": variant_of(manifest.meta),
            "convention": convention.name,
            "expansion": config.expansion,
            "smoothing_sigma": config.sigma,
            "split": config.split,
            "interval_convention": interval_rule,
            "manifest_meta": manifest.meta,
        },
        "recognition": recognition,
        "per_video_auc": metrics.per_video_auc,
        "clipped_gt_frames": {"total": int(sum(clipped.values())), "videos": clipped},
        "videos": [
            {
                "video_id": r.video_id,
                "label": r.label,
                "num_frames": int(r.labels.size),
                "num_anomalous_frames": int(r.labels.sum()),
                "clipped_gt_frames": r.clipped,
                "auc": metrics.per_video_auc.get(r.video_id),
                **({"evidence": [ev.as_dict() for ev in r.evidence]} if r.evidence is not None else {}),
            }
            for r in results
        ],
        "head": head.get("head"),
        "encoder": store.meta.get("encoder"),
        "scores": str(Path(store.path).resolve()) if isinstance(store.path, Path) else str(store.path),
        "manifest": manifest.source,
    }
    if out_dir is not None:
        write_report(out_dir, report, results, manifest, plots=config.plots, max_timelines=config.max_timelines)
    return report


def _read_once(scores, manifest: Manifest, split: str) -> InMemoryScores:
    """The scores of the split's videos, read from the store once (both conventions use them)."""
    if isinstance(scores, dict):
        return InMemoryScores(scores)
    store = ScoresStore(scores)
    have = set(store.video_ids())
    return InMemoryScores({v: store.read(v) for v in manifest.ids(split) if v in have}, store.meta, store.path)


def _metrics(results: list[VideoResult], convention, manifest: Manifest, store: ScoresStore):
    """``(metric values, Metrics, recognition dict or None)`` of the results under ``convention``."""
    metrics = frame_metrics(results, convention.ap)
    recognition = None
    if results[0].class_targets is not None:
        probs = np.concatenate([r.class_probs for r in results])
        if not np.isfinite(probs).all():
            bad = [r.video_id for r in results if not np.isfinite(r.class_probs).all()]
            raise VadpipeError(f"{store.path}: non-finite class probabilities in video(s): {', '.join(bad[:5])}")
        classes = manifest.anomaly_classes
        recognition = recognition_metrics(
            np.concatenate([r.class_targets for r in results]), probs, classes,
            drop_zero_auc=convention.drop_zero_auc,
            subsets=class_subsets([(r.label, r.class_targets) for r in results], classes),
        ).as_dict()
        if convention.video_label_classes or convention.drop_zero_auc:
            recognition["definition"] += (
                f"; under --convention {convention.name}: "
                + ("every anomalous frame carries its video's class (no overlaps)" if convention.video_label_classes else "")
                + (", a class whose AUC or AP is exactly 0 is left out of the mean" if convention.drop_zero_auc else "")
            )
    values = {
        "micro_auc": metrics.micro_auc,
        "macro_auc": metrics.macro_auc,
        "ap": metrics.ap,
        "mauc": recognition["mauc"] if recognition else None,
        "map": recognition["map"] if recognition else None,
    }
    return values, metrics, recognition


__all__ = ["EvalConfig", "collect_results", "evaluate", "format_table"]
