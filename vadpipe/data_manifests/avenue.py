"""CUHK Avenue (Lu et al., ICCV 2013): 16 train / 21 test videos, two ground-truth versions.

Files read (in one folder):

* ``avenue_frame_labels_from_masks.json`` — derived from the 21 official pixel masks:
  ``{"videos": {"01": {"num_frames": 1439, "anomalous_frames_1based_inclusive":
  [[a, b], ...]}, ...}}`` (15,324 frames, 3,712 anomalous). Always needed: it is the
  only source of the per-video frame counts.
* ``frame_labels_avenue.npy`` — the frame-prediction line of work's labels (Liu et al.
  CVPR'18), the 21 test videos concatenated in order 01..21 (15,324 values, 3,867
  anomalous). Needed for ``gt="frame-prediction"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vadpipe.data_manifests._annotations import (
    ANOMALY,
    annotation_file,
    annotation_folder,
    benchmark_meta,
    check_within,
    count_frames,
    one_based_inclusive,
    pick_path,
    sort_intervals,
    videos_root,
)
from vadpipe.data_manifests.schema import (
    NORMAL,
    Interval,
    Manifest,
    VideoEntry,
    intervals_from_labels,
    load_mask,
)
from vadpipe.errors import VadpipeError

GT_VARIANTS = ("frame-prediction", "masks")
NUM_TRAIN = 16
MASKS_JSON = "avenue_frame_labels_from_masks.json"
FRAME_PREDICTION_NPY = "frame_labels_avenue.npy"
_SOURCE_CONVENTION = {
    "frame-prediction": f"{FRAME_PREDICTION_NPY}: one 0/1 value per frame, 0-based, split by "
    f"the num_frames of {MASKS_JSON}",
    "masks": f"{MASKS_JSON}: 1-based inclusive [a, b] -> [a-1, b)",
}


def build_avenue(
    annotations: str | Path, videos: str | Path, gt: str = "frame-prediction"
) -> Manifest:
    """Avenue manifest; ``gt`` picks the test ground truth (recorded in ``meta["gt"]``).

    * ``gt="frame-prediction"`` (default, what most frame-AUC papers report):
      ``frame_labels_avenue.npy`` cut into videos 01..21 by the json's ``num_frames``;
      runs of ones become ``[start, end)`` intervals (0-based).
    * ``gt="masks"``: the labels of the official pixel masks (a frame is anomalous when
      any mask pixel is set), from the json's 1-based inclusive ``[a, b]`` -> ``[a-1, b)``.
      The two versions differ on 441 frames in 15 videos.

    Ids are ``train_NN`` (01..16, all ``normal``, ``num_frames`` unknown unless they are
    frame folders) and ``test_NN`` (01..21, ``num_frames`` from the json; ``anomaly``
    when the chosen ground truth marks a frame, else ``normal``).

    Layout (the official download): ``<videos>/training_videos/NN.avi`` and
    ``<videos>/testing_videos/NN.avi``; when only the frame-folder layout of the
    frame-prediction code exists, ``<videos>/training/frames/NN`` / ``testing/frames/NN``.
    """
    if gt not in GT_VARIANTS:
        raise VadpipeError(f"avenue: gt must be one of {', '.join(GT_VARIANTS)}, got {gt!r}")
    folder = annotation_folder(annotations, "avenue")
    root = videos_root(videos)
    videos_json = _read_masks_json(annotation_file(folder, MASKS_JSON))
    if gt == "frame-prediction":
        test_gt = _split_frame_labels(annotation_file(folder, FRAME_PREDICTION_NPY), videos_json)
    else:
        test_gt = {nn: intervals for nn, (_, intervals) in videos_json.items()}

    entries = []
    for nn in (f"{i:02d}" for i in range(1, NUM_TRAIN + 1)):
        path = pick_path(root, f"training_videos/{nn}.avi", f"training/frames/{nn}")
        entries.append(
            VideoEntry(
                video_id=f"train_{nn}", path=str(path), split="train", num_frames=count_frames(path)
            )
        )
    for nn, (num_frames, _) in videos_json.items():
        path = pick_path(root, f"testing_videos/{nn}.avi", f"testing/frames/{nn}")
        entries.append(
            VideoEntry(
                video_id=f"test_{nn}",
                path=str(path),
                split="test",
                label=ANOMALY if test_gt[nn] else NORMAL,
                intervals=test_gt[nn],
                num_frames=num_frames,
            )
        )
    meta = benchmark_meta(
        "avenue",
        folder,
        root,
        protocol=["micro_auc", "macro_auc"],
        source_convention=_SOURCE_CONVENTION[gt],
        split="official",
        gt=gt,
    )
    return Manifest(entries, meta=meta)


def _read_masks_json(path: Path) -> dict[str, tuple[int, tuple[Interval, ...]]]:
    """``{"01": (num_frames, intervals), ...}`` sorted by video number."""
    try:
        videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
        items = sorted(videos.items(), key=lambda kv: int(kv[0]))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and a non-numeric video key
        raise VadpipeError(
            f"{path}: not an Avenue label json with a 'videos' object ({exc})"
        ) from None
    out = {}
    for key, video in items:
        where = f"{path}: video {key}"
        try:
            num_frames = int(video["num_frames"])
            ranges = [(int(a), int(b)) for a, b in video["anomalous_frames_1based_inclusive"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise VadpipeError(
                f"{where}: expected num_frames and anomalous_frames_1based_inclusive "
                f"[[a, b], ...] ({exc})"
            ) from None
        if num_frames <= 0:
            raise VadpipeError(f"{where}: num_frames must be positive, got {num_frames}")
        intervals = sort_intervals(one_based_inclusive(a, b, where) for a, b in ranges)
        check_within(intervals, num_frames, where)
        out[f"{int(key):02d}"] = (num_frames, intervals)
    return out


def _split_frame_labels(
    path: Path, videos_json: dict[str, tuple[int, tuple[Interval, ...]]]
) -> dict[str, tuple[Interval, ...]]:
    """Cut the concatenated labels into the test videos, in order, by their lengths."""
    labels = load_mask(path)
    lengths = [n for n, _ in videos_json.values()]
    if labels.shape[0] != sum(lengths):
        raise VadpipeError(
            f"{path}: {labels.shape[0]} frame labels but the {len(lengths)} test videos of "
            f"{MASKS_JSON} have {sum(lengths)} frames"
        )
    bounds = np.cumsum([0, *lengths])
    return {
        nn: intervals_from_labels(labels[start:end])
        for nn, start, end in zip(videos_json, bounds[:-1], bounds[1:], strict=True)
    }
