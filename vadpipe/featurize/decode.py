"""Decode workers: videos -> chunks of sampled, resized, centre-cropped uint8 frames.

A :class:`DecodeDataset` is a torch ``IterableDataset`` over the videos to featurize; a
``DataLoader`` runs it in worker processes (video i goes to worker i mod n), so decoding
and resizing overlap the encoder in the main process. Each worker decodes its videos
sequentially, one frame in memory at a time, and emits, for the video at position ``pos``
of the run:

* :class:`Chunk` -- sampled frames: their indices, times and the resized, cropped pixels; with
  ``--objects``, also the objects found in them (:class:`~vadpipe.objects.finder.ObjectRows`:
  boxes, tracks, scores, labels and square crops, made here from the full-resolution frame);
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
CHUNK_OBJECTS = 256  # object crops held before a chunk is sent


class Chunk(NamedTuple):
    pos: int  # the video's position in the run
    frame_index: np.ndarray  # int64[b] source frames
    pts: np.ndarray  # float64[b] their times in seconds
    frames: torch.Tensor  # uint8 (b, 3, s, s), resized and cropped
    objects: object = None  # ObjectRows of these frames (with --objects), else None


class End(NamedTuple):
    pos: int
    info: dict  # num_frames, fps, width, height, declared_frames, warnings, snippet_starts


class Failure(NamedTuple):
    pos: int
    stage: str  # "decode" (unreadable), "sample" (the sampling cannot apply): the video ends;
    # "objects" (its detections cannot be read): only its objects fail, its frames go on
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
    video_id: str = ""  # names the video's detections file (objects from file:DIR)


class DecodeDataset(IterableDataset):
    def __init__(self, jobs: list[DecodeJob], sampling, preprocessing, chunk_frames: int = CHUNK_FRAMES,
                 threads: int = 0, objects=None):
        self.jobs = jobs
        self.sampling = sampling
        self.preprocessing = preprocessing
        self.chunk_frames = chunk_frames
        self.threads = threads  # FFmpeg threads per video (0: FFmpeg's choice)
        self.objects = objects  # ObjectsConfig, or None for frames only

    def __iter__(self):
        info = get_worker_info()
        jobs = self.jobs if info is None else self.jobs[info.id :: info.num_workers]
        finder = None
        if self.objects is not None and jobs:
            from vadpipe.objects.finder import ObjectFinder

            finder = ObjectFinder(self.objects, self.preprocessing)  # the detector: once per worker
        for job in jobs:
            yield from decode_video(job, self.sampling, self.preprocessing, self.chunk_frames, self.threads, finder)


def decode_video(job: DecodeJob, sampling, preprocessing, chunk_frames: int = CHUNK_FRAMES, threads: int = 0,
                 finder=None):
    """Generator of the items described in the module docstring, for one video."""
    from vadpipe.objects.detectors import ObjectsError

    try:
        source = open_source(job.path, fps_hint=job.fps_hint, threads=threads)
        plan = sampling.plan(source.count_frames() if sampling.needs_length else None)
        objects = None
        if finder is not None:
            try:
                objects = finder.start(job.video_id)
            except ObjectsError as exc:  # a bad detections file: this video's objects fail, its frames go on
                yield Failure(job.pos, "objects", str(exc))
        chunk: list = []
        rows: list = []
        nbytes = 0
        for index, pts, rgb in source.iter_frames(plan.keep):
            if chunk and rgb.shape != chunk[-1][2].shape:
                yield _frames_item(job.pos, chunk, preprocessing, rows)  # a size change mid-stream
                chunk, rows, nbytes = [], [], 0
            chunk.append((index, pts, rgb))
            nbytes += rgb.nbytes
            if objects is not None:
                rows.append(objects(index, pts, rgb))
            if len(chunk) >= chunk_frames or nbytes >= CHUNK_BYTES or sum(r.count for r in rows) >= CHUNK_OBJECTS:
                yield _frames_item(job.pos, chunk, preprocessing, rows)
                chunk, rows, nbytes = [], [], 0
        if chunk:
            yield _frames_item(job.pos, chunk, preprocessing, rows)
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


def _frames_item(pos: int, chunk: list, preprocessing, rows: list) -> Chunk:
    index = np.array([c[0] for c in chunk], dtype=np.int64)
    pts = np.array([c[1] for c in chunk], dtype=np.float64)
    frames = torch.from_numpy(np.stack([c[2] for c in chunk]))  # (b H W 3) uint8
    objects = None
    if rows:
        from vadpipe.objects.finder import ObjectRows

        objects = ObjectRows.concat(rows)
    return Chunk(pos, index, pts, preprocessing.resize_crop_batch(frames), objects)


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decode workers: one core each, leave the rest to the model
