"""Writers of small test videos with PyAV: the cases a featurizer must survive."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write(path, frames, codec="mpeg4", pix_fmt="yuv420p", rate=25, pts_ms=None, options=None) -> Path:
    """Encode ``uint8[T, H, W, 3]``; ``pts_ms`` gives each frame's time (variable frame rate)."""
    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if options:
            s.options = options
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, i * 1024
            for p in s.encode(af):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def with_garbage(src, dst, start=0.4, end=0.5, seed=0) -> Path:
    """A copy of ``src`` with random bytes over [start, end) of the file."""
    data = bytearray(Path(src).read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
