"""Recognition metrics for heads that output classes: per-class AUC / AP, mAUC / mAP.

Definition implemented -- AnomalyCLIP (Zanella et al. 2024, Sec. 4.1 "Performance
Metrics", Tables 4-6). Its released code (torchmetrics ``MulticlassAUROC`` /
``AveragePrecision`` with ``average=None``, Normal column dropped, ``nanmean``) differs in two
ways, which ``--convention anomalyclip`` reproduces: every anomalous frame carries its video's
single class, and a class whose AUC (AP) is exactly 0 is left out of the mean. vadpipe's own:

* For each **anomaly class** ``c`` of the manifest, over **all test frames pooled** (every
  test video, normal videos included): positives = frames whose ground truth is ``c``;
  negatives = every other frame (normal frames *and* frames of the other classes).
* The frame's score for ``c`` is the head's ``class_probs[:, c]`` as stored, expanded to
  every frame and smoothed exactly like the anomaly score. (AnomalyCLIP's code and
  vadpipe's heads store the joint ``p(c | anomaly) * p(anomaly)``; evaluate does not
  re-weight.)
* ``AUC_c = roc_auc_score``, ``AP_c = average_precision_score`` (scikit-learn, binary);
  mAUC / mAP = unweighted mean over the anomaly classes that have at least one positive
  and one negative test frame. Classes with no positive test frame are listed in the
  table as n/a and left out of the means (as AnomalyCLIP's ``nanmean``). The Normal class
  is never averaged in.

Multi-label frames: XD-Violence intervals of different classes may overlap. vadpipe's
``VideoEntry.frame_classes`` keeps one class per frame (the later interval wins); here the
ground truth is a per-frame **multi-hot** built from ``entry.intervals`` directly, so a
frame under both a Fighting and a Riot interval is a positive for both classes (and a
negative for neither). The report counts such frames.

Per-class AUC of Ueki (2024, Table II, "frame-level AUC for each anomaly on UCF-Crime") --
the paper states neither the texts nor the frames of each AUC; vadpipe reads it as: for each
anomaly class ``c``, the frames of the test videos of class ``c`` (label ``c``, or any frame of
``c``) plus every normal test video; positives = frames of ``c``; score =
``class_probs[:, c]`` (for ``zeroshot`` in ``cosine`` mode, the frame's cosine to the class's
text). Reported beside the one-vs-rest numbers as ``subset_auc`` per class and their mean
``subset_mauc``; the other classes' videos are left out, which is what makes it a detection
AUC for one class rather than a recognition AUC.

Community variants not implemented (they give different numbers under the same names):
scikit-learn's ``roc_auc_score(multi_class="ovr")`` (needs rows summing to 1 and averages
the Normal class in); frequency-weighted means (``average="weighted"``); restricting the
negatives to anomalous videos; and VadCLIP's XD-Violence "fine-grained mAP", a temporal
*detection* mAP averaged over tIoU 0.1:0.5 -- a different metric altogether.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from vadpipe.data_manifests.schema import VideoEntry
from vadpipe.errors import VadpipeError

DEFINITION = (
    "AnomalyCLIP (Zanella et al. 2024, Sec. 4.1): per anomaly class, one-vs-rest over all "
    "test frames pooled (positives: frames of that class; negatives: all others, normal and "
    "other classes), score = class_probs[:, c] expanded/smoothed like the anomaly score; "
    "mAUC/mAP = unweighted mean over classes with positive test frames; overlapping classes "
    "make a frame positive for each"
)
SUBSET_DEFINITION = (
    "Ueki 2024 Table II as vadpipe reads it (the paper states no subset): per anomaly class, "
    "the frames of that class's test videos plus every normal test video; positives = frames "
    "of the class; score = class_probs[:, c]; subset_mauc = unweighted mean over defined classes"
)


@dataclass
class ClassResult:
    name: str
    auc: float
    ap: float
    num_positive_frames: int
    subset_auc: float = math.nan  # Ueki Table II reading: this class's videos + the normal ones

    def as_dict(self) -> dict:
        return {"class": self.name, "auc": self.auc, "ap": self.ap, "num_positive_frames": self.num_positive_frames,
                "subset_auc": self.subset_auc}


@dataclass
class RecognitionMetrics:
    classes: list[ClassResult]
    mauc: float
    map: float
    num_frames: int
    multi_label_frames: int  # frames positive for more than one class
    subset_mauc: float = math.nan

    def as_dict(self) -> dict:
        return {
            "mauc": self.mauc,
            "map": self.map,
            "subset_mauc": self.subset_mauc,
            "subset_definition": SUBSET_DEFINITION,
            "classes": [c.as_dict() for c in self.classes],
            "classes_without_positives": [c.name for c in self.classes if c.num_positive_frames == 0],
            "num_frames": self.num_frames,
            "multi_label_frames": self.multi_label_frames,
            "definition": DEFINITION,
        }


def _class_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_classes(manifest_classes: list[str], score_classes: tuple[str, ...], where: str) -> list[int]:
    """Column of each manifest class in the scores' ``class_probs``, matched by name.

    Names match ignoring case, spaces, ``_`` and ``-`` (``Car accident`` = ``CarAccident``).
    A manifest class the scores lack is an error naming it; extra score classes are ignored.
    """
    columns: dict[str, int] = {}
    for i, name in enumerate(score_classes):
        key = _class_key(name)
        if key in columns:
            raise VadpipeError(
                f"{where}: score classes {score_classes[columns[key]]!r} and {name!r} are the same "
                "name once case and separators are ignored"
            )
        columns[key] = i
    missing = [c for c in manifest_classes if _class_key(c) not in columns]
    if missing:
        raise VadpipeError(
            f"{where}: no class probabilities for manifest class(es) {', '.join(missing)} "
            f"(the scores have: {', '.join(score_classes)})"
        )
    return [columns[_class_key(c)] for c in manifest_classes]


def frame_class_targets(entry: VideoEntry, num_frames: int, classes: list[str]) -> np.ndarray:
    """Per-frame multi-hot ground truth ``bool[num_frames, len(classes)]``.

    Frames of an interval are positive for the interval's class (the video's label when the
    interval has none); frames of a mask are positive for the video's label. Overlapping
    intervals of different classes make a frame positive for each (unlike
    ``VideoEntry.frame_classes``, which keeps one).
    """
    from vadpipe.evaluate.frames import ground_truth

    return ground_truth(entry, num_frames, classes=classes).targets


def class_subsets(videos: list[tuple[str | None, np.ndarray]], classes: list[str]) -> np.ndarray:
    """``bool[N, C]``: whether each pooled frame is in class ``c``'s Ueki subset -- its video is
    normal, labelled ``c``, or has a frame of ``c``. ``videos``: (label, targets ``bool[n, C]``) in
    the pooled order."""
    keys = [_class_key(c) for c in classes]
    rows = []
    for label, targets in videos:
        normal = label is None or str(label).lower() == "normal"
        member = np.array([normal or _class_key(str(label)) == k or bool(targets[:, c].any())
                           for c, k in enumerate(keys)], dtype=bool)
        rows.append(np.broadcast_to(member, targets.shape))
    return np.concatenate(rows) if rows else np.zeros((0, len(classes)), bool)


def recognition_metrics(targets: np.ndarray, probs: np.ndarray, classes: list[str],
                        drop_zero_auc: bool = False, subsets: np.ndarray | None = None) -> RecognitionMetrics:
    """Per-class one-vs-rest AUC and AP over pooled frames, and their means (scikit-learn).

    ``targets``: ``bool[N, C]`` multi-hot ground truth; ``probs``: ``float[N, C]`` scores.
    ``drop_zero_auc``: as AnomalyCLIP's code, a class whose AUC (or AP) is exactly 0 is left
    out of the mean (it reads 0 as "no value"); vadpipe averages a real 0 in. ``subsets``
    (``bool[N, C]``, :func:`class_subsets`): the frames of each class's Ueki AUC.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    targets = np.asarray(targets, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    if targets.shape != probs.shape or targets.shape[1] != len(classes):
        raise VadpipeError(
            f"class targets {targets.shape} and probabilities {probs.shape} do not match {len(classes)} classes"
        )
    per_class = []
    for c, name in enumerate(classes):
        y, p = targets[:, c], probs[:, c]
        positives = int(y.sum())
        defined = 0 < positives < len(y)
        subset_auc = math.nan
        if subsets is not None:
            ys, ps = y[subsets[:, c]], p[subsets[:, c]]
            subset_auc = float(roc_auc_score(ys, ps)) if 0 < ys.sum() < len(ys) else math.nan
        per_class.append(ClassResult(
            name,
            float(roc_auc_score(y, p)) if defined else math.nan,
            float(average_precision_score(y, p)) if defined else math.nan,
            positives,
            subset_auc,
        ))
    aucs = [r.auc for r in per_class if not math.isnan(r.auc) and not (drop_zero_auc and r.auc == 0)]
    aps = [r.ap for r in per_class if not math.isnan(r.ap) and not (drop_zero_auc and r.ap == 0)]
    subset = [r.subset_auc for r in per_class if not math.isnan(r.subset_auc)]
    return RecognitionMetrics(
        per_class,
        float(np.mean(aucs)) if aucs else math.nan,
        float(np.mean(aps)) if aps else math.nan,
        int(len(targets)),
        int((targets.sum(axis=1) > 1).sum()),
        float(np.mean(subset)) if subset else math.nan,
    )
