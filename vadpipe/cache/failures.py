"""The failures log: videos that could not be featurized, captioned or imported.

A failure is recorded in three places: the video's own cache group (``failed: {stage,
reason}``, never a shared attribute), the run's summary, and a JSONL file next to the cache,
``CACHE.failures.jsonl`` (one line per failure: video_id, path, stage, reason, encoder,
time). featurize, the captioner and ``cache import`` all write it the same way.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def failures_log_path(cache_path: str | Path) -> Path:
    """``CACHE.failures.jsonl`` next to the cache."""
    p = Path(cache_path)
    return p.with_name(p.name + ".failures.jsonl")


def source_attrs(entry) -> dict:
    """What every video group records about its source: the file's path, size and mtime
    (so a changed source can be told), and the manifest's fps hint."""
    try:
        st = os.stat(entry.path)
        stat = {"path": str(entry.path), "size": st.st_size, "mtime": st.st_mtime}
    except OSError:
        stat = {"path": str(entry.path), "size": None, "mtime": None}
    return {"source": stat, "manifest_fps": entry.fps}


def record_failure(cache, key: str, entry, stage: str, reason: str, summary, log_path: Path, bar=None) -> None:
    """A video that cannot be done: in its cache group (unless ``cache`` is None), the
    summary's ``failed`` list, the JSONL log, and the progress bar (if any)."""
    if cache is not None:
        cache.mark_failed(key, entry.video_id, stage, reason, source_attrs(entry))
    record = {
        "video_id": entry.video_id,
        "path": entry.path,
        "stage": stage,
        "reason": reason,
        "encoder": key,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    summary.failed.append(record)
    append_jsonl(log_path, record)
    if bar is not None:
        bar.note(f"failed {entry.video_id}: {reason}")


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:  # one short append: atomic enough across shards
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
