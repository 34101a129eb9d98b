"""Build a manifest from a folder of videos and/or frame folders.

The split comes from the outermost folder on the way to a video that names one
(``train``, ``training``, ``training_videos``, ``test``, ``testing``, ...); otherwise
``default_split``. The video id is the relative path joined with ``_`` (suffix dropped). Every video is labelled ``normal`` unless ``label`` says otherwise: a
folder has no ground truth, so add intervals to the CSV by hand or use a benchmark builder.
"""

from __future__ import annotations

import re
from pathlib import Path

from vadpipe.data_manifests.media import VIDEO_SUFFIXES, is_frame_folder
from vadpipe.data_manifests.schema import Manifest, VideoEntry, check_video_id
from vadpipe.errors import VadpipeError

_TRAIN_RE = re.compile(r"^(train|training)([_\-].*)?$", re.IGNORECASE)
_TEST_RE = re.compile(r"^(test|testing)([_\-].*)?$", re.IGNORECASE)


def build_folder_manifest(
    root: str | Path, default_split: str = "test", label: str = "normal"
) -> Manifest:
    """Every video file and every folder holding images under ``root``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise VadpipeError(f"{root}: not a folder")
    found: list[Path] = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            found.append(p)
        elif p.is_dir() and is_frame_folder(p):
            found.append(p)
    if not found:
        raise VadpipeError(f"{root}: no video files or frame folders found")
    entries = []
    for p in found:
        rel = p.relative_to(root)
        parts = list(rel.parts)
        split = default_split
        for folder in parts[:-1]:  # the outermost train*/test* folder decides
            if _TRAIN_RE.match(folder) or _TEST_RE.match(folder):
                split = "train" if _TRAIN_RE.match(folder) else "test"
                break
        stem_parts = parts[:-1] + [Path(parts[-1]).stem if p.is_file() else parts[-1]]
        video_id = check_video_id("_".join(stem_parts), str(p))
        entries.append(VideoEntry(video_id=video_id, path=str(p.resolve()), split=split, label=label))
    return Manifest(entries, meta={"builder": "folder", "root": str(root.resolve())})
