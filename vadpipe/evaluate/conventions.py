"""Evaluation conventions: the same scores, the number each peer's own code would print.

vadpipe's metric code agrees with the peers' to the last digit when both see the same frames
and ground truth; published numbers still differ because each peer builds its frame set, its
interval ends, its "AP" and its normalisation differently. A convention fixes those, as that
repository's code does (commits and lines: ``docs/evaluation.md``):

=============  ==========================  ===================  ===========  ==============  ============
convention     frames of a video (n)       interval end         AP           normalisation   recognition
=============  ==========================  ===================  ===========  ==============  ============
``vadpipe``    all n                       as the manifest      sklearn AP   --              multi-hot
``rtfm``       16*ceil(n/16), padded       UCF [s, e+1)         trapezoid    --              multi-hot
``vadclip``    16*floor(n/16)              [s, e)               sklearn AP   --              multi-hot
``xdviodet``   16*floor((n-1)/16)          [s, e)               trapezoid    --              multi-hot
``lavad``      all n                       UCF, XD [s, e+1)     trapezoid    --              multi-hot
``anomalyclip``  all n                     UCF, XD [s, e+1)     sklearn AP   --              video label
``mnad``       frames 4..n-1               as the manifest      sklearn AP   per-video       multi-hot
                                                                             min-max
=============  ==========================  ===================  ===========  ==============  ============

* **Frames.** Snippet features cover 16 frames each: RTFM's I3D features have ceil(n/16)
  snippets (the last one padded), VadCLIP's CLIP features floor(n/16), XDVioDet's
  floor((n - 1)/16) (it drops the last frame, flow needs a pair). Scores of frames past the
  last decoded one repeat the last score (``np.repeat`` of the last snippet); ground truth
  given as intervals is read on the padded frames too, a per-frame mask is padded with its
  last label (RTFM's ``make_gt_sh.py``). MNAD predicts frame t from frames t-4..t-1, so its
  first 4 frames have no score and are left out.
* **Unverified**: XD-Violence ends under ``lavad`` / ``anomalyclip`` and the XD-Violence video
  class under ``anomalyclip`` rest on annotation files those peers did not publish; RTFM's
  UCF-Crime frame count on its unpublished ``gt-ucf.npy``. They are vadpipe's reading of the
  code (``docs/evaluation.md``, "What could not be checked").
* **Interval ends** apply to the annotation files whose ends the peers read differently:
  UCF-Crime's ``Temporal_Anomaly_Annotation.txt`` and XD-Violence's ``annotations.txt``
  (``s e`` pairs, 0-based). VadCLIP and XDVioDet mark ``gt[s:e]``; RTFM ``range(s, e + 1)``;
  LAVAD and AnomalyCLIP ``s <= f <= e``. The manifest records which rule it was built with
  (``meta["end_offset"]``), so a run is moved to the convention's rule without the files.
  Other datasets' ground truth is per frame already and is used as is.
* **AP.** ``sklearn`` is ``average_precision_score`` (step-wise, VadCLIP, AnomalyCLIP's
  torchmetrics); ``trapezoid`` is ``auc(recall, precision)`` over ``precision_recall_curve``
  (RTFM, LAVAD, XDVioDet's ``test.py``). They agree to ~1e-5 on continuous scores and differ
  by up to 0.07 with tied scores. AUC is ``roc_auc_score`` (= ``auc(roc_curve)``) everywhere.
* **Normalisation.** MNAD min-max normalises each video's scores (over its evaluated frames)
  before pooling (:func:`minmax`: the normalised scores lie in [-1, 0]); a video whose
  scores are all equal gets 0 (MNAD would divide by zero).
* **Recognition** (mAUC / mAP, heads with class probabilities). ``multi-hot``: vadpipe's
  definition (:mod:`vadpipe.evaluate.recognition`). ``video label``: AnomalyCLIP's
  ``feature_dataset.py``: every anomalous frame carries its video's single label, and a
  class whose AUROC is exactly 0 is dropped from the mean (its code reads 0 as "no value").

Every convention scores sampled frames by repeating each sample's score until the next one
(``np.repeat``): ``--expansion`` other than ``repeat`` is vadpipe's own and only goes with
``--convention vadpipe``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vadpipe.errors import VadpipeError

SNIPPET = 16
TRAPEZOID, SKLEARN = "trapezoid", "sklearn"


@dataclass(frozen=True)
class Convention:
    name: str
    description: str  # what it reproduces, one line (the report says it)
    frames: str = "all"  # all | ceil16 | floor16 | floor16-minus1 | skip4
    end_offsets: dict[str, int] = field(default_factory=dict)  # dataset -> interval end = e + offset
    ap: str = SKLEARN  # sklearn | trapezoid
    minmax: bool = False  # per-video min-max normalisation of the scores
    video_label_classes: bool = False  # recognition: the video's label on every anomalous frame
    drop_zero_auc: bool = False  # recognition: a class with AUROC exactly 0 is left out of the mean

    def frame_range(self, n: int) -> tuple[int, int]:
        """The evaluated frames ``[first, last)`` of a video of ``n`` decoded frames."""
        if self.frames == "ceil16":
            return 0, SNIPPET * math.ceil(n / SNIPPET)
        if self.frames == "floor16":
            return 0, SNIPPET * (n // SNIPPET)
        if self.frames == "floor16-minus1":
            return 0, SNIPPET * (max(n - 1, 0) // SNIPPET)
        if self.frames == "skip4":
            return min(4, n), n
        return 0, n


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("vadpipe", "vadpipe: every decoded frame, the manifest's intervals, sklearn AP"),
    Convention("rtfm", "RTFM test_10crop.py + list/make_gt_{ucf,sh}.py: 16*ceil(n/16) frames (padding takes the "
               "last label / last score), UCF ends range(s, e+1), PR-AUC = auc(recall, precision)",
               frames="ceil16", end_offsets={"ucf_crime": 1}, ap=TRAPEZOID),
    Convention("vadclip", "VadCLIP src/{ucf,xd}_test.py + list/make_gt_{ucf,xd}.py: 16*floor(n/16) frames, "
               "gt[s:e], average_precision_score",
               frames="floor16", end_offsets={"ucf_crime": 0, "xd_violence": 0}),
    Convention("xdviodet", "XDVioDet test.py + list/make_gt.py (XD-Violence's authors): 16*floor((n-1)/16) frames, "
               "gt[s:e], AP = auc(recall, precision)",
               frames="floor16-minus1", end_offsets={"xd_violence": 0}, ap=TRAPEZOID),
    Convention("lavad", "LAVAD src/eval.py: every frame, s <= f <= e, np.repeat(scores, 16)[:n], "
               "PR-AUC = auc(recall, precision)",
               end_offsets={"ucf_crime": 1, "xd_violence": 1}, ap=TRAPEZOID),
    Convention("anomalyclip", "AnomalyCLIP anomaly_clip_module.py test_epoch_end + feature_dataset.py: every frame, "
               "s <= f <= e, the video's label on its anomalous frames, classes with AUROC 0 dropped",
               end_offsets={"ucf_crime": 1, "xd_violence": 1}, video_label_classes=True, drop_zero_auc=True),
    Convention("mnad", "MNAD Evaluate.py + utils.py (frame-prediction line): frames 4.. of each video, per-video "
               "min-max normalised scores", frames="skip4", minmax=True),
)}


def get_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise VadpipeError(f"unknown convention {name!r} (choose from {', '.join(CONVENTIONS)})")
    return CONVENTIONS[name]


def end_shift(convention: Convention, meta: dict, where: str) -> int:
    """Frames to add to every interval's end to move the manifest to the convention's rule."""
    dataset = (meta or {}).get("dataset")
    if dataset not in convention.end_offsets and (convention.name == "vadpipe" or dataset != "ucf_crime"):
        return 0
    have = manifest_end_offset(meta or {})
    if have is None:
        raise VadpipeError(
            f"{where}: this {dataset} manifest was built by vadpipe 0.2 with end=inclusive ([s-1, e)), which no "
            f"peer uses and --convention {convention.name} cannot convert; rebuild it with `vadpipe manifest`"
        )
    return convention.end_offsets[dataset] - have if dataset in convention.end_offsets else 0


def manifest_end_offset(meta: dict) -> int | None:
    """How the manifest's interval ends relate to the annotated ``e``: ``e + offset``."""
    if "end_offset" in meta:
        return int(meta["end_offset"])
    if meta.get("dataset") == "ucf_crime":  # vadpipe 0.2 manifests
        return 0 if meta.get("end", "exclusive") == "exclusive" else None
    return 0  # XD-Violence's annotations.txt: [s, e) as is


def pooled_ap(y: np.ndarray, s: np.ndarray, definition: str) -> float:
    """AP over pooled frames: ``average_precision_score`` or the trapezoidal PR area."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve

    if definition == TRAPEZOID:
        precision, recall, _ = precision_recall_curve(y, s)
        return float(auc(recall, precision))
    return float(average_precision_score(y, s))


def minmax(score: np.ndarray) -> np.ndarray:
    """MNAD's per-video normalisation (``utils.anomaly_score_list``) of an anomaly score.

    MNAD normalises a *normality* score (its PSNR) to ``(p - min) / (max - min)`` and takes the
    AUC against the inverted labels. Here ``p = -score`` and the result is negated back,
    ``-(p - min) / (max - min)`` in [-1, 0]: the order of ``(s - min) / (max - min)``, computed
    with MNAD's very float operations, so that scores tied across videos stay tied exactly as
    in its code (``1 - x`` would round some apart). All zeros when a video's scores are all
    equal (MNAD would divide by zero).
    """
    psnr = -np.asarray(score, dtype=np.float64)
    lo, hi = psnr.min(), psnr.max()
    return -((psnr - lo) / (hi - lo)) if hi > lo else np.zeros_like(psnr)


__all__ = ["CONVENTIONS", "Convention", "end_shift", "get_convention", "minmax", "pooled_ap"]
