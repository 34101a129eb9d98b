"""What every stage-1 run shares: which videos to do, cores, memory, prefetching, progress.

Both passes over a manifest -- featurize (CLIP) and the captioner (BLIP-2) -- pick their
videos the same way (:func:`videos_to_do`), report the same :class:`FeaturizeSummary`, and
run inside :func:`run_progress` (a rich progress bar and the run's wall time).
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from vadpipe.encoders.device import usable_cores  # noqa: F401  (featurize's name for it)


@dataclass
class FeaturizeSummary:
    """What a featurize or caption run did: videos done, skipped (already done), failed."""

    encoder_key: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    objects: int = 0  # object rows encoded (with --objects)
    seconds: float = 0.0
    infer_seconds: float = 0.0
    failures_log: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{len(self.done)} done, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed; {self.frames} frames"
            + (f" and {self.objects} objects" if self.objects else "")
            + f" in {self.seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s; encoder busy {self.infer_seconds:.1f} s)"
        )


def videos_to_do(manifest, cache, key, shard: int, num_shards: int, video_ids, summary) -> list:
    """The entries of one shard (of ``video_ids`` only, if given) not yet done under ``key``
    (or under any of a list of keys); the done ones go to ``summary.skipped``."""
    keys = [key] if isinstance(key, str) else list(key)
    entries = list(manifest.shard(shard, num_shards))
    if video_ids is not None:
        wanted = set(video_ids)
        entries = [e for e in entries if e.video_id in wanted]
    todo = []
    for e in entries:
        if all(cache.is_done(k, e.video_id) for k in keys):
            summary.skipped.append(e.video_id)
        else:
            todo.append(e)
    return todo


@contextmanager
def run_progress(summary: FeaturizeSummary, total: int, enabled: bool):
    """A progress bar over ``total`` videos; the run's wall time goes to ``summary.seconds``."""
    start = time.perf_counter()
    bar = Progress(total, enabled)
    try:
        yield bar
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start


def resolve_workers(workers: int | None, num_videos: int) -> int:
    """``None``: one decode process per spare core (at most 8), none for a single video."""
    if workers is None:
        workers = min(8, max(1, usable_cores() - 1))
    return max(0, min(int(workers), num_videos))


_END = object()


def prefetch(iterator: Iterator, maxsize: int) -> Iterator:
    """Run ``iterator`` in a thread, ``maxsize`` items ahead; re-raise its error here."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class Progress:
    """A rich progress bar (videos, frames/s, ETA), or nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self._p = None
        self._frames = 0
        self._t0 = time.perf_counter()
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(
                TextColumn("[bold]featurize[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]} frames/s"),
                TimeRemainingColumn(),
            )
            self._p.start()
            self._task = self._p.add_task("", total=total, fps="-")

    def video(self, video_id: str) -> None:
        if self._p:
            self._p.update(self._task, description=video_id[:30])

    def frames(self, n: int) -> None:
        self._frames += n
        if self._p:
            rate = self._frames / max(time.perf_counter() - self._t0, 1e-9)
            self._p.update(self._task, fps=f"{rate:.1f}")

    def note(self, text: str) -> None:
        if self._p:
            self._p.console.print(text)

    def advance(self) -> None:
        if self._p:
            self._p.advance(self._task)

    def close(self) -> None:
        if self._p:
            self._p.stop()
