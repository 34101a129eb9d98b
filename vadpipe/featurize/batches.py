"""One video's sampled frames, encoded in batches of a fixed size from its first sample.

Frames arrive from the decode workers in chunks; a video's frames are encoded in batches of
``batch_size`` counted from its own first sample, so a video's embeddings never depend on
which other videos were in flight (a resumed run gives the same bytes as an uninterrupted
one), and only a batch's worth of frames waits in memory.
"""

from __future__ import annotations

import time

import numpy as np

from vadpipe.memory import release_free_heap


class VideoBatches:
    """The chunks of one video not yet encoded, and the embeddings of those that are."""

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
        """Encode every full batch waiting (and, when ``final``, the rest); returns seconds."""
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

    def arrays(self, dim: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices, times and embeddings of every row added (``dim`` shapes an empty result)."""
        if not self.count:
            return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, dim), np.float16)
        return np.concatenate(self.index), np.concatenate(self.pts), np.concatenate(self.embs)
