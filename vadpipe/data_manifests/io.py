"""Manifest files: CSV or JSONL, one row per video, the header (CSV) on the first line.

``pandas.read_csv(path)`` and ``csv.DictReader`` read a vadpipe CSV manifest as it is, and
``pandas.read_json(path, lines=True)`` a JSONL one. What a builder records about the
manifest as a whole -- the dataset, the variant chosen (split, ground truth, end
convention), the standard metrics -- is its ``meta``, kept beside it in
``<manifest>.meta.json`` (``ucf.csv`` -> ``ucf.csv.meta.json``), where those readers never
see it. Copy both files together; a manifest without its meta still loads (``evaluate``
then reports micro AUC as the headline).

Manifests written by vadpipe 0.2 carried the meta inside the file (a first CSV line
``# {...}``, or a JSONL line ``{"_meta": {...}}``); they still load.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vadpipe.data_manifests.schema import (
    _REQUIRED,
    COLUMNS,
    NORMAL,
    SPLITS,
    Manifest,
    VideoEntry,
    check_video_id,
    format_intervals,
    parse_intervals,
)
from vadpipe.errors import VadpipeError, json_error

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_manifest(path: str | Path) -> Manifest:
    """Read a CSV or JSONL manifest and its meta; a bad row raises ``FILE:LINE: what is wrong``."""
    path = Path(path)
    if not path.is_file():
        raise VadpipeError(f"{path}: manifest not found")
    base = path.resolve().parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VadpipeError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    if path.suffix.lower() in JSONL_SUFFIXES:
        rows, meta = _read_jsonl(text, path)
    else:
        rows, meta = _read_csv(text, path)
    meta = {**meta, **_read_meta(path)}  # the file beside it; a 0.2 manifest's own line
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
    return Manifest(entries, meta=meta, source=str(path))


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write CSV (``.csv``) or JSONL (``.jsonl``), header first; ``meta`` goes to
    ``PATH.meta.json`` (removed when there is none, so it never goes stale)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [_row_from_entry(e) for e in manifest.entries]
    if path.suffix.lower() in JSONL_SUFFIXES:
        text = "".join(json.dumps({k: v for k, v in row.items() if v != ""}) + "\n" for row in rows)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    path.write_text(text, encoding="utf-8")
    side = meta_path(path)
    if manifest.meta:
        side.write_text(json.dumps(manifest.meta, indent=2) + "\n", encoding="utf-8")
    elif side.exists():
        side.unlink()
    return path


def meta_path(path: str | Path) -> Path:
    """Where a manifest's meta lives: ``ucf.csv`` -> ``ucf.csv.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _read_meta(path: Path) -> dict:
    side = meta_path(path)
    if not side.is_file():  # a link to a manifest: its meta may sit beside the file itself
        side = meta_path(path.resolve())
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise json_error(side, exc) from None
    if not isinstance(meta, dict):
        raise VadpipeError(f"{side}: manifest meta must be a JSON object")
    return meta


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
        if last is not None and last.end > num_frames:  # the row's own column, named as such
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
