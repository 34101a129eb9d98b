"""UCF-Crime (Sultani et al., CVPR 2018): 1610 train / 290 test videos, 13 anomaly classes.

Files read (official names, in one folder):

* ``Anomaly_Train.txt`` — 1610 lines ``<ClassDir>/<name>.mp4``; 800 normal
  (``Training_Normal_Videos_Anomaly``) + 810 anomalous. Video-level labels only.
* ``Anomaly_Test.txt`` — 290 lines, same format; normals in ``Testing_Normal_Videos_Anomaly``.
* ``Temporal_Anomaly_Annotation.txt`` — 290 lines ``<name>.mp4  <Class>  s1  e1  s2  e2``
  (``-1 -1`` = no event; 140 anomalous videos, 16 with a second event).
"""

from __future__ import annotations

from pathlib import Path

from vadpipe.data_manifests._annotations import (
    annotation_file,
    annotation_folder,
    benchmark_meta,
    half_open,
    parse_int,
    read_lines,
    read_unique_names,
    sort_intervals,
    videos_root,
)
from vadpipe.data_manifests.schema import NORMAL, Interval, Manifest, VideoEntry, check_video_id
from vadpipe.errors import VadpipeError

CLASSES = (
    "Abuse",
    "Arrest",
    "Arson",
    "Assault",
    "Burglary",
    "Explosion",
    "Fighting",
    "RoadAccidents",
    "Robbery",
    "Shooting",
    "Shoplifting",
    "Stealing",
    "Vandalism",
)
"""The 13 anomaly classes, spelled as the dataset's folders (CamelCase, no spaces)."""

NORMAL_NAMES = ("Normal", "Training_Normal_Videos_Anomaly", "Testing_Normal_Videos_Anomaly")
"""Folder / annotation class names that mean a normal video."""

_SOURCE_CONVENTION = {
    "exclusive": "Temporal_Anomaly_Annotation.txt pairs s e used as 0-based [s, e) (VadCLIP)",
    "inclusive": "Temporal_Anomaly_Annotation.txt pairs s e used as 0-based [s, e + 1) (RTFM, LAVAD, AnomalyCLIP)",
}
END_OFFSET = {"exclusive": 0, "inclusive": 1}
"""Frames an annotated end ``e`` adds past itself: interval = ``[s, e + END_OFFSET[end])``."""
END_CONVENTIONS = tuple(_SOURCE_CONVENTION)


def build_ucf_crime(
    annotations: str | Path, videos: str | Path, end: str = "exclusive"
) -> Manifest:
    """UCF-Crime manifest: the official split, video-level train labels, test intervals.

    Layout: ``VideoEntry.path = <videos>/<ClassDir>/<name>.mp4`` exactly as the split lists
    write it (e.g. ``<videos>/Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4``).
    ``video_id`` = file name without ``.mp4`` (unique over both splits).

    Labels: the class is the folder name (``RoadAccidents``, ...); the normal folders
    become ``normal``. Train anomalous videos have a class but no intervals (weak
    supervision). Frame counts are unknown (``num_frames`` is None): expand the ground
    truth with the decoded length.

    Interval conversion (``end``), for an annotated pair ``s e``; both read the numbers as
    0-based frame indices, as every peer's code does (none reads them 1-based):

    * ``"exclusive"`` (default): ``[s, e)``, i.e. ``gt[s:e] = 1`` -- VadCLIP's
      ``make_gt_ucf.py``, so scores compare with the vision-language results that use its
      ground truth;
    * ``"inclusive"``: ``[s, e + 1)``, the end frame included -- RTFM's ``make_gt_ucf.py``
      (``range(s, e + 1)``), LAVAD's and AnomalyCLIP's ``s <= f <= e``; one frame more per
      interval (156 frames over the test set).

    ``meta["end_offset"]`` records which (0 or 1), so ``vadpipe evaluate --convention``
    can move to a peer's rule without the annotation file.
    """
    if end not in END_CONVENTIONS:
        raise VadpipeError(
            f"ucf_crime: end must be one of {', '.join(END_CONVENTIONS)}, got {end!r}"
        )
    folder = annotation_folder(annotations, "ucf_crime")
    root = videos_root(videos)
    train_list = annotation_file(folder, "Anomaly_Train.txt")
    test_list = annotation_file(folder, "Anomaly_Test.txt")
    temporal = _read_temporal(annotation_file(folder, "Temporal_Anomaly_Annotation.txt"), end)

    entries = [
        VideoEntry(video_id=name, path=str(root / rel), split="train", label=label)
        for name, rel, label, _ in _read_split(train_list)
    ]
    for name, rel, label, where in _read_split(test_list):
        if name not in temporal:
            raise VadpipeError(
                f"{where}: test video {name!r} has no line in Temporal_Anomaly_Annotation.txt"
            )
        ann_where, ann_label, intervals = temporal.pop(name)
        if ann_label != label:
            raise VadpipeError(
                f"{ann_where}: class {ann_label!r} disagrees with {label!r} (the folder in {where})"
            )
        if label != NORMAL and not intervals:
            raise VadpipeError(f"{ann_where}: anomalous test video {name!r} has no annotated event")
        entries.append(
            VideoEntry(
                video_id=name, path=str(root / rel), split="test", label=label, intervals=intervals
            )
        )
    if temporal:
        name, (ann_where, _, _) = next(iter(temporal.items()))
        raise VadpipeError(
            f"{ann_where}: video {name!r} is annotated but not listed in {test_list.name}"
        )

    meta = benchmark_meta(
        "ucf_crime",
        folder,
        root,
        protocol=["micro_auc"],
        source_convention=_SOURCE_CONVENTION[end],
        split="official",
        end=end,
        end_offset=END_OFFSET[end],
    )
    return Manifest(entries, meta=meta)


def _class_name(name: str, where: str) -> str:
    if name in NORMAL_NAMES:
        return NORMAL
    if name not in CLASSES:
        raise VadpipeError(
            f"{where}: unknown UCF-Crime class {name!r} "
            f"(known: {', '.join(CLASSES + NORMAL_NAMES)})"
        )
    return name


def _read_split(path: Path) -> list[tuple[str, str, str, str]]:
    """``(video_id, relative path, label, where)`` per line of a split list."""

    def relative_path(text: str, where: str) -> str:
        rel = text.replace("\\", "/")
        if rel.count("/") != 1 or not rel.endswith(".mp4"):
            raise VadpipeError(f"{where}: expected <ClassDir>/<video>.mp4, got {text!r}")
        return rel

    out = []
    for no, rel in read_unique_names(path, relative_path):
        where = f"{path}:{no}"
        class_dir, file_name = rel.split("/")
        video_id = check_video_id(file_name[: -len(".mp4")], where)
        out.append((video_id, rel, _class_name(class_dir, where), where))
    return out


def _read_temporal(path: Path, end: str) -> dict[str, tuple[str, str, tuple[Interval, ...]]]:
    """``{video_id: (where, label, intervals)}`` from the temporal annotation file."""
    offset = END_OFFSET[end]
    out: dict[str, tuple[str, str, tuple[Interval, ...]]] = {}
    for no, text in read_lines(path):
        where = f"{path}:{no}"
        fields = text.split()
        if len(fields) < 2 or len(fields) % 2:
            raise VadpipeError(
                f"{where}: expected '<video>.mp4 <Class> s1 e1 [s2 e2 ...]', got {text!r}"
            )
        name = fields[0][: -len(".mp4")] if fields[0].endswith(".mp4") else fields[0]
        if name in out:
            raise VadpipeError(f"{where}: video {name!r} annotated twice (first at {out[name][0]})")
        numbers = [parse_int(tok, "a frame number", where) for tok in fields[2:]]
        intervals = []
        for s, e in zip(numbers[::2], numbers[1::2], strict=True):
            if (s, e) == (-1, -1):
                continue
            intervals.append(half_open(s, e + offset, where))
        label = _class_name(fields[1], where)
        if label == NORMAL and intervals:
            raise VadpipeError(f"{where}: a Normal video cannot have anomalous frames")
        out[name] = (where, label, sort_intervals(intervals))
    return out
