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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vadpipe import __version__
from vadpipe._faults import fault_point
from vadpipe.cache import FeatureCache, shard_cache_path
from vadpipe.cache.failures import failures_log_path, record_failure, source_attrs
from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError
from vadpipe.featurize.batches import VideoBatches
from vadpipe.featurize.runtime import (
    FeaturizeSummary,
    prefetch,
    resolve_workers,
    run_progress,
    usable_cores,
    videos_to_do,
)
from vadpipe.featurize.sampling import Sampling, pool_snippets


@dataclass(frozen=True)
class FeaturizeConfig:
    encoder: str
    sampling: Sampling = field(default_factory=Sampling)
    device: str = "auto"
    precision: str = "auto"  # fp16 on CUDA; bf16 on CPUs with native bf16, else fp32
    batch_size: int = 64
    shard: int = 0
    num_shards: int = 1
    allow_partial: bool = False  # keep videos whose decode came up short or hit corrupt packets
    workers: int | None = None  # decode processes; None = one per spare core; 0 = a thread
    failures_log: str | None = None  # default: <cache>.failures.jsonl

    def __post_init__(self):
        if self.batch_size < 1:
            raise VadpipeError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise VadpipeError(f"workers must be >= 0 (0 = decode in a thread), got {self.workers}")


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
    from vadpipe.encoders import load_clip, resolve_device, resolve_precision

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    encoder = load_clip(config.encoder, device=device, precision=precision)
    recipe = {
        **encoder.recipe(),
        "precision": precision,
        "sampling": config.sampling.as_dict(),
        "normalised": False,  # rows are the model's output; readers normalise where their method does
        "vadpipe_version": __version__,
    }
    cache_path = shard_cache_path(cache_path, config.shard, config.num_shards)
    cache = FeatureCache(cache_path, mode="a")
    try:
        cache.ensure_encoder(encoder.key, recipe)
        log_path = Path(config.failures_log) if config.failures_log else failures_log_path(cache_path)
        summary = FeaturizeSummary(encoder_key=encoder.key, failures_log=str(log_path))
        todo = videos_to_do(manifest, cache, encoder.key, config.shard, config.num_shards, video_ids, summary)
        _run(todo, encoder, cache, config, summary, log_path, progress)
    finally:
        cache.close()
    return summary


def _run(todo, encoder, cache, config, summary, log_path, progress) -> None:
    from vadpipe.featurize.decode import Chunk, DecodeJob, Failure

    jobs = [DecodeJob(pos, e.path, e.fps) for pos, e in enumerate(todo)]
    pending: dict[int, VideoBatches] = {}
    with run_progress(summary, len(todo), progress) as bar:
        for item in _decode_items(jobs, config, encoder):
            entry = todo[item.pos]
            if isinstance(item, Chunk):
                video = pending.setdefault(item.pos, VideoBatches())
                video.add(item.frame_index, item.pts, item.frames)
                summary.infer_seconds += video.encode(encoder, config.batch_size, final=False, bar=bar)
                bar.video(entry.video_id)
                continue
            video = pending.pop(item.pos, VideoBatches())
            if isinstance(item, Failure):
                problem = item.stage, item.reason
            else:
                summary.infer_seconds += video.encode(encoder, config.batch_size, final=True, bar=bar)
                problem = _finish(entry, video, item.info, encoder, cache, config)
            if problem:
                record_failure(cache, encoder.key, entry, *problem, summary, log_path, bar)
            else:
                summary.done.append(entry.video_id)
                summary.frames += video.count
            bar.advance()


def _decode_items(jobs, config, encoder):
    """Items from the decode workers (processes), or from a thread when ``workers=0``."""
    from vadpipe.featurize.decode import DecodeDataset, keep_as_is, worker_init

    workers = resolve_workers(config.workers, len(jobs))
    if workers == 0:
        return prefetch(iter(DecodeDataset(jobs, config.sampling, encoder.preprocessing)), maxsize=8)
    # each worker process decodes with its share of the cores; the encoder keeps one share
    threads = max(1, usable_cores() // (workers + 1))
    dataset = DecodeDataset(jobs, config.sampling, encoder.preprocessing, threads=threads)
    from torch.utils.data import DataLoader

    return iter(
        DataLoader(
            dataset,
            batch_size=None,
            collate_fn=keep_as_is,
            num_workers=workers,
            worker_init_fn=worker_init,
            pin_memory=encoder.device.startswith("cuda"),
            prefetch_factor=4,
        )
    )


def _finish(entry, video, info, encoder, cache, config) -> tuple[str, str] | None:
    """Write a decoded video; returns ``(stage, reason)`` instead when it must not be kept."""
    problems = _decode_problems(info)
    if problems and not config.allow_partial:
        return "decode", "; ".join(problems) + " (use --allow-partial to keep the decodable frames)"
    if not video.count:
        return "decode", f"no frames sampled (the video has {info['num_frames']} frames)"
    index, pts, emb = video.arrays()
    sampling = config.sampling
    if sampling.mode == "snippets" and sampling.snippet_mean:
        starts = np.asarray(info["snippet_starts"], dtype=np.int64)
        starts = starts[np.isin(starts, index)]
        pts = pts[np.searchsorted(index, starts)]
        index, emb = pool_snippets(index, emb, starts, sampling.snippet_len)
    attrs = {
        **source_attrs(entry),
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


def _decode_problems(info: dict) -> list[str]:
    """Warnings that mean frames are missing (a short stream or corrupt packets)."""
    problems = []
    declared, decoded = info["declared_frames"], info["num_frames"]
    if declared and declared - decoded > max(1, declared // 100):
        problems.append(f"truncated: decoded {decoded} of {declared} frames")
    problems += [w for w in info["warnings"] if "corrupt" in w or "demux stopped" in w]
    return problems
