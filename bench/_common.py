"""Shared helpers of the benchmarks: synthetic long videos written frame by frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from vadpipe.synth import render_clip


def write_long_video(
    path: str | Path, seconds: float, fps: int = 25, seed: int = 0, size: tuple[int, int] | None = None
) -> Path:
    """A synthetic footpath video of any length, written without holding it in memory:
    a 10 s clip is rendered once and looped (the encoder sees the same work per frame).
    ``size`` (width, height): the clip is resized to it (default: the scene's 320x240)."""
    path = Path(path)
    loop = render_clip(10 * fps, seed=seed)  # (250 H W 3)
    if size is not None and tuple(size) != (loop.shape[2], loop.shape[1]):
        from PIL import Image

        loop = np.stack([np.asarray(Image.fromarray(f).resize(tuple(size), Image.BICUBIC)) for f in loop])
    n = int(seconds * fps)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.options = {"preset": "ultrafast", "crf": "23"}
        s.width, s.height, s.pix_fmt = loop.shape[2], loop.shape[1], "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
