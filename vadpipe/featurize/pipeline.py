"""Stage 1: decode, sample, encode, write -- once per (encoder, video).

``featurize(manifest, cache, config)`` walks the manifest's videos (one shard of them),
skips those already done under the encoder key, and for each other video decodes frames
sequentially in a background thread (PyAV and the resize release the GIL, so decoding
overlaps the model), keeps the sampled frames, encodes them in batches and writes the
video's group. A video that cannot be read is recorded as failed (in its cache group and
in a JSONL failures log) with a one-line reason, and the run goes on.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vadpipe import __version__
from vadpipe.cache import FeatureCache
from vadpipe.data_manifests.schema import Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.featurize.readers import DecodeError, open_source


@dataclass(frozen=True)
class Sampling:
    """Which decoded frames are encoded. v1: every ``stride``-th frame, starting at 0."""

    stride: int = 1

    def __post_init__(self):
        if self.stride < 1:
            raise VadpipeError(f"stride must be >= 1, got {self.stride}")

    def keep(self, index: int) -> bool:
        return index % self.stride == 0

    def as_dict(self) -> dict:
        return {"mode": "stride", "stride": self.stride, "start": 0}


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
    failures_log: str | None = None  # default: <cache>.failures.jsonl


@dataclass
class FeaturizeSummary:
    encoder_key: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    failures_log: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{len(self.done)} done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed; {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s)"
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
    from vadpipe.featurize.encoders import load_clip, resolve_device

    device = resolve_device(config.device)
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    encoder = load_clip(config.encoder, device=device, precision=precision)
    recipe = {
        **encoder.recipe(),
        "sampling": config.sampling.as_dict(),
        "vadpipe_version": __version__,
    }
    cache = FeatureCache(cache_path, mode="a")
    cache.ensure_encoder(encoder.key, recipe)
    entries = shard_entries(list(manifest), config.shard, config.num_shards)
    if video_ids is not None:
        wanted = set(video_ids)
        entries = [e for e in entries if e.video_id in wanted]
    log_path = Path(config.failures_log) if config.failures_log else failures_log_path(cache_path)
    summary = FeaturizeSummary(encoder_key=encoder.key, failures_log=str(log_path))
    start = time.perf_counter()
    todo = []
    for e in entries:
        (summary.skipped if cache.is_done(encoder.key, e.video_id) else todo).append(e)
    bar = _Progress(len(todo), enabled=progress)
    try:
        for entry in todo:
            bar.video(entry.video_id)
            outcome = _featurize_one(entry, encoder, cache, config, precision, bar.frames)
            if outcome.get("failed"):
                record = {
                    "video_id": entry.video_id,
                    "path": entry.path,
                    "stage": outcome["stage"],
                    "reason": outcome["reason"],
                    "encoder": encoder.key,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                summary.failed.append(record)
                _append_jsonl(log_path, record)
                bar.note(f"failed {entry.video_id}: {outcome['reason']}")
            else:
                summary.done.append(entry.video_id)
                summary.frames += outcome["samples"]
            bar.advance()
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _featurize_one(entry, encoder, cache, config, precision, on_frames) -> dict:
    base_attrs = {"source": _source_stat(entry.path), "manifest_fps": entry.fps}
    try:
        source = open_source(entry.path, fps_hint=entry.fps)
    except DecodeError as exc:
        return _fail(cache, encoder.key, entry, "open", str(exc), base_attrs)
    pre = encoder.preprocessing
    frames = _prefetch(
        ((i, pts, pre.resize_crop(rgb)) for i, pts, rgb in source.iter_frames(config.sampling.keep)),
        maxsize=2 * config.batch_size,
    )
    import torch

    indices, times, embs = [], [], []
    t_infer = 0.0
    t0 = time.perf_counter()
    try:
        batch_idx, batch_pts, batch_img = [], [], []
        for i, pts, img in frames:
            batch_idx.append(i)
            batch_pts.append(pts)
            batch_img.append(img)
            if len(batch_img) == config.batch_size:
                t_infer += _flush(encoder, batch_img, embs)
                indices += batch_idx
                times += batch_pts
                on_frames(len(batch_idx))
                batch_idx, batch_pts, batch_img = [], [], []
        if batch_img:
            t_infer += _flush(encoder, batch_img, embs)
            indices += batch_idx
            times += batch_pts
            on_frames(len(batch_idx))
    except DecodeError as exc:
        return _fail(cache, encoder.key, entry, "decode", str(exc), base_attrs)
    except torch.cuda.OutOfMemoryError:
        return _fail(cache, encoder.key, entry, "encode", "out of GPU memory (lower --batch-size)", base_attrs)
    problems = _decode_problems(source)
    if problems and not config.allow_partial:
        return _fail(cache, encoder.key, entry, "decode", "; ".join(problems) + " (use --allow-partial to keep)", base_attrs)
    info = source.info
    attrs = {
        **base_attrs,
        "fps": info.fps,
        "num_frames": int(source.num_frames),
        "num_samples": len(indices),
        "width": info.width,
        "height": info.height,
        "warnings": list(source.warnings),
        "precision": precision,
        "seconds": {"total": round(time.perf_counter() - t0, 3), "infer": round(t_infer, 3)},
    }
    cache.write_video(
        encoder.key, entry.video_id, np.asarray(indices), np.asarray(times), np.concatenate(embs), attrs
    )
    return {"samples": len(indices)}


def _decode_problems(source) -> list[str]:
    """Warnings that mean frames are missing (a short stream or corrupt packets)."""
    problems = []
    declared = source.info.declared_frames
    if declared and declared - source.num_frames > max(1, declared // 100):
        problems.append(f"truncated: decoded {source.num_frames} of {declared} frames")
    problems += [w for w in source.warnings if "corrupt" in w or "demux stopped" in w]
    return problems


def _flush(encoder, batch_img, embs) -> float:
    import torch

    t = time.perf_counter()
    embs.append(encoder.encode_images(torch.stack(batch_img)))
    return time.perf_counter() - t


def _fail(cache, key, entry, stage, reason, attrs) -> dict:
    cache.mark_failed(key, entry.video_id, stage, reason, attrs)
    return {"failed": True, "stage": stage, "reason": reason}


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


def summary_dict(summary: FeaturizeSummary) -> dict:
    d = asdict(summary)
    d["frames_per_second"] = summary.frames_per_second
    return d


