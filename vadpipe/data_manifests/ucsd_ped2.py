"""UCSD Ped2 (Mahadevan et al., CVPR 2010): 16 train / 12 test clips of one walkway.

Two ground truths (``gt``), both one 1-based inclusive range per test clip (frame 1 =
``001.tif``), in clip order Test001, Test002, ...:

* ``UCSDped2.m`` (default) -- the official list shipped with the dataset, plain-text MATLAB,
  parsed with a regular expression, never executed::

    TestVideoFile{end+1}.gt_frame = [61:180];
    TestVideoFile{end+1}.gt_frame = [1:50, 70:120];   % several ranges (as in Ped1's file)

  (MNAD's ``frame_labels_ped2.npy`` equals it frame for frame.)
* ``ped2.mat`` -- the frame-prediction line's file (Liu et al. 2018 and the papers that
  evaluate with its code): a MATLAB v5 cell ``gt`` of ``[start; end]`` pairs, read with
  ``scipy.io.loadmat`` (no pickle). It starts six clips (3, 5, 8, 9, 10, 11) at frame 5
  instead of 1: 24 anomalous frames fewer, 0.002-0.025 AUC on synthetic scores.
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
    check_within,
    count_frames,
    one_based_inclusive,
    pick_path,
    read_lines,
    sort_intervals,
    videos_root,
)
from vadpipe.data_manifests.schema import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError

NUM_TRAIN = 16
GT_FILE = "UCSDped2.m"
GT_VARIANTS = (GT_FILE, "ped2.mat")
_GT_LINE_RE = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]\s*;?\s*(?:%.*)?$")
_RANGE_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def build_ped2(annotations: str | Path, videos: str | Path, gt: str = GT_FILE) -> Manifest:
    """UCSD Ped2 manifest, ground truth from ``gt`` (``UCSDped2.m`` or ``ped2.mat``).

    Ground truth: each ``[a:b]`` (1-based inclusive) becomes ``[a-1, b)``, so UCSD frame
    ``k`` is 0-based frame ``k-1``, i.e. file ``(k-1):03d.jpg`` of the JPEG layout. Test
    clips are labelled ``anomaly`` (every Ped2 test clip has anomalous frames), train
    clips ``normal``.

    Ids are the dataset's clip names ``Train001``..``Train016`` and ``Test001``..``Test012``.

    Layout (the JPEG frame folders of the frame-prediction code, 0-based file names):
    ``<videos>/training/frames/NN`` and ``<videos>/testing/frames/NN``; when only the
    official TIFF layout exists, ``<videos>/Train/TrainNNN`` / ``<videos>/Test/TestNNN``.
    ``num_frames`` is the number of images in that folder when it exists, else None
    (the official test clips have 180,180,150,180,150,180,180,180,120,150,180,180 frames).
    """
    if gt not in GT_VARIANTS:
        raise VadpipeError(f"ped2: gt must be one of {', '.join(GT_VARIANTS)}, got {gt!r}")
    folder = annotation_folder(annotations, "ped2")
    root = videos_root(videos)
    gt_file = annotation_file(folder, gt)
    clips = _read_gt(gt_file) if gt == GT_FILE else _read_gt_mat(gt_file)

    entries = []
    for i in range(1, NUM_TRAIN + 1):
        path = pick_path(root, f"training/frames/{i:02d}", f"Train/Train{i:03d}")
        entries.append(
            VideoEntry(
                video_id=f"Train{i:03d}",
                path=str(path),
                split="train",
                num_frames=count_frames(path),
            )
        )
    for i, (where, intervals) in enumerate(clips, start=1):
        path = pick_path(root, f"testing/frames/{i:02d}", f"Test/Test{i:03d}")
        num_frames = count_frames(path)
        check_within(intervals, num_frames, f"{where} (clip {path})")
        entries.append(
            VideoEntry(
                video_id=f"Test{i:03d}",
                path=str(path),
                split="test",
                label=ANOMALY,
                intervals=intervals,
                num_frames=num_frames,
            )
        )
    meta = benchmark_meta(
        "ped2",
        folder,
        root,
        protocol=["micro_auc", "macro_auc"],
        source_convention=f"{gt} ranges [a:b] are 1-based inclusive -> [a-1, b)",
        split="official",
        gt=gt,
    )
    return Manifest(entries, meta=meta)


def _read_gt(path: Path) -> list[tuple[str, tuple[Interval, ...]]]:
    """``(where, intervals)`` per ``gt_frame`` line, in file order (= clip order)."""
    clips = []
    for no, text in read_lines(path):
        where = f"{path}:{no}"
        if text.startswith("%") or "gt_frame" not in text:
            continue  # `TestVideoFile = {};`, comments
        m = _GT_LINE_RE.search(text)
        if not m:
            raise VadpipeError(
                f"{where}: expected 'TestVideoFile{{end+1}}.gt_frame = [a:b, ...];', got {text!r}"
            )
        intervals = []
        for part in m.group(1).split(","):
            r = _RANGE_RE.match(part)
            if not r:
                raise VadpipeError(
                    f"{where}: bad frame range {part.strip()!r} (expected a:b, 1-based)"
                )
            intervals.append(one_based_inclusive(int(r.group(1)), int(r.group(2)), where))
        clips.append((where, sort_intervals(intervals)))
    if not clips:
        raise VadpipeError(f"{path}: no 'gt_frame = [a:b];' lines found")
    return clips


def _read_gt_mat(path: Path) -> list[tuple[str, tuple[Interval, ...]]]:
    """``(where, intervals)`` per clip from ``ped2.mat``: a 1 x N cell ``gt`` of ``[start; end]``."""
    from scipy.io import loadmat

    try:
        cells = loadmat(str(path))["gt"]
    except (ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise VadpipeError(f"{path}: not a MATLAB file with a 'gt' cell of [start; end] pairs ({exc})") from None
    clips = []
    for i, cell in enumerate(np.asarray(cells, dtype=object).ravel(), start=1):
        where = f"{path}: gt{{{i}}}"
        pair = np.asarray(cell).ravel()
        if pair.size != 2 or not np.issubdtype(pair.dtype, np.integer):
            raise VadpipeError(f"{where}: expected [start; end], got {pair.tolist()!r}")
        clips.append((where, (one_based_inclusive(int(pair[0]), int(pair[1]), where),)))
    if not clips:
        raise VadpipeError(f"{path}: the 'gt' cell is empty")
    return clips
