"""The manifest: one row per video, with its split, label and ground truth.

Conventions (the same everywhere in vadpipe):

* Frame indices are **0-based** and intervals are **half-open** ``[start, end)``:
  ``60-180`` marks frames 60, 61, ..., 179. Builders for benchmarks whose official files
  use 1-based inclusive ranges (UCSD Ped2, Avenue) convert on reading; UCF-Crime's and
  XD-Violence's ``s e`` pairs are 0-based frame indices as every peer reads them, with the
  end exclusive (``[s, e)``, VadCLIP) or, for UCF-Crime with ``end="inclusive"``, included
  (``[s, e + 1)``, RTFM, LAVAD, AnomalyCLIP). Each builder's docstring says which.
* An interval may carry its own anomaly class (``60-180:Fighting``); without one it takes
  the video's ``label``.
* Relative ``path`` and ``mask_path`` values are resolved against the manifest file's folder.

File formats (:mod:`~vadpipe.data_manifests.io`): CSV with a header row, or JSONL with one
object per line; builders record which protocol variant they chose (e.g. Avenue's ground
truth) in the manifest's ``meta``, written beside it as ``<manifest>.meta.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vadpipe.errors import VadpipeError

SPLITS = ("train", "test")
NORMAL = "normal"
COLUMNS = (
    "video_id",
    "path",
    "split",
    "label",
    "anomaly_intervals",
    "mask_path",
    "fps",
    "num_frames",
    "scene",
)
_REQUIRED = ("video_id", "path", "split", "label")
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*(?::\s*(.+?)\s*)?$")


@dataclass(frozen=True)
class Interval:
    """Anomalous frames ``[start, end)`` (0-based, end exclusive) of one class."""

    start: int
    end: int
    label: str | None = None

    def __str__(self) -> str:
        text = f"{self.start}-{self.end}"
        return f"{text}:{self.label}" if self.label else text


@dataclass(frozen=True)
class VideoEntry:
    """One manifest row. ``path`` is already resolved (absolute or as given)."""

    video_id: str
    path: str
    split: str
    label: str = NORMAL
    intervals: tuple[Interval, ...] = ()
    mask_path: str | None = None
    fps: float | None = None
    num_frames: int | None = None
    scene: str | None = None

    @property
    def is_normal(self) -> bool:
        return self.label.lower() == NORMAL

    @property
    def has_frame_gt(self) -> bool:
        """Whether frame-level ground truth exists (intervals, a mask, or a normal video)."""
        return bool(self.intervals) or self.mask_path is not None or self.is_normal

    def frame_labels(self, num_frames: int | None = None) -> np.ndarray:
        """Per-frame 0/1 ground truth, ``uint8[num_frames]``.

        ``num_frames`` is the decoded length (from the cache or scores); it must agree with
        the manifest's own ``num_frames`` and with the mask length when those exist.
        Intervals reaching past the end are an error, never silently clipped.
        """
        n = self.resolve_length(num_frames)
        if self.mask_path is not None:
            mask = load_mask(self.mask_path)
            if mask.shape[0] != n:
                raise VadpipeError(
                    f"{self.mask_path}: mask of video {self.video_id!r} has {mask.shape[0]} "
                    f"frames but the video has {n}"
                )
            return mask
        check_within(self.intervals, n, f"video {self.video_id!r}")
        labels = np.zeros(n, dtype=np.uint8)
        for iv in self.intervals:
            labels[iv.start : iv.end] = 1
        return labels

    def frame_classes(self, num_frames: int | None = None) -> np.ndarray:
        """Per-frame class name (``object`` array): the interval's class or ``normal``; where
        intervals of two classes overlap the later one wins (evaluation's recognition uses a
        multi-hot instead, :func:`vadpipe.evaluate.recognition.frame_class_targets`)."""
        labels = self.frame_labels(num_frames)  # checks the length and the interval ends
        out = np.full(len(labels), NORMAL, dtype=object)
        if self.mask_path is not None:
            out[labels > 0] = self.label
            return out
        for iv in self.intervals:
            out[iv.start : iv.end] = iv.label or self.label
        return out

    def resolve_length(self, num_frames: int | None) -> int:
        """The video's length: ``num_frames`` (decoded), checked against the manifest's own
        ``num_frames``; the manifest's, or the mask's, when none is given."""
        if num_frames is None:
            num_frames = self.num_frames
        elif self.num_frames is not None and int(self.num_frames) != int(num_frames):
            raise VadpipeError(
                f"video {self.video_id!r}: the manifest says {self.num_frames} frames but "
                f"the decoded video has {num_frames}"
            )
        if num_frames is None:
            if self.mask_path is not None:
                return int(load_mask(self.mask_path).shape[0])
            raise VadpipeError(
                f"video {self.video_id!r}: frame count unknown (no num_frames in the "
                "manifest and none given)"
            )
        return int(num_frames)


@dataclass
class Manifest:
    """An ordered table of :class:`VideoEntry`, unique by ``video_id``."""

    entries: list[VideoEntry]
    meta: dict = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self._by_id = {}
        for e in self.entries:
            if e.video_id in self._by_id:
                raise VadpipeError(f"{self.source or 'manifest'}: duplicate video_id {e.video_id!r}")
            self._by_id[e.video_id] = e

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._by_id

    def __getitem__(self, video_id: str) -> VideoEntry:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise VadpipeError(
                f"{self.source or 'manifest'}: no video {video_id!r}"
            ) from None

    def select(self, split: str | None = None, normal: bool | None = None) -> list[VideoEntry]:
        """Entries of one split and/or only normal (True) or only anomalous (False) ones."""
        return [
            e
            for e in self.entries
            if (split is None or e.split == split) and (normal is None or e.is_normal == normal)
        ]

    def ids(self, split: str | None = None) -> list[str]:
        return [e.video_id for e in self.select(split)]

    @property
    def anomaly_classes(self) -> list[str]:
        """Sorted anomaly class names: video labels, interval labels and those the manifest's
        meta declares (``anomaly_classes``: a dataset's full class list), less ``normal``."""
        names = set((self.meta or {}).get("anomaly_classes", ()))
        for e in self.entries:
            if not e.is_normal:
                names.add(e.label)
            names.update(iv.label for iv in e.intervals if iv.label)
        names.discard(NORMAL)
        return sorted(names)

    def shard(self, shard: int, num_shards: int) -> "Manifest":
        """Shard ``shard`` of ``num_shards``: a deterministic round robin over the rows, so
        array task i of any run of the same manifest does the same videos."""
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise VadpipeError(f"bad shard {shard} of {num_shards} (need 0 <= shard < num_shards)")
        return Manifest([e for i, e in enumerate(self.entries) if i % num_shards == shard], self.meta, self.source)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read a CSV or JSONL manifest; a bad row raises ``FILE:LINE: what is wrong``."""
        from vadpipe.data_manifests.io import read_manifest

        return read_manifest(path)

    def save(self, path: str | Path) -> Path:
        """Write CSV (``.csv``) or JSONL (``.jsonl``), and ``meta`` beside it (see :mod:`~vadpipe.data_manifests.io`)."""
        from vadpipe.data_manifests.io import write_manifest

        return write_manifest(self, path)


def load_manifest(path: str | Path) -> Manifest:
    return Manifest.load(path)


def load_mask(path: str | Path) -> np.ndarray:
    """A per-frame 0/1 mask from ``.npy`` (never unpickled) as ``uint8[T]``."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise VadpipeError(f"{path}: mask file not found") from None
    except (ValueError, OSError) as exc:
        raise VadpipeError(f"{path}: not a readable .npy mask ({exc})") from None
    arr = np.asarray(arr).reshape(-1)
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise VadpipeError(f"{path}: mask values must be 0 or 1")
    return arr.astype(np.uint8)


def parse_intervals(text: str, where: str = "") -> tuple[Interval, ...]:
    """Parse ``"60-180;200-240:Fighting"`` (0-based, end exclusive)."""
    out = []
    if text is None:
        return ()
    for part in str(text).split(";"):
        if not part.strip():
            continue
        m = _INTERVAL_RE.match(part)
        if not m:
            raise VadpipeError(
                f"{where}: bad anomaly interval {part.strip()!r} (expected START-END, "
                "0-based, end exclusive, e.g. 60-180 or 60-180:Fighting)"
            )
        start, end = int(m.group(1)), int(m.group(2))
        if end <= start:
            raise VadpipeError(f"{where}: empty anomaly interval {part.strip()!r} (end <= start)")
        out.append(Interval(start, end, m.group(3)))
    return sort_intervals(out)


def sort_intervals(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted by (start, end), stable: the one order of a manifest's intervals."""
    return tuple(sorted(intervals, key=lambda iv: (iv.start, iv.end)))


def check_within(intervals: Iterable[Interval], num_frames: int | None, where: str) -> None:
    """Refuse an interval that ends past the video's last frame (when the length is known)."""
    if num_frames is None:
        return
    for iv in intervals:
        if iv.end > num_frames:
            raise VadpipeError(f"{where}: anomaly interval {iv} ends past the last frame ({num_frames} frames)")


def format_intervals(intervals: Iterable[Interval]) -> str:
    return ";".join(str(iv) for iv in intervals)


def intervals_from_labels(labels: np.ndarray, label: str | None = None) -> tuple[Interval, ...]:
    """Runs of ones in a 0/1 vector as half-open intervals."""
    x = np.concatenate([[0], np.asarray(labels).astype(np.int8).reshape(-1) > 0, [0]]).astype(np.int8)
    d = np.diff(x)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return tuple(Interval(int(s), int(e), label) for s, e in zip(starts, ends))


def check_video_id(video_id: str, where: str) -> str:
    """A video id must be usable as one path component and one store node name."""
    if not video_id or not video_id.strip():
        raise VadpipeError(f"{where}: empty video_id")
    if video_id != video_id.strip():
        raise VadpipeError(f"{where}: video_id {video_id!r} has leading/trailing spaces")
    if "/" in video_id or "\\" in video_id or video_id in (".", ".."):
        raise VadpipeError(
            f"{where}: video_id {video_id!r} is not safe as a path component (no '/', '\\', '.' or '..')"
        )
    if video_id.startswith("__"):
        raise VadpipeError(f"{where}: video_id {video_id!r} may not start with '__' (reserved)")
    if any(ord(c) < 32 for c in video_id):
        raise VadpipeError(f"{where}: video_id {video_id!r} contains control characters")
    return video_id
