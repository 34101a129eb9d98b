"""Which decoded frames are encoded.

Three modes, each recording the source frame index (0-based, decode order) and pts of
every sampled frame:

* ``stride``   -- every k-th frame: 0, k, 2k, ...
* ``fps``      -- a target rate: the first frame at or after each multiple of 1/fps seconds,
  by the frames' own timestamps (so variable-frame-rate files are sampled evenly in time);
* ``snippets`` -- N snippets of F consecutive frames with uniformly spaced starts
  (``round(linspace(0, n - F, N))``), or with ``num=0`` every non-overlapping snippet of F
  frames (the 16-frame snippets of RTFM-style features). With ``mean=True`` the F
  embeddings of a snippet are averaged (the raw mean, as the frames are stored) into one row whose
  ``frame_index`` is the snippet's first frame. Needs the frame count up front: it is
  counted from the container's packets before decoding (cheap: no decoding).

A sampler is built per video (``plan(num_frames)``) and asked frame by frame
(``keep(index, pts)``) while decoding sequentially: no seeking, memory flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vadpipe.errors import VadpipeError

MODES = ("stride", "fps", "snippets")


@dataclass(frozen=True)
class Sampling:
    stride: int = 1  # first, so Sampling(4) means every 4th frame
    mode: str = "stride"
    fps: float | None = None
    num_snippets: int = 0  # 0 = every non-overlapping snippet
    snippet_len: int = 16
    snippet_mean: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise VadpipeError(f"unknown sampling mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.stride < 1:
            raise VadpipeError(f"stride must be >= 1, got {self.stride}")
        if self.mode == "fps" and not (self.fps and self.fps > 0):
            raise VadpipeError("fps sampling needs a positive target fps")
        if self.mode == "snippets" and (self.snippet_len < 1 or self.num_snippets < 0):
            raise VadpipeError("snippets need snippet_len >= 1 and num_snippets >= 0")

    @classmethod
    def parse(cls, stride: int = 1, fps: float | None = None, snippets: str | None = None,
              snippet_mean: bool = False) -> "Sampling":
        """From CLI options: ``--stride K``, ``--fps F``, ``--snippets N:F`` (one of them)."""
        chosen = [name for name, on in (("fps", fps is not None), ("snippets", snippets is not None)) if on]
        if len(chosen) > 1 or (chosen and stride != 1):
            raise VadpipeError("choose one sampling: --stride, --fps or --snippets")
        if fps is not None:
            return cls(mode="fps", fps=float(fps))
        if snippets is not None:
            num, _, length = str(snippets).partition(":")
            try:
                return cls(mode="snippets", num_snippets=int(num), snippet_len=int(length or 16),
                           snippet_mean=snippet_mean)
            except ValueError:
                raise VadpipeError(f"--snippets {snippets!r}: expected N:F, e.g. 32:16 (N=0: all)") from None
        return cls(mode="stride", stride=stride)

    @property
    def needs_length(self) -> bool:
        return self.mode == "snippets"

    def as_dict(self) -> dict:
        if self.mode == "stride":
            return {"mode": "stride", "stride": self.stride, "start": 0}
        if self.mode == "fps":
            return {"mode": "fps", "fps": self.fps}
        return {
            "mode": "snippets",
            "num_snippets": self.num_snippets,
            "snippet_len": self.snippet_len,
            "snippet_mean": self.snippet_mean,
        }

    def plan(self, num_frames: int | None = None) -> "FramePlan":
        return FramePlan(self, num_frames)


class FramePlan:
    """Per-video state of a :class:`Sampling`: ``keep(index, pts)`` in decode order."""

    def __init__(self, sampling: Sampling, num_frames: int | None):
        self.sampling = sampling
        self._next_time = 0.0
        self._wanted: set[int] | None = None
        self.snippet_starts: np.ndarray | None = None
        if sampling.mode == "snippets":
            if not num_frames:
                raise VadpipeError("snippet sampling needs the frame count")
            self.snippet_starts = snippet_starts(num_frames, sampling.num_snippets, sampling.snippet_len)
            F = min(sampling.snippet_len, num_frames)
            self._wanted = {int(s) + j for s in self.snippet_starts for j in range(F)}

    def keep(self, index: int, pts: float) -> bool:
        mode = self.sampling.mode
        if mode == "stride":
            return index % self.sampling.stride == 0
        if mode == "snippets":
            return index in self._wanted
        if math.isnan(pts):
            raise VadpipeError("fps sampling needs frame timestamps (give the manifest an fps for frame folders)")
        if pts + 1e-6 >= self._next_time:
            step = 1.0 / self.sampling.fps
            # the next boundary strictly after this frame's time
            self._next_time = (math.floor(pts / step + 1e-6) + 1) * step
            return True
        return False


def snippet_starts(num_frames: int, num_snippets: int, snippet_len: int) -> np.ndarray:
    """Start frames of the snippets (see the module docstring)."""
    F = min(snippet_len, num_frames)
    if num_snippets == 0:
        return np.arange(0, num_frames - F + 1, F, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, num_frames - F, num_snippets)).astype(np.int64))


def pool_snippets(frame_index: np.ndarray, emb: np.ndarray, starts: np.ndarray, snippet_len: int):
    """Mean of each snippet's frame embeddings: ``(starts, float16[N, D])``."""
    rows = []
    pos = {int(f): i for i, f in enumerate(frame_index)}
    for s in starts:
        idx = [pos[f] for f in range(int(s), int(s) + snippet_len) if f in pos]
        rows.append(emb[idx].astype(np.float32).mean(axis=0))
    return np.asarray(starts, dtype=np.int64), np.stack(rows).astype(np.float16)
