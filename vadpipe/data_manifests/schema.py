"""The manifest: one row per video, with its split, label and ground truth.

Conventions (the same everywhere in vadpipe):

* Frame indices are **0-based** and intervals are **half-open** ``[start, end)``:
  ``60-180`` marks frames 60, 61, ..., 179. Builders for benchmarks whose official files
  use 1-based inclusive ranges (UCSD Ped2, UCF-Crime) convert on reading and say so.
* An interval may carry its own anomaly class (``60-180:Fighting``); without one it takes
  the video's ``label``.
* Relative ``path`` and ``mask_path`` values are resolved against the manifest file's folder.

File formats: CSV with a header row, or JSONL with one object per line. Either may start
with a metadata record (CSV: a ``# {...json...}`` comment line; JSONL: ``{"_meta": {...}}``)
that builders use to record which protocol variant they chose (e.g. Avenue's ground truth).
"""

from __future__ import annotations

import csv
import io
import json
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
        n = self._resolve_length(num_frames)
        if self.mask_path is not None:
            mask = load_mask(self.mask_path)
            if mask.shape[0] != n:
                raise VadpipeError(
                    f"{self.mask_path}: mask of video {self.video_id!r} has {mask.shape[0]} "
                    f"frames but the video has {n}"
                )
            return mask
        labels = np.zeros(n, dtype=np.uint8)
        for iv in self.intervals:
            if iv.end > n:
                raise VadpipeError(
                    f"video {self.video_id!r}: anomaly interval {iv} ends past its last "
                    f"frame ({n} frames)"
                )
            labels[iv.start : iv.end] = 1
        return labels

    def frame_classes(self, num_frames: int | None = None) -> np.ndarray:
        """Per-frame class name (``object`` array): the interval's class or ``normal``."""
        n = self._resolve_length(num_frames)
        out = np.full(n, NORMAL, dtype=object)
        if self.mask_path is not None:
            out[self.frame_labels(n) > 0] = self.label
            return out
        for iv in self.intervals:
            if iv.end > n:
                raise VadpipeError(
                    f"video {self.video_id!r}: anomaly interval {iv} ends past its last "
                    f"frame ({n} frames)"
                )
            out[iv.start : iv.end] = iv.label or self.label
        return out

    def _resolve_length(self, num_frames: int | None) -> int:
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
        """Sorted anomaly class names: video labels and interval labels, less ``normal``."""
        names = set()
        for e in self.entries:
            if not e.is_normal:
                names.add(e.label)
            names.update(iv.label for iv in e.intervals if iv.label)
        names.discard(NORMAL)
        return sorted(names)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read a CSV or JSONL manifest; a bad row raises ``FILE:LINE: what is wrong``."""
        path = Path(path)
        if not path.is_file():
            raise VadpipeError(f"{path}: manifest not found")
        base = path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise VadpipeError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows, meta = _read_jsonl(text, path)
        else:
            rows, meta = _read_csv(text, path)
        entries = [_entry_from_row(row, base, f"{path.name}:{line}") for line, row in rows]
        seen: dict[str, int] = {}
        for (line, _), e in zip(rows, entries):
            if e.video_id in seen:
                raise VadpipeError(
                    f"{path.name}:{line}: duplicate video_id {e.video_id!r} (first on line "
                    f"{seen[e.video_id]})"
                )
            seen[e.video_id] = line
        if not entries:
            raise VadpipeError(f"{path}: manifest has no rows")
        return cls(entries, meta=meta, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write CSV (``.csv``) or JSONL (``.jsonl``); paths are written as stored."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [_row_from_entry(e) for e in self.entries]
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            with path.open("w", encoding="utf-8") as fh:
                if self.meta:
                    fh.write(json.dumps({"_meta": self.meta}) + "\n")
                for row in rows:
                    fh.write(json.dumps({k: v for k, v in row.items() if v != ""}) + "\n")
        else:
            buf = io.StringIO()
            if self.meta:
                buf.write("# " + json.dumps(self.meta) + "\n")
            writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            path.write_text(buf.getvalue(), encoding="utf-8")
        return path


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
    return tuple(sorted(out, key=lambda iv: (iv.start, iv.end)))


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


def _read_csv(text: str, path: Path) -> tuple[list[tuple[int, dict]], dict]:
    lines = text.splitlines()
    meta: dict = {}
    first = 0
    while first < len(lines) and (not lines[first].strip() or lines[first].lstrip().startswith("#")):
        comment = lines[first].lstrip()[1:].strip()
        if comment.startswith("{") and not meta:
            try:
                meta = json.loads(comment)
            except json.JSONDecodeError as exc:
                raise VadpipeError(f"{path.name}:{first + 1}: bad metadata comment ({exc.msg})") from None
        first += 1
    reader = csv.reader(lines[first:])
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise VadpipeError(f"{path}: manifest is empty") from None
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise VadpipeError(
            f"{path.name}:{first + 1}: header lacks column(s) {', '.join(missing)} "
            f"(found: {', '.join(header)})"
        )
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise VadpipeError(
            f"{path.name}:{first + 1}: unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join(COLUMNS)})"
        )
    rows = []
    for offset, values in enumerate(reader):
        line = first + 2 + offset
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise VadpipeError(
                f"{path.name}:{line}: {len(values)} fields, header has {len(header)}"
            )
        rows.append((line, dict(zip(header, values))))
    return rows, meta


def _read_jsonl(text: str, path: Path) -> tuple[list[tuple[int, dict]], dict]:
    rows, meta = [], {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise VadpipeError(f"{path.name}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise VadpipeError(f"{path.name}:{line_no}: expected a JSON object")
        if "_meta" in obj and len(obj) == 1:
            meta = dict(obj["_meta"])
            continue
        unknown = [k for k in obj if k not in COLUMNS]
        if unknown:
            raise VadpipeError(f"{path.name}:{line_no}: unknown field(s) {', '.join(unknown)}")
        if isinstance(obj.get("anomaly_intervals"), list):
            obj["anomaly_intervals"] = ";".join(
                f"{iv[0]}-{iv[1]}" + (f":{iv[2]}" if len(iv) > 2 and iv[2] else "")
                for iv in obj["anomaly_intervals"]
            )
        rows.append((line_no, {k: "" if v is None else str(v) for k, v in obj.items()}))
    return rows, meta


def _entry_from_row(row: dict, base: Path, where: str) -> VideoEntry:
    for col in _REQUIRED:
        if not str(row.get(col, "")).strip():
            raise VadpipeError(f"{where}: missing {col}")
    video_id = check_video_id(row["video_id"], where)
    split = row["split"].strip().lower()
    if split not in SPLITS:
        raise VadpipeError(f"{where}: unknown split {row['split']!r} (expected train or test)")
    label = row["label"].strip()
    if label.lower() == NORMAL:
        label = NORMAL
    intervals = parse_intervals(row.get("anomaly_intervals", ""), where)
    mask = (row.get("mask_path") or "").strip() or None
    if label == NORMAL and intervals:
        raise VadpipeError(f"{where}: video {video_id!r} is labelled normal but has anomaly intervals")
    fps = _optional_number(row.get("fps"), float, "fps", where)
    num_frames = _optional_number(row.get("num_frames"), int, "num_frames", where)
    if fps is not None and fps <= 0:
        raise VadpipeError(f"{where}: fps must be positive, got {fps}")
    if num_frames is not None:
        if num_frames <= 0:
            raise VadpipeError(f"{where}: num_frames must be positive, got {num_frames}")
        last = max(intervals, key=lambda iv: iv.end, default=None)
        if last is not None and last.end > num_frames:
            raise VadpipeError(f"{where}: interval {last} ends past num_frames={num_frames}")
    scene = (row.get("scene") or "").strip() or None
    return VideoEntry(
        video_id=video_id,
        path=_resolve(row["path"].strip(), base),
        split=split,
        label=label,
        intervals=intervals,
        mask_path=_resolve(mask, base) if mask else None,
        fps=fps,
        num_frames=num_frames,
        scene=scene,
    )


def _optional_number(value, kind, name, where):
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
        if kind is int:
            if number != int(number):
                raise ValueError
            return int(number)
        return number
    except ValueError:
        raise VadpipeError(f"{where}: {name} must be a number, got {value!r}") from None


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _row_from_entry(e: VideoEntry) -> dict:
    return {
        "video_id": e.video_id,
        "path": e.path,
        "split": e.split,
        "label": e.label,
        "anomaly_intervals": format_intervals(e.intervals),
        "mask_path": e.mask_path or "",
        "fps": "" if e.fps is None else repr(float(e.fps)),
        "num_frames": "" if e.num_frames is None else str(int(e.num_frames)),
        "scene": e.scene or "",
    }
