"""Frame sources: a video file decoded with PyAV, or a folder of images.

Both yield ``(frame_index, pts_seconds, rgb uint8[H, W, 3])`` for the frames the sampler
keeps, decoding sequentially (sequential decode beat seeking for stride sampling) and
holding one frame at a time, so memory does not grow with video length.

A source counts every decoded frame, so after iteration ``num_frames`` is the true
decoded length (container headers are often wrong, e.g. AVI). Decoding problems raise
:class:`DecodeError` with a one-line reason; a stream that ends early compared to what its
container declares is reported, not silently accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from vadpipe.data_manifests.media import image_files
from vadpipe.errors import one_line

Keep = Callable[[int, float], bool]  # (frame index, pts seconds) -> sample it?
Frame = tuple[int, float, np.ndarray]


class DecodeError(Exception):
    """A video could not be (fully) decoded; ``str(err)`` is the one-line reason."""


@dataclass
class SourceInfo:
    fps: float | None
    width: int | None
    height: int | None
    declared_frames: int | None  # what the container claims; None when unknown


class FrameSource:
    """Base: ``iter_frames(keep)`` yields the kept frames; ``num_frames`` counts all decoded."""

    info: SourceInfo
    num_frames: int = 0
    warnings: list[str]

    def iter_frames(self, keep: Keep) -> Iterator[Frame]:  # pragma: no cover
        raise NotImplementedError


class PyAVSource(FrameSource):
    """Any container/codec FFmpeg decodes. Corrupt packets are skipped and counted.

    ``threads``: FFmpeg decoding threads (0: FFmpeg's choice, one per core). Decode worker
    processes pass their share of the cores, so workers and the encoder do not fight over
    them; the decoded frames are the same for any thread count.
    """

    def __init__(self, path: str | Path, fps_hint: float | None = None, threads: int = 0):
        import av  # heavy import kept local: heads never import PyAV

        self.path = Path(path)
        self.warnings = []
        if not self.path.exists():
            raise DecodeError("file not found")
        if self.path.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        try:
            self._container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise DecodeError(f"not a readable video ({_av_reason(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError("no video stream (audio-only or not a video)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = int(threads)
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate or fps_hint
        fps = float(rate) if rate else None
        declared = int(stream.frames) if stream.frames and stream.frames > 0 else None
        self.info = SourceInfo(
            fps=fps,
            width=stream.codec_context.width or None,
            height=stream.codec_context.height or None,
            declared_frames=declared,
        )

    def count_frames(self) -> int:
        """Frames in the stream, counted from its packets without decoding (fast)."""
        import av

        with av.open(str(self.path), mode="r", metadata_errors="ignore") as c:
            try:
                return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
            except av.FFmpegError:
                return 0

    def iter_frames(self, keep: Keep) -> Iterator[Frame]:
        import av
        from av.video.reformatter import VideoReformatter

        # one converter for the whole stream: frame.to_ndarray() builds a new swscale context
        # per frame, which costs 5x the conversion itself (same pixels either way)
        to_rgb = VideoReformatter()
        stream, tb = self._stream, self._stream.time_base
        fps = self.info.fps
        index = 0
        bad_packets = 0
        first_pts = None
        try:
            packets = self._container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    self.warnings.append(f"demux stopped at frame {index}: {_av_reason(exc)}")
                    break
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    bad_packets += 1
                    continue
                for frame in frames:
                    pts = _frame_time(frame, tb, index, fps)
                    if first_pts is None:
                        first_pts = pts
                    elif bad_packets and fps and math.isfinite(pts):
                        # frames were lost: place the next ones by their timestamps
                        index = max(index, int(round((pts - first_pts) * fps)))
                    if keep(index, pts):
                        yield index, pts, to_rgb.reformat(frame, format="rgb24").to_ndarray()
                    index += 1
        finally:
            self.num_frames = index
            self._container.close()
        if bad_packets:
            self.warnings.append(f"{bad_packets} corrupt packet(s) skipped (later frames placed by timestamp)")
        if index == 0:
            raise DecodeError("no decodable frames")
        declared = self.info.declared_frames
        if declared and index < declared:
            self.warnings.append(f"decoded {index} of {declared} frames the container declares")


class FolderSource(FrameSource):
    """A folder of images (``.jpg``, ``.png``, ``.tif``, ...) in numeric file-name order."""

    def __init__(self, path: str | Path, fps_hint: float | None = None):
        self.path = Path(path)
        self.warnings = []
        if not self.path.exists():
            raise DecodeError("folder not found")
        self.files = image_files(self.path)
        if not self.files:
            raise DecodeError("empty frame folder (no .jpg/.png/.tif images)")
        self.info = SourceInfo(fps=fps_hint, width=None, height=None, declared_frames=len(self.files))

    def count_frames(self) -> int:
        return len(self.files)

    def iter_frames(self, keep: Keep) -> Iterator[Frame]:
        from PIL import Image, UnidentifiedImageError

        fps = self.info.fps
        for index, file in enumerate(self.files):
            self.num_frames = index + 1
            pts = index / fps if fps else math.nan
            if not keep(index, pts):
                continue
            try:
                with Image.open(file) as img:
                    rgb = np.array(_to_rgb(img))  # writable copy
            except (UnidentifiedImageError, OSError) as exc:
                raise DecodeError(f"unreadable image {file.name} ({exc})") from None
            if self.info.width is None:
                self.info.height, self.info.width = rgb.shape[:2]
            yield index, pts, rgb


def open_source(path: str | Path, fps_hint: float | None = None, threads: int = 0) -> FrameSource:
    """A :class:`FolderSource` for a directory, else a :class:`PyAVSource` (``threads``:
    FFmpeg decoding threads, 0 = FFmpeg's choice)."""
    p = Path(path)
    if p.is_dir():
        return FolderSource(p, fps_hint)
    return PyAVSource(p, fps_hint, threads)


def _to_rgb(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        from PIL import Image

        img = Image.fromarray((arr * (255.0 / hi)).astype(np.uint8))
    return img.convert("RGB")


def _frame_time(frame, time_base, index: int, fps: float | None) -> float:
    if frame.pts is not None and time_base is not None:
        return float(frame.pts * time_base)
    return index / fps if fps else math.nan


def _av_reason(exc: Exception) -> str:
    return one_line(getattr(exc, "strerror", None) or exc, 200)
