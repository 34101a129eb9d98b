"""Stage 1: decode, sample, encode, write -- once per (encoder, video).

``featurize(manifest, cache, config)`` walks the manifest's videos (one shard of them) and
skips those already done under the encoder key. The others are decoded, sampled, resized
and cropped in worker processes (:mod:`vadpipe.featurize.decode`), overlapped with the
encoder in this process, which normalises batches on the model's device, encodes them
and writes each video's group when its last frame is in. Memory stays flat in video
length: frames stream through, only the (small) embeddings of a video are held.

With ``objects`` (:class:`~vadpipe.objects.ObjectsConfig`), the decode workers also detect,
track and crop the objects of every sampled frame; their crops are encoded by the same model
in batches of their own and written as the video's objects group, under the key
``ENCODER_KEY+DETECTOR`` (kind ``objects``), beside its frame group. A video is to do while
either group is not done; a rerun encodes only what is missing.

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
from vadpipe.encoders.preprocessing import CROPS
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
from vadpipe.objects import OBJECTS, ObjectsConfig


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
    crop: str | None = None  # frames: center | full | pad (None: the model's own, center)
    objects: ObjectsConfig | None = None  # also detect, track, crop and embed objects

    def __post_init__(self):
        if self.batch_size < 1:
            raise VadpipeError(f"batch size must be >= 1, got {self.batch_size}")
        if self.crop is not None and self.crop not in CROPS:
            raise VadpipeError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if self.objects is not None and self.sampling.mode == "snippets" and self.sampling.snippet_mean:
            raise VadpipeError("--objects keeps one row per object and frame: it cannot be combined with --snippet-mean")
        if self.objects is not None and dict(self.objects.settings).get("device", "cpu") != "cpu" and self.workers != 0:
            raise VadpipeError("a detector on a GPU runs in the main process: add --workers 0")
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
    if config.crop is not None:
        from dataclasses import replace

        encoder.preprocessing = replace(encoder.preprocessing, crop=config.crop)
    recipe = {
        **encoder.recipe(),
        "precision": precision,
        "sampling": config.sampling.as_dict(),
        "normalised": False,  # rows are the model's output; readers normalise where their method does
        "vadpipe_version": __version__,
    }
    cache_path = shard_cache_path(cache_path, config.shard, config.num_shards)
    cache = FeatureCache(cache_path, mode="a")
    keys = [encoder.key]
    try:
        cache.ensure_encoder(encoder.key, recipe)
        if config.objects is not None:
            keys.append(config.objects.key(encoder.key))
            cache.ensure_encoder(keys[1], {**recipe, "kind": OBJECTS, "clip_key": encoder.key,
                                           "objects": config.objects.recipe()})
        log_path = Path(config.failures_log) if config.failures_log else failures_log_path(cache_path)
        summary = FeaturizeSummary(encoder_key=encoder.key, failures_log=str(log_path))
        todo = videos_to_do(manifest, cache, keys, config.shard, config.num_shards, video_ids, summary)
        _run(todo, encoder, keys, cache, config, summary, log_path, progress)
    finally:
        cache.close()
    return summary


class _InFlight:
    """One video being encoded: its frames and objects batches, and the keys still to write."""

    def __init__(self, keys: list[str]):
        self.keys = keys  # the video's groups not done yet: frame key and/or objects key
        self.frames = VideoBatches()
        self.objects = VideoBatches()
        self.rows: list = []  # ObjectRows without their crops (these are in self.objects)
        self.sampled = 0  # frames sampled (also when the frame group is done already)
        self.objects_failed = False


def _run(todo, encoder, keys, cache, config, summary, log_path, progress) -> None:
    from vadpipe.featurize.decode import Chunk, DecodeJob, Failure

    jobs = [DecodeJob(pos, e.path, e.fps, e.video_id) for pos, e in enumerate(todo)]
    pending: dict[int, _InFlight] = {}
    with run_progress(summary, len(todo), progress) as bar:
        for item in _decode_items(jobs, config, encoder):
            entry = todo[item.pos]
            if item.pos not in pending:
                pending[item.pos] = _InFlight([k for k in keys if not cache.is_done(k, entry.video_id)])
            video = pending[item.pos]
            if isinstance(item, Chunk):
                video.sampled += len(item.frame_index)
                if keys[0] in video.keys:
                    video.frames.add(item.frame_index, item.pts, item.frames)
                    summary.infer_seconds += video.frames.encode(encoder, config.batch_size, final=False, bar=bar)
                if item.objects is not None and item.objects.count and len(keys) > 1 and keys[1] in video.keys:
                    video.objects.add(item.objects.frame_index, item.objects.pts, item.objects.crops)
                    video.rows.append(item.objects._replace(crops=None))
                    summary.infer_seconds += video.objects.encode(encoder, config.batch_size, final=False, bar=bar)
                bar.video(entry.video_id)
                continue
            if isinstance(item, Failure) and item.stage == "objects":  # its frames go on
                if keys[1] in video.keys:  # (a done objects group is never replaced by a failure)
                    video.keys.remove(keys[1])
                    video.objects_failed = True
                    record_failure(cache, keys[1], entry, item.stage, item.reason, summary, log_path, bar)
                continue
            del pending[item.pos]
            if isinstance(item, Failure):
                problems = [(k, item.stage, item.reason) for k in video.keys]
            else:
                for batches in (video.frames, video.objects):
                    summary.infer_seconds += batches.encode(encoder, config.batch_size, final=True, bar=bar)
                problems = _finish(entry, video, item.info, encoder, keys, cache, config)
            for key, stage, reason in problems:
                record_failure(cache, key, entry, stage, reason, summary, log_path, bar)
            if not problems and not video.objects_failed:
                summary.done.append(entry.video_id)
            summary.frames += video.frames.count
            summary.objects += video.objects.count
            bar.advance()


def _decode_items(jobs, config, encoder):
    """Items from the decode workers (processes), or from a thread when ``workers=0``."""
    from vadpipe.featurize.decode import DecodeDataset, keep_as_is, worker_init

    workers = resolve_workers(config.workers, len(jobs))
    if workers == 0:
        return prefetch(iter(DecodeDataset(jobs, config.sampling, encoder.preprocessing, objects=config.objects)),
                        maxsize=8)
    # each worker process decodes with its share of the cores; the encoder keeps one share
    threads = max(1, usable_cores() // (workers + 1))
    dataset = DecodeDataset(jobs, config.sampling, encoder.preprocessing, threads=threads, objects=config.objects)
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


def _finish(entry, video: _InFlight, info, encoder, keys, cache, config) -> list[tuple[str, str, str]]:
    """Write a decoded video's groups still to do; returns ``(key, stage, reason)`` for each
    group that must not be kept instead."""
    problems = _decode_problems(info)
    if problems and not config.allow_partial:
        why = "; ".join(problems) + " (use --allow-partial to keep the decodable frames)"
        return [(k, "decode", why) for k in video.keys]
    if not video.sampled:
        return [(k, "decode", f"no frames sampled (the video has {info['num_frames']} frames)") for k in video.keys]
    attrs = {
        **source_attrs(entry),
        "fps": info["fps"],
        "num_frames": info["num_frames"],
        "num_samples": video.sampled,  # sampled frames (a frame group with pooled snippets: snippets)
        "width": info["width"],
        "height": info["height"],
        "warnings": info["warnings"],
        "partial": bool(problems),
    }
    if keys[0] in video.keys:
        index, pts, emb = video.frames.arrays()
        sampling = config.sampling
        if sampling.mode == "snippets" and sampling.snippet_mean:
            starts = np.asarray(info["snippet_starts"], dtype=np.int64)
            starts = starts[np.isin(starts, index)]
            pts = pts[np.searchsorted(index, starts)]
            index, emb = pool_snippets(index, emb, starts, sampling.snippet_len)
        cache.write_video(keys[0], entry.video_id, index, pts, emb, {**attrs, "num_samples": int(len(index))})
        fault_point("after_video")
    if len(keys) > 1 and keys[1] in video.keys:
        index, pts, emb = video.objects.arrays(encoder.dim)
        empty = {"track_id": np.zeros(0, np.int64), "box": np.zeros((0, 4), np.float32),
                 "det_score": np.zeros(0, np.float32), "label": np.zeros(0, dtype="<U1")}  # a video without objects
        arrays = {name: np.concatenate([getattr(r, name) for r in video.rows]) if video.rows else none
                  for name, none in empty.items()}
        cache.write_video(keys[1], entry.video_id, index, pts, emb, {**attrs, "num_objects": int(len(index))},
                          arrays)
        fault_point("after_video")
    return []


def _decode_problems(info: dict) -> list[str]:
    """Warnings that mean frames are missing (a short stream or corrupt packets)."""
    problems = []
    declared, decoded = info["declared_frames"], info["num_frames"]
    if declared and declared - decoded > max(1, declared // 100):
        problems.append(f"truncated: decoded {decoded} of {declared} frames")
    problems += [w for w in info["warnings"] if "corrupt" in w or "demux stopped" in w]
    return problems
