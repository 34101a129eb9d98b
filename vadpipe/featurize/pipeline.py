"""Stage 1: decode, sample, encode, write -- once per (encoder, video).

``featurize(manifest, cache, config)`` walks the manifest's videos (one shard of them) and
skips those already done under the encoder key. The others are decoded, sampled, resized
and cropped in worker processes (:mod:`vadpipe.featurize.decode`), overlapped with the
encoder in this process, which normalises batches on the model's device, encodes them
and writes each video's group when its last frame is in. Memory stays flat in video
length: frames stream through, only the (small) embeddings of a video are held.

A video that cannot be read is recorded as failed (in its cache group and in a JSONL
failures log) with a one-line reason, and the run goes on. Output is deterministic: a
video's frames are always encoded in the same batches, and nothing run-dependent (times,
hosts) is written into the cache, so an interrupted and resumed run gives the same bytes
as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vadpipe import __version__
from vadpipe.cache import FeatureCache, fault_point, shard_cache_path
from vadpipe.data_manifests.schema import Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.featurize.sampling import Sampling, pool_snippets


@dataclass(frozen=True)
class FeaturizeConfig:
    encoder: str
    sampling: Sampling = field(default_factory=Sampling)
    device: str = "auto"
    precision: str = "auto"  # fp16 on CUDA, fp32 on CPU
    batch_size: int = 64
    shard: int = 0
    num_shards: int = 1
    allow_partial: bool = False  # keep videos whose decode came up short or hit corrupt packets
    workers: int | None = None  # decode processes; None = one per spare core; 0 = a thread

    def __post_init__(self):
        if self.batch_size < 1:
            raise VadpipeError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise VadpipeError(f"workers must be >= 0 (0 = decode in a thread), got {self.workers}")
    failures_log: str | None = None  # default: <cache>.failures.jsonl


@dataclass
class FeaturizeSummary:
    encoder_key: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    infer_seconds: float = 0.0
    failures_log: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{len(self.done)} done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed; {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s; encoder busy {self.infer_seconds:.1f} s)"
        )


def shard_entries(entries: list[VideoEntry], shard: int, num_shards: int) -> list[VideoEntry]:
    """Deterministic round-robin partition of the manifest order."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise VadpipeError(f"bad shard {shard} of {num_shards} (need 0 <= shard < num_shards)")
    return [e for i, e in enumerate(entries) if i % num_shards == shard]


def failures_log_path(cache_path: str | Path) -> Path:
    p = Path(cache_path)
    return p.with_name(p.name + ".failures.jsonl")


def featurize(
    manifest: Manifest,
    cache_path: str | Path,
    config: FeaturizeConfig,
    progress: bool = False,
    video_ids: list[str] | None = None,
) -> FeaturizeSummary:
    """Featurize one shard of ``manifest`` into ``cache_path``; returns a summary.

    With an HDF5 cache and several shards, shard i writes its own file
    (:func:`vadpipe.cache.shard_cache_path`); ``vadpipe cache merge`` joins them.
    """
    from vadpipe.featurize.encoders import load_clip, resolve_device, resolve_precision

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    encoder = load_clip(config.encoder, device=device, precision=precision)
    recipe = {
        **encoder.recipe(),
        "precision": precision,
        "sampling": config.sampling.as_dict(),
        "vadpipe_version": __version__,
    }
    cache_path = shard_cache_path(cache_path, config.shard, config.num_shards)
    cache = FeatureCache(cache_path, mode="a")
    try:
        cache.ensure_encoder(encoder.key, recipe)
        entries = shard_entries(list(manifest), config.shard, config.num_shards)
        if video_ids is not None:
            wanted = set(video_ids)
            entries = [e for e in entries if e.video_id in wanted]
        log_path = Path(config.failures_log) if config.failures_log else failures_log_path(cache_path)
        summary = FeaturizeSummary(encoder_key=encoder.key, failures_log=str(log_path))
        done = {e.video_id for e in entries if cache.is_done(encoder.key, e.video_id)}
        todo = [e for e in entries if e.video_id not in done]
        summary.skipped = [e.video_id for e in entries if e.video_id in done]
        _run(todo, encoder, cache, config, precision, summary, log_path, progress)
    finally:
        cache.close()
    return summary


def _run(todo, encoder, cache, config, precision, summary, log_path, progress) -> None:
    from vadpipe.featurize.decode import DecodeJob

    start = time.perf_counter()
    jobs = [DecodeJob(pos, e.path, e.fps) for pos, e in enumerate(todo)]
    items = _decode_items(jobs, config, encoder)
    pending: dict[int, _VideoBatches] = {}
    bar = _Progress(len(todo), enabled=progress)

    def fail(entry, stage, reason):
        record_failure(cache, encoder.key, entry, stage, reason, summary, log_path, bar)

    try:
        for item in items:
            kind, pos = item[0], int(item[1])
            entry = todo[pos]
            if kind == "frames":
                video = pending.setdefault(pos, _VideoBatches())
                video.add(np.asarray(item[2]), np.asarray(item[3]), item[4])
                summary.infer_seconds += video.encode(encoder, config.batch_size, final=False, bar=bar)
                bar.video(entry.video_id)
                continue
            video = pending.pop(pos, _VideoBatches())
            if kind == "error":
                fail(entry, item[2], item[3])
            else:
                summary.infer_seconds += video.encode(encoder, config.batch_size, final=True, bar=bar)
                problem = _finish(entry, video, item[2], encoder, cache, config, precision)
                if problem:
                    fail(entry, "decode", problem)
                else:
                    summary.done.append(entry.video_id)
                    summary.frames += video.count
            bar.advance()
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start


def record_failure(cache, key, entry, stage, reason, summary, log_path, bar=None) -> None:
    """A video that cannot be done: in its cache group (unless ``cache`` is None), the summary,
    the JSONL log, the progress bar (if any)."""
    if cache is not None:
        cache.mark_failed(key, entry.video_id, stage, reason, _base_attrs(entry))
    record = {
        "video_id": entry.video_id,
        "path": entry.path,
        "stage": stage,
        "reason": reason,
        "encoder": key,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    summary.failed.append(record)
    _append_jsonl(log_path, record)
    if bar is not None:
        bar.note(f"failed {entry.video_id}: {reason}")


def _decode_items(jobs, config, encoder):
    """Items from the decode workers (processes), or from a thread when ``workers=0``."""
    from vadpipe.featurize.decode import DecodeDataset, worker_init

    workers = resolve_workers(config.workers, len(jobs))
    if workers == 0:
        return _prefetch(iter(DecodeDataset(jobs, config.sampling, encoder.preprocessing)), maxsize=8)
    # each worker process decodes with its share of the cores; the encoder keeps one share
    threads = max(1, usable_cores() // (workers + 1))
    dataset = DecodeDataset(jobs, config.sampling, encoder.preprocessing, threads=threads)
    from torch.utils.data import DataLoader

    return iter(
        DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            worker_init_fn=worker_init,
            pin_memory=encoder.device.startswith("cuda"),
            prefetch_factor=4,
        )
    )


def _libc_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _libc_malloc_trim() if os.name == "posix" else None


def release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``).

    Each batch allocates and frees activations of a few MB; glibc's adaptive mmap threshold
    then serves them from the heap, which fragments, and the process grows with video
    length. Trimming after every batch keeps peak memory flat at no measurable cost
    (a fixed ``M_MMAP_THRESHOLD`` does too, but costs ~30% throughput in page faults).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def usable_cores() -> int:
    """The cores this process may run on (a Slurm allocation or ``taskset``), not the node's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 2


def resolve_workers(workers: int | None, num_videos: int) -> int:
    """``None``: one decode process per spare core (at most 8), none for a single video."""
    if workers is None:
        workers = min(8, max(1, usable_cores() - 1))
    return max(0, min(int(workers), num_videos))


class _VideoBatches:
    """One video's sampled frames, encoded in batches of a fixed size from its first sample
    (so a video's embeddings never depend on which other videos were in flight)."""

    def __init__(self):
        self.index: list[np.ndarray] = []
        self.pts: list[np.ndarray] = []
        self.frames: list = []  # uint8 (b, 3, s, s) tensors not yet encoded
        self.buffered = 0
        self.embs: list[np.ndarray] = []
        self.count = 0

    def add(self, index, pts, frames) -> None:
        self.index.append(index)
        self.pts.append(pts)
        self.frames.append(frames)
        self.buffered += len(index)
        self.count += len(index)

    def encode(self, encoder, batch_size: int, final: bool, bar=None) -> float:
        import torch

        t = time.perf_counter()
        if self.buffered and (final or self.buffered >= batch_size):
            frames = torch.cat(self.frames) if len(self.frames) > 1 else self.frames[0]
            if encoder.device.startswith("cuda") and not frames.is_pinned():
                frames = frames.pin_memory()  # cat() (or decoding in a thread) leaves it unpinned
            n_full = len(frames) if final else (len(frames) // batch_size) * batch_size
            for i in range(0, n_full, batch_size):
                self.embs.append(encoder.encode_images(frames[i : min(i + batch_size, n_full)]))
                release_free_heap()
                if bar is not None:
                    bar.frames(len(self.embs[-1]))  # frames/s moves within a long video too
            rest = frames[n_full:]
            self.frames = [rest] if len(rest) else []
            self.buffered = len(rest)
        return time.perf_counter() - t

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.index), np.concatenate(self.pts), np.concatenate(self.embs)


def _finish(entry, video, info, encoder, cache, config, precision) -> str | None:
    """Write a decoded video; returns a failure reason instead when it must not be kept."""
    problems = _decode_problems(info)
    if problems and not config.allow_partial:
        return "; ".join(problems) + " (use --allow-partial to keep the decodable frames)"
    if not video.count:
        return f"no frames sampled (the video has {info['num_frames']} frames)"
    index, pts, emb = video.arrays()
    sampling = config.sampling
    if sampling.mode == "snippets" and sampling.snippet_mean:
        starts = np.asarray(info["snippet_starts"], dtype=np.int64)
        starts = starts[np.isin(starts, index)]
        pts = pts[np.searchsorted(index, starts)]
        index, emb = pool_snippets(index, emb, starts, sampling.snippet_len)
    attrs = {
        **_base_attrs(entry),
        "fps": info["fps"],
        "num_frames": info["num_frames"],
        "num_samples": int(len(index)),
        "width": info["width"],
        "height": info["height"],
        "warnings": info["warnings"],
        "partial": bool(problems),
    }
    cache.write_video(encoder.key, entry.video_id, index, pts, emb, attrs)
    fault_point("after_video")
    return None


def _base_attrs(entry) -> dict:
    return {"source": _source_stat(entry.path), "manifest_fps": entry.fps}


def _decode_problems(info: dict) -> list[str]:
    """Warnings that mean frames are missing (a short stream or corrupt packets)."""
    problems = []
    declared, decoded = info["declared_frames"], info["num_frames"]
    if declared and declared - decoded > max(1, declared // 100):
        problems.append(f"truncated: decoded {decoded} of {declared} frames")
    problems += [w for w in info["warnings"] if "corrupt" in w or "demux stopped" in w]
    return problems


def _source_stat(path: str) -> dict:
    try:
        st = os.stat(path)
        return {"path": str(path), "size": st.st_size, "mtime": st.st_mtime}
    except OSError:
        return {"path": str(path), "size": None, "mtime": None}


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:  # one short append: atomic enough across shards
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


_END = object()


def _prefetch(iterator: Iterator, maxsize: int) -> Iterator:
    """Run ``iterator`` in a thread, ``maxsize`` items ahead; re-raise its error here."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class _Progress:
    """A rich progress bar (videos, frames/s, ETA), or nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self._p = None
        self._frames = 0
        self._t0 = time.perf_counter()
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(
                TextColumn("[bold]featurize[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]} frames/s"),
                TimeRemainingColumn(),
            )
            self._p.start()
            self._task = self._p.add_task("", total=total, fps="-")

    def video(self, video_id: str) -> None:
        if self._p:
            self._p.update(self._task, description=video_id[:30])

    def frames(self, n: int) -> None:
        self._frames += n
        if self._p:
            rate = self._frames / max(time.perf_counter() - self._t0, 1e-9)
            self._p.update(self._task, fps=f"{rate:.1f}")

    def note(self, text: str) -> None:
        if self._p:
            self._p.console.print(text)

    def advance(self) -> None:
        if self._p:
            self._p.advance(self._task)

    def close(self) -> None:
        if self._p:
            self._p.stop()
