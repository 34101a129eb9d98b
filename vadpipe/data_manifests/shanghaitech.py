"""ShanghaiTech Campus (Luo et al., ICCV 2017), two protocols, 13 scenes.

Files read (official names, in one folder):

* ``test_frame_mask/<id>.npy`` — one per video of the original 107-video test set: a 1-D
  0/1 vector, index ``i`` (0-based) = frame ``i`` of the video (40,791 frames in all).
* ``SH_Train.txt``, ``SH_Test.txt`` — the weakly-supervised re-split of Zhong et al.
  (CVPR 2019): 238 / 199 ids, one per line. ``SS_NNNN`` (4 digits) ids come from the
  original test set (they have a mask); ``SS_NNN`` (3 digits) from the original training
  set (all normal). Together they hold all 330 original training ids.

Video ids are the dataset's own (``01_0014``, ``01_001``); ``scene`` = the first two digits.

Anomaly classes (``classes="semantic"``): the dataset authors' semantic annotation gives
every anomalous frame of the 107 original test videos one of 17 classes (chasing, vehicle,
jumping, ...) -- the classes AnomalyCLIP's ShanghaiTech recognition (Table 1 mAUC) is
computed on. vadpipe ships it (``data/shanghaitech_semantic.json``, from svip-lab/MLEP, the
dataset authors' repository; 1-based inclusive frame ranges). With it, an anomalous
video's label is its class and a test video's ground truth becomes its class intervals
(their union is checked against the frame mask, frame for frame). Six videos hold two or
more classes (03_0035, 04_0001, 07_0007 and 10_0075 in the weak training split; 04_0012
and 05_0023 in its test split): a test video's frames keep each their own class; a video's
label -- all a weakly-supervised head sees of a training video -- is the class with the
most frames (the earlier name on a tie). Which class AnomalyCLIP's authors gave those six
is not published; this is vadpipe's rule. The manifest declares all 17 classes
(``meta["anomaly_classes"]``): 'step' occurs only inside a training video labelled 'running',
and a head still learns a direction for it, as the authors' 17-class model has one.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vadpipe.data_manifests._annotations import (
    ANOMALY,
    annotation_file,
    annotation_folder,
    benchmark_meta,
    count_frames,
    pick_path,
    read_unique_names,
    videos_root,
)
from vadpipe.data_manifests.schema import NORMAL, Interval, Manifest, VideoEntry, load_mask
from vadpipe.errors import VadpipeError, read_json

SPLITS = ("one-class", "weak")
SEMANTIC = Path(__file__).resolve().parent / "data" / "shanghaitech_semantic.json"
_ID_RE = re.compile(r"^(\d{2})_(\d{3}|\d{4})$")


def build_shanghaitech(
    annotations: str | Path,
    videos: str | Path,
    split: str = "one-class",
    cross_scene: str | None = None,
    classes: str | Path | None = None,
) -> Manifest:
    """ShanghaiTech manifest for the one-class or the weakly-supervised protocol.

    ``split="one-class"`` (default): train = the 330 original training videos (all
    normal), test = the 107 original test videos. The original train list is not among
    the annotation files, so it is derived: the 3-digit ids of ``SH_Train.txt`` and
    ``SH_Test.txt`` together (330, sorted). Test ids are the mask files, sorted.

    ``split="weak"`` (Zhong et al.): train = ``SH_Train.txt`` (238: 63 anomalous + 175
    normal), test = ``SH_Test.txt`` (199: 44 anomalous + 155 normal), in list order. Train
    videos from the original test set get only a video-level label (``anomaly`` when their
    mask has a 1), never the mask: that is weak supervision.

    Ground truth: a test video from the original test set keeps its mask file as
    ``mask_path`` (0-based, one value per frame; ``num_frames`` = mask length) and is
    labelled ``anomaly`` when the mask has a 1, else ``normal``. Original training videos
    are ``normal`` with unknown ``num_frames`` (counted when they are frame folders).

    ``cross_scene="01,02:03,04"``: train keeps only scenes 01 and 02, test only 03 and 04
    (the two sides must not share a scene).

    ``classes``: ``None`` -- anomalous videos are labelled ``anomaly``; ``"semantic"`` -- the
    17 classes of the shipped semantic annotation (module docstring); or the path of a JSON
    file in the same layout (``{"videos": {id: {"length": n, "classes": {name: [[s, e], ...]}}}}``,
    1-based inclusive; MLEP's original, keyed ``"0001"``, is read too).

    Layout (the official download: training set as videos, test set as frame folders):
    original test ids -> ``<videos>/testing/frames/<id>``; original training ids ->
    ``<videos>/training/videos/<id>.avi``, or ``<videos>/training/frames/<id>`` when only
    that folder exists.
    """
    if split not in SPLITS:
        raise VadpipeError(f"shanghaitech: split must be one of {', '.join(SPLITS)}, got {split!r}")
    scenes = _parse_cross_scene(cross_scene) if cross_scene is not None else None
    folder = annotation_folder(annotations, "shanghaitech")
    root = videos_root(videos)
    masks = _mask_files(folder)
    weak_train = _read_ids(annotation_file(folder, "SH_Train.txt"))
    weak_test = _read_ids(annotation_file(folder, "SH_Test.txt"))
    both = set(weak_train) & set(weak_test)
    if both:
        raise VadpipeError(
            f"{folder / 'SH_Test.txt'}: {sorted(both)[0]!r} is in both SH_Train.txt and SH_Test.txt"
        )

    if split == "one-class":
        train_ids = sorted(i for i in [*weak_train, *weak_test] if not _from_test_set(i))
        test_ids = sorted(masks)
    else:
        train_ids, test_ids = list(weak_train), list(weak_test)
    for i in [*train_ids, *test_ids]:
        if _from_test_set(i) and i not in masks:
            where = weak_train.get(i) or weak_test.get(i)
            raise VadpipeError(
                f"{where}: {i!r} comes from the original test set but "
                f"{folder / 'test_frame_mask' / (i + '.npy')} is missing"
            )
    if scenes is not None:
        train_ids = _in_scenes(train_ids, scenes[0], "train")
        test_ids = _in_scenes(test_ids, scenes[1], "test")

    semantic = _read_semantic(classes, masks) if classes is not None else None
    entries = [_entry(i, "train", root, masks, semantic) for i in train_ids]
    entries += [_entry(i, "test", root, masks, semantic) for i in test_ids]
    meta = benchmark_meta(
        "shanghaitech",
        folder,
        root,
        protocol=["micro_auc", "macro_auc"],
        source_convention="test_frame_mask/<id>.npy: one 0/1 value per frame, 0-based",
        split=split,
        cross_scene=None if scenes is None else {"train": scenes[0], "test": scenes[1]},
        **({} if classes is None else {"classes": str(classes),
                                       "anomaly_classes": sorted({iv.label for ivs in semantic.values() for iv in ivs})}),
    )
    return Manifest(entries, meta=meta)


def _from_test_set(video_id: str) -> bool:
    """4-digit ids (``01_0014``) are the original test videos; 3-digit ones training."""
    return len(video_id) == 7


def _scene(video_id: str) -> str:
    return video_id[:2]


def _check_id(text: str, where: str) -> str:
    if not _ID_RE.match(text):
        raise VadpipeError(
            f"{where}: expected a ShanghaiTech id like 01_0014 or 01_001, got {text!r}"
        )
    return text


def _read_ids(path: Path) -> dict[str, str]:
    """``{video_id: "path:line"}`` in file order."""
    return {i: f"{path}:{no}" for no, i in read_unique_names(path, _check_id)}


def _mask_files(folder: Path) -> dict[str, Path]:
    mask_dir = folder / "test_frame_mask"
    if not mask_dir.is_dir():
        raise VadpipeError(f"{mask_dir}: annotation folder test_frame_mask not found")
    masks = {p.stem: p for p in sorted(mask_dir.glob("*.npy"))}
    if not masks:
        raise VadpipeError(f"{mask_dir}: no .npy masks found")
    for video_id, path in masks.items():
        if not (_ID_RE.match(video_id) and _from_test_set(video_id)):
            raise VadpipeError(f"{path}: mask file name is not a test video id like 01_0014")
    return masks


def _read_semantic(classes: str | Path, masks: dict[str, Path]) -> dict[str, list[Interval]]:
    """``{video_id: [Interval(start, end, class), ...]}`` (0-based, end exclusive, by start) of
    the semantic annotation, every video's intervals checked against its frame mask."""
    path = SEMANTIC if str(classes) == "semantic" else Path(classes)
    data = read_json(path, "ShanghaiTech class file not found (classes: 'semantic' or a JSON path)")
    videos = data.get("videos", data) if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise VadpipeError(f"{path}: expected an object of videos")
    by_number = {i.split("_")[1]: i for i in masks}
    out = {}
    for key, value in videos.items():
        video_id = key if key in masks else by_number.get(key)
        where = f"{path}: video {key!r}"
        if video_id is None:
            raise VadpipeError(f"{where}: not a ShanghaiTech test video with a frame mask")
        spans = value.get("classes") if "classes" in value else (value.get("anomalies") or [{}])[0]
        try:
            intervals = sorted((Interval(int(s) - 1, int(e), str(name)) for name, pairs in spans.items()
                                for s, e in pairs), key=lambda iv: (iv.start, iv.label))
        except (TypeError, ValueError, AttributeError):
            raise VadpipeError(f"{where}: classes must map names to [[start, end], ...] frame ranges") from None
        mask = load_mask(masks[video_id])
        union = np.zeros(len(mask), bool)
        for iv in intervals:
            if not 0 <= iv.start < iv.end <= len(mask):
                raise VadpipeError(f"{where}: {iv.label} frames {iv.start + 1}-{iv.end} outside its {len(mask)} frames")
            union[iv.start:iv.end] = True
        bad = np.flatnonzero(union != mask.astype(bool))
        if len(bad):
            raise VadpipeError(f"{where}: the class intervals and the frame mask disagree at frame {bad[0] + 1} "
                               f"(1-based) and {len(bad) - 1} other(s)")
        out[video_id] = intervals
    return out


def _main_class(intervals: list[Interval]) -> str:
    """The class with the most frames (the earlier name on a tie): a video's one label."""
    frames: dict[str, int] = {}
    for iv in intervals:
        frames[iv.label] = frames.get(iv.label, 0) + iv.end - iv.start
    return min(frames, key=lambda c: (-frames[c], c))


def _entry(video_id: str, split: str, root: Path, masks: dict[str, Path],
           semantic: dict[str, list[Interval]] | None = None) -> VideoEntry:
    if not _from_test_set(video_id):
        path = pick_path(root, f"training/videos/{video_id}.avi", f"training/frames/{video_id}")
        return VideoEntry(
            video_id=video_id,
            path=str(path),
            split=split,
            num_frames=count_frames(path),
            scene=_scene(video_id),
        )
    mask = load_mask(masks[video_id])
    label = ANOMALY if np.any(mask) else NORMAL
    intervals = semantic.get(video_id) if semantic is not None and label != NORMAL else None
    if semantic is not None and label != NORMAL and not intervals:
        raise VadpipeError(f"{masks[video_id]}: anomalous, but the class file has no classes for {video_id}")
    if intervals:
        label = _main_class(intervals)
    return VideoEntry(
        video_id=video_id,
        path=str(root / "testing" / "frames" / video_id),
        split=split,
        label=label,
        intervals=tuple(intervals) if intervals and split == "test" else (),
        mask_path=str(masks[video_id]) if split == "test" and not intervals else None,
        num_frames=int(mask.shape[0]),
        scene=_scene(video_id),
    )


def _parse_cross_scene(text: str) -> tuple[list[str], list[str]]:
    """``"01,02:03,04"`` -> (``["01", "02"]``, ``["03", "04"]``)."""
    usage = "cross_scene must be TRAIN_SCENES:TEST_SCENES, e.g. 01,02:03,04"
    sides = str(text).split(":")
    if len(sides) != 2:
        raise VadpipeError(f"{usage}; got {text!r}")
    parsed = []
    for side in sides:
        tokens = [t.strip() for t in side.split(",") if t.strip()]
        if not tokens or not all(t.isdigit() for t in tokens):
            raise VadpipeError(f"{usage}; got {text!r}")
        parsed.append(sorted({f"{int(t):02d}" for t in tokens}))
    shared = set(parsed[0]) & set(parsed[1])
    if shared:
        raise VadpipeError(
            f"cross_scene {text!r}: scene(s) {', '.join(sorted(shared))} on both sides; "
            "train and test scenes must differ"
        )
    return parsed[0], parsed[1]


def _in_scenes(ids: list[str], scenes: list[str], split: str) -> list[str]:
    present = sorted({_scene(i) for i in ids})
    missing = [s for s in scenes if s not in present]
    if missing:
        raise VadpipeError(
            f"cross_scene: no {split} videos in scene(s) {', '.join(missing)} "
            f"({split} scenes: {', '.join(present)})"
        )
    return [i for i in ids if _scene(i) in scenes]
