"""Decode workers: videos -> chunks of sampled, resized, centre-cropped uint8 frames.

A :class:`DecodeDataset` is a torch ``IterableDataset`` over the videos to featurize; a
``DataLoader`` runs it in worker processes (video i goes to worker i mod n), so decoding
and resizing overlap the encoder in the main process. Each worker decodes its videos
sequentially, one frame in memory at a time, and emits, for the video at position ``pos``
of the run:

* :class:`Chunk` -- sampled frames: their indices, times and the resized, cropped pixels;
* :class:`End` -- the video is complete: decoded length, fps, size, warnings, snippet starts;
* :class:`Failure` -- the video could not be read (stage and one-line reason).

Resize + crop run here, on batched uint8 tensors of the frames of one chunk (torch's uint8
antialias kernel: PIL's algorithm, 0.2-0.4 ms a 320x240 frame), because shipping full frames
(25 MB each at 4K) to the main process or the GPU costs more than the resize.
Normalisation happens on the model's device (:meth:`Preprocessing.normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vadpipe.errors import VadpipeError
from vadpipe.featurize.readers import DecodeError, open_source

CHUNK_FRAMES = 32
CHUNK_BYTES = 256 << 20  # full-resolution frames held before a resize: at most this


class Chunk(NamedTuple):
    pos: int  # the video's position in the run
    frame_index: np.ndarray  # int64[b] source frames
    pts: np.ndarray  # float64[b] their times in seconds
    frames: torch.Tensor  # uint8 (b, 3, s, s), resized and cropped


class End(NamedTuple):
    pos: int
    info: dict  # num_frames, fps, width, height, declared_frames, warnings, snippet_starts


class Failure(NamedTuple):
    pos: int
    stage: str  # "decode" (unreadable) or "sample" (the sampling cannot apply)
    reason: str


def keep_as_is(item):
    """The DataLoader's ``collate_fn``: items cross from the workers unchanged (the default
    would turn the numpy arrays into tensors)."""
    return item


@dataclass(frozen=True)
class DecodeJob:
    pos: int  # position in the run's list of videos
    path: str
    fps_hint: float | None


class DecodeDataset(IterableDataset):
    def __init__(self, jobs: list[DecodeJob], sampling, preprocessing, chunk_frames: int = CHUNK_FRAMES,
                 threads: int = 0):
        self.jobs = jobs
        self.sampling = sampling
        self.preprocessing = preprocessing
        self.chunk_frames = chunk_frames
        self.threads = threads  # FFmpeg threads per video (0: FFmpeg's choice)

    def __iter__(self):
        info = get_worker_info()
        jobs = self.jobs if info is None else self.jobs[info.id :: info.num_workers]
        for job in jobs:
            yield from decode_video(job, self.sampling, self.preprocessing, self.chunk_frames, self.threads)


def decode_video(job: DecodeJob, sampling, preprocessing, chunk_frames: int = CHUNK_FRAMES, threads: int = 0):
    """Generator of the items described in the module docstring, for one video."""
    try:
        source = open_source(job.path, fps_hint=job.fps_hint, threads=threads)
        plan = sampling.plan(source.count_frames() if sampling.needs_length else None)
        chunk: list = []
        nbytes = 0
        for index, pts, rgb in source.iter_frames(plan.keep):
            if chunk and rgb.shape != chunk[-1][2].shape:
                yield _frames_item(job.pos, chunk, preprocessing)  # a size change mid-stream
                chunk, nbytes = [], 0
            chunk.append((index, pts, rgb))
            nbytes += rgb.nbytes
            if len(chunk) >= chunk_frames or nbytes >= CHUNK_BYTES:
                yield _frames_item(job.pos, chunk, preprocessing)
                chunk, nbytes = [], 0
        if chunk:
            yield _frames_item(job.pos, chunk, preprocessing)
    except DecodeError as exc:
        yield Failure(job.pos, "decode", str(exc))
        return
    except VadpipeError as exc:
        yield Failure(job.pos, "sample", str(exc))
        return
    info = source.info
    yield End(
        job.pos,
        {
            "num_frames": int(source.num_frames),
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "declared_frames": info.declared_frames,
            "warnings": list(source.warnings),
            "snippet_starts": None if plan.snippet_starts is None else plan.snippet_starts.tolist(),
        },
    )


def _frames_item(pos: int, chunk: list, preprocessing) -> Chunk:
    index = np.array([c[0] for c in chunk], dtype=np.int64)
    pts = np.array([c[1] for c in chunk], dtype=np.float64)
    frames = torch.from_numpy(np.stack([c[2] for c in chunk]))  # (b H W 3) uint8
    return Chunk(pos, index, pts, preprocessing.resize_crop_batch(frames))


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decode workers: one core each, leave the rest to the model
