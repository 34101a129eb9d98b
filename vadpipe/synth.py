"""A synthetic surveillance scene generator: ground truth by construction.

A fixed camera looks at a footpath (grey band) between two lawns. Normal clips: a few
pedestrians walk along the path at walking speed. Anomalies, each over a known frame
interval:

* ``vehicle``  -- a car drives along the footpath, fast;
* ``intruder`` -- a person walks across the lawn (a forbidden zone);
* ``fire``     -- a flickering orange fire on the lawn;
* ``runner``   -- a pedestrian sprints along the path (speed anomaly).

Everything is drawn with numpy from a seeded RNG, so the same seed gives the same pixels;
videos are written with PyAV (H.264 when the FFmpeg build has it, else MPEG-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.data_manifests.schema import Interval, Manifest, VideoEntry

ANOMALY_KINDS = ("vehicle", "intruder", "fire", "runner")
W, H = 320, 240
PATH_TOP, PATH_BOTTOM = 110, 170


@dataclass
class _Walker:
    x: float
    y: float
    vx: float
    vy: float
    color: tuple[int, int, int]
    size: int = 1


def _background(rng: np.random.Generator) -> np.ndarray:
    img = np.empty((H, W, 3), np.float32)
    img[:] = (70, 140, 60)  # lawn
    img[PATH_TOP:PATH_BOTTOM] = (150, 150, 145)  # footpath
    img[PATH_TOP - 3 : PATH_TOP] = (110, 110, 105)  # kerbs
    img[PATH_BOTTOM : PATH_BOTTOM + 3] = (110, 110, 105)
    img += rng.normal(0, 6, size=img.shape)  # texture
    return np.clip(img, 0, 255).astype(np.uint8)


def _rect(img, x0, y0, x1, y1, color):
    x0, x1 = int(max(0, x0)), int(min(W, x1))
    y0, y1 = int(max(0, y0)), int(min(H, y1))
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = color


def _person(img, x, y, color, scale=1.0):
    h, w = int(26 * scale), int(9 * scale)
    _rect(img, x - w / 2, y - h, x + w / 2, y - h * 0.45, color)  # torso
    _rect(img, x - w / 2, y - h * 0.45, x + w / 2, y, (40, 40, 60))  # legs
    _rect(img, x - w / 3, y - h - 7 * scale, x + w / 3, y - h, (225, 190, 160))  # head


def _car(img, x, y, color):
    _rect(img, x - 30, y - 22, x + 30, y, color)
    _rect(img, x - 18, y - 34, x + 14, y - 22, color)
    _rect(img, x - 15, y - 32, x + 11, y - 24, (180, 210, 230))  # windows
    _rect(img, x - 24, y - 4, x - 14, y + 3, (20, 20, 20))  # wheels
    _rect(img, x + 14, y - 4, x + 24, y + 3, (20, 20, 20))


def _fire(img, x, y, t, rng):
    for k in range(6):
        fh = 18 + 10 * np.sin(0.9 * t + k) + rng.uniform(0, 6)
        fx = x - 15 + 6 * k
        _rect(img, fx, y - fh, fx + 6, y, (255, 120 + 20 * (k % 3), 20))
    _rect(img, x - 10, y - 12, x + 10, y, (255, 220, 60))


def render_clip(
    num_frames: int,
    seed: int,
    anomaly: str | None = None,
    interval: tuple[int, int] | None = None,
) -> np.ndarray:
    """Frames ``uint8[num_frames, H, W, 3]`` of one clip; the anomaly is drawn in ``interval``."""
    if anomaly is not None and anomaly not in ANOMALY_KINDS:
        raise ValueError(f"unknown anomaly kind {anomaly!r} (known: {', '.join(ANOMALY_KINDS)})")
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    colors = [(200, 40, 40), (40, 60, 200), (230, 200, 40), (240, 240, 240), (120, 60, 160)]
    walkers = []
    for _ in range(int(rng.integers(2, 5))):
        direction = rng.choice([-1.0, 1.0])
        walkers.append(
            _Walker(
                x=float(rng.uniform(0, W)),
                y=float(rng.uniform(PATH_TOP + 28, PATH_BOTTOM - 2)),
                vx=float(direction * rng.uniform(0.8, 1.6)),
                vy=0.0,
                color=colors[int(rng.integers(len(colors)))],
            )
        )
    a0, a1 = interval if interval else (num_frames, num_frames)
    frames = np.empty((num_frames, H, W, 3), np.uint8)
    for t in range(num_frames):
        img = bg.copy()
        for wk in walkers:
            wk.x = (wk.x + wk.vx) % (W + 20)
            _person(img, wk.x - 10, wk.y, wk.color)
        if anomaly and a0 <= t < a1:
            u = (t - a0) / max(1, a1 - a0 - 1)  # 0 -> 1 over the interval
            if anomaly == "vehicle":
                _car(img, -40 + u * (W + 80), PATH_BOTTOM - 8, (30, 90, 200))
            elif anomaly == "intruder":
                _person(img, 40 + u * (W - 80), 70 + 10 * np.sin(6 * u), (250, 130, 0), scale=1.2)
            elif anomaly == "fire":
                _fire(img, 0.7 * W, 80, t, rng)
            elif anomaly == "runner":
                x = -20 + u * (W + 40) * 1.0
                _person(img, x, PATH_BOTTOM - 6, (255, 0, 200), scale=1.1)
                _person(img, (x + W / 2) % W, PATH_BOTTOM - 14, (255, 0, 200), scale=1.1)
        frames[t] = img
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode ``uint8[T, H, W, 3]`` frames with PyAV (H.264, else MPEG-4)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"crf": "18", "preset": "veryfast"}
        except (av.FFmpegError, ValueError):
            stream = container.add_stream("mpeg4", rate=fps)
            stream.bit_rate = 4_000_000
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_demo_dataset(
    root: str | Path,
    num_train: int = 4,
    num_test_per_kind: int = 1,
    num_test_normal: int = 1,
    num_frames: int = 150,
    fps: int = 25,
    seed: int = 0,
    num_train_anomalous: int = 0,
) -> Manifest:
    """Write a small synthetic dataset under ``root`` and return (and save) its manifest.

    Train: ``num_train`` normal clips, and ``num_train_anomalous`` clips per anomaly kind
    labelled with the kind and no interval (weak supervision). Test: ``num_test_per_kind`` clips per anomaly kind,
    each anomalous over a contiguous interval of about a third of the clip, plus
    ``num_test_normal`` normal clips. The manifest is written to ``root/manifest.csv``.
    """
    root = Path(root)
    entries = []
    rng = np.random.default_rng(seed)
    for i in range(num_train):
        vid = f"train_{i:03d}"
        write_video(root / "videos" / f"{vid}.mp4", render_clip(num_frames, seed * 1000 + i), fps)
        entries.append(VideoEntry(vid, f"videos/{vid}.mp4", "train", "normal", fps=float(fps), num_frames=num_frames))
    for kind in ANOMALY_KINDS:
        for i in range(num_train_anomalous):
            vid = f"train_{kind}_{i:03d}"
            start = int(rng.integers(num_frames // 5, num_frames // 2))
            frames = render_clip(num_frames, seed * 1000 + 300 + 10 * i + ANOMALY_KINDS.index(kind), kind,
                                 (start, min(num_frames, start + num_frames // 3)))
            write_video(root / "videos" / f"{vid}.mp4", frames, fps)
            entries.append(VideoEntry(vid, f"videos/{vid}.mp4", "train", kind, fps=float(fps), num_frames=num_frames))
    k = 0
    for kind in ANOMALY_KINDS:
        for _ in range(num_test_per_kind):
            vid = f"test_{k:03d}_{kind}"
            start = int(rng.integers(num_frames // 5, num_frames // 2))
            end = min(num_frames, start + num_frames // 3)
            frames = render_clip(num_frames, seed * 1000 + 500 + k, kind, (start, end))
            write_video(root / "videos" / f"{vid}.mp4", frames, fps)
            entries.append(
                VideoEntry(vid, f"videos/{vid}.mp4", "test", kind, (Interval(start, end),), fps=float(fps), num_frames=num_frames)
            )
            k += 1
    for _ in range(num_test_normal):
        vid = f"test_{k:03d}_normal"
        write_video(root / "videos" / f"{vid}.mp4", render_clip(num_frames, seed * 1000 + 500 + k), fps)
        entries.append(VideoEntry(vid, f"videos/{vid}.mp4", "test", "normal", fps=float(fps), num_frames=num_frames))
        k += 1
    manifest = Manifest(entries, meta={"dataset": "vadpipe-synthetic", "seed": seed, "interval_convention": "0-based, end exclusive"})
    manifest.save(root / "manifest.csv")
    return Manifest.load(root / "manifest.csv")
