"""The evaluated frames of one video under a convention: ground truth, class targets, scores.

A video of ``n`` decoded frames is evaluated on the frames ``[first, last)`` its convention
gives (:meth:`Convention.frame_range`), which may run past ``n`` (RTFM's padded snippets):

* **labels** -- intervals (their ends moved by the convention's rule, ``shift``) are read on
  ``[0, last)``; anomalous frames they mark at or past ``last`` are *clipped* and counted
  (real UCF-Crime / XD-Violence annotations may end after the decoded video; the peers clip
  them too, so one such video does not refuse a whole benchmark). A per-frame mask (or a
  normal video) is used as is, padded with its last label past ``n``.
* **class targets** (recognition) -- multi-hot from the intervals' classes, or the video's
  label on every anomalous frame (AnomalyCLIP).
* **scores** -- expanded to the ``n`` frames, smoothed, then cut to ``[first, last)``; frames
  past ``n`` repeat the last score. Per-video min-max normalisation where the convention has it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vadpipe.data_manifests.schema import VideoEntry
from vadpipe.evaluate.conventions import CONVENTIONS, Convention, minmax


@dataclass
class FrameTruth:
    labels: np.ndarray  # uint8[L] ground truth of the evaluated frames
    targets: np.ndarray | None  # bool[L, C] class targets (recognition), or None
    clipped: int  # anomalous frames the intervals put at or past the last evaluated frame


def ground_truth(entry: VideoEntry, num_frames: int, convention: Convention = CONVENTIONS["vadpipe"],
                 shift: int = 0, classes: list[str] | None = None) -> FrameTruth:
    """Labels (and class targets) of ``entry``'s evaluated frames; see the module docstring."""
    n = entry.resolve_length(num_frames)  # the manifest's num_frames must agree with the decoded length
    first, last = convention.frame_range(n)
    column = {c: i for i, c in enumerate(classes or ())}
    if entry.mask_path is not None or not entry.intervals:
        labels = take(entry.frame_labels(n), first, last)  # a mask's length is checked there
        targets = None
        if classes is not None:
            targets = np.zeros((len(labels), len(classes)), dtype=bool)
            if not entry.is_normal:
                targets[labels > 0, column[entry.label]] = True
        return FrameTruth(labels, targets, 0)
    spans = [(iv.start, iv.end + shift, iv.label or entry.label) for iv in entry.intervals]
    spans = [(a, b, c) for a, b, c in spans if b > a]
    labels = np.zeros(last, dtype=np.uint8)
    beyond = np.zeros(max([b for _, b, _ in spans] + [last]) - last, dtype=bool)  # frames past the end
    for a, b, _ in spans:
        labels[a:b] = 1
        beyond[max(a - last, 0) : max(b - last, 0)] = True
    labels = labels[first:]
    targets = None
    if classes is not None:
        targets = np.zeros((last, len(classes)), dtype=bool)
        for a, b, label in spans:
            targets[a:b, column[label]] = True
        targets = targets[first:]
        if convention.video_label_classes:
            targets[:] = False
            targets[labels > 0, column[entry.label]] = True
    return FrameTruth(labels, targets, int(beyond.sum()))


def take(values: np.ndarray, first: int, last: int) -> np.ndarray:
    """``values[first:last]`` along time, the last row repeated past the end."""
    if last <= len(values):
        return values[first:last]
    pad = np.repeat(values[-1:], last - len(values), axis=0)
    return np.concatenate([values, pad])[first:last]


def convention_scores(expanded: np.ndarray, num_frames: int, convention: Convention,
                      normalise: bool = True) -> np.ndarray:
    """Scores (``[n]`` or ``[n, C]``, already expanded and smoothed) on the evaluated frames;
    ``normalise``: the convention's per-video normalisation (anomaly scores, not class probabilities)."""
    first, last = convention.frame_range(num_frames)
    scores = take(expanded, first, last)
    if normalise and convention.minmax and len(scores):
        scores = minmax(scores)
    return scores
