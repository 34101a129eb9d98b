"""Frame-level evaluation: expand sampled scores to every frame, smooth, compare with GT.

No torch here: evaluate reads a scores store and a manifest only.

* Expansion (``expand``) from sampled frames to all ``num_frames`` frames:
  ``repeat`` (default) -- each frame takes the score of the last sample at or before it
  (frames before the first sample take the first), i.e. a sample's score is repeated over
  its stride / snippet, as the peers' ``np.repeat`` does within a video (at its end the
  peers' frame sets differ: :mod:`vadpipe.evaluate.conventions`);
  ``nearest`` -- the nearest sample (ties to the earlier one);
  ``linear`` -- linear interpolation between samples, constant outside.
* Smoothing: optional 1-D Gaussian (``scipy.ndimage.gaussian_filter1d``, ``sigma`` in
  frames, ``mode="nearest"``), applied per video after expansion.
* Both act along time only, so per-class probabilities ``[T, C]`` are expanded and smoothed
  column by column exactly like the anomaly score.
* Metrics: micro ROC AUC over all test frames pooled (the standard), macro AUC = mean of
  per-video AUCs over videos that contain both classes, and AP over all frames pooled
  (XD-Violence's headline), all computed by scikit-learn. AP is ``average_precision_score``
  (as VadCLIP) by default; XD-Violence's own authors (and RTFM, LAVAD) report the trapezoidal
  ``auc(recall, precision)`` instead, which ``--convention xdviodet`` / ``rtfm`` / ``lavad``
  give (:mod:`vadpipe.evaluate.conventions`): the two differ by up to 0.07 with tied scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vadpipe.errors import VadpipeError

EXPANSIONS = ("repeat", "nearest", "linear")


def expand(frame_index: np.ndarray, score: np.ndarray, num_frames: int, mode: str = "repeat") -> np.ndarray:
    """Scores of sampled frames ``[T]`` (or ``[T, C]``) -> ``float64[num_frames]`` (``[num_frames, C]``)."""
    frame_index = np.asarray(frame_index, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    if mode not in EXPANSIONS:
        raise VadpipeError(f"unknown expansion {mode!r} (choose from {', '.join(EXPANSIONS)})")
    if len(frame_index) == 0:
        raise VadpipeError("cannot expand scores of a video with no sampled frames")
    if len(frame_index) != len(score):
        raise VadpipeError(f"{len(frame_index)} sampled frames but {len(score)} scores")
    if np.any(np.diff(frame_index) <= 0):
        raise VadpipeError("sampled frame indices must be strictly increasing")
    outside = frame_index[(frame_index < 0) | (frame_index >= num_frames)]
    if outside.size:
        raise VadpipeError(f"sampled frame {int(outside[0])} lies outside a video of {num_frames} frames")
    frames = np.arange(num_frames)
    if mode == "linear":
        if score.ndim == 1:
            return np.interp(frames, frame_index, score)
        return np.stack([np.interp(frames, frame_index, col) for col in score.T], axis=1)  # (N C)
    after = np.searchsorted(frame_index, frames, side="right")  # samples at or before = after
    prev = np.clip(after - 1, 0, len(frame_index) - 1)
    if mode == "repeat":
        return score[prev]
    nxt = np.clip(after, 0, len(frame_index) - 1)
    take_next = (frame_index[nxt] - frames) < (frames - frame_index[prev])
    return score[np.where(take_next, nxt, prev)]


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0) with ``sigma`` frames; ``sigma=0`` returns ``x``."""
    if not sigma:
        return x
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(x, dtype=np.float64), sigma=sigma, axis=0, mode="nearest")


@dataclass
class VideoResult:
    video_id: str
    labels: np.ndarray  # uint8[N] the evaluated frames' ground truth
    scores: np.ndarray  # float64[N]
    label: str | None = None  # the video's manifest label (``normal`` or a class)
    class_targets: np.ndarray | None = None  # bool[N, C]: frame n shows class c
    class_probs: np.ndarray | None = None  # float64[N, C], expanded and smoothed
    first_frame: int = 0  # source frame of labels[0] (MNAD leaves out the first 4)
    clipped: int = 0  # anomalous frames of the intervals past the evaluated frames
    evidence: list | None = None  # heads scoring objects: the objects behind the peaks (evaluate.evidence)


@dataclass
class Metrics:
    micro_auc: float
    macro_auc: float
    ap: float
    num_videos: int
    num_frames: int
    num_anomalous_frames: int
    per_video_auc: dict = field(default_factory=dict)


def frame_metrics(results: list[VideoResult], ap: str = "sklearn") -> Metrics:
    """Micro AUC, macro AUC and AP (``ap``: ``sklearn`` or ``trapezoid``, see
    :func:`vadpipe.evaluate.conventions.pooled_ap`) over the evaluated frames (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    from vadpipe.evaluate.conventions import pooled_ap

    if not results:
        raise VadpipeError("no test videos to evaluate")
    y = np.concatenate([r.labels for r in results])
    s = np.concatenate([r.scores for r in results])
    if not np.isfinite(s).all():
        bad = [r.video_id for r in results if not np.isfinite(r.scores).all()]
        raise VadpipeError(f"non-finite scores in video(s): {', '.join(bad[:5])}")
    both = y.size and y.min() != y.max()
    micro = float(roc_auc_score(y, s)) if both else math.nan
    ap_value = pooled_ap(y, s, ap) if y.size and y.max() > 0 else math.nan
    per_video = {
        r.video_id: float(roc_auc_score(r.labels, r.scores))
        for r in results
        if r.labels.size and r.labels.min() != r.labels.max()
    }
    macro = float(np.mean(list(per_video.values()))) if per_video else math.nan
    return Metrics(micro, macro, ap_value, len(results), int(y.size), int(y.sum()), per_video)
