"""Helpers shared by the benchmark builders: reading official annotation files.

Every reader turns a problem into a one-line :class:`VadpipeError` naming the file and,
where there is one, the line (``path:LINE: what is wrong``). Line numbers are 1-based,
as an editor shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vadpipe.data_manifests.media import IMAGE_SUFFIXES
from vadpipe.data_manifests.schema import Interval, check_within, sort_intervals  # noqa: F401 (re-exported to builders)
from vadpipe.errors import VadpipeError

ANOMALY = "anomaly"
"""Video label of an anomalous video when the benchmark names no classes."""

HALF_OPEN = "0-based frame indices, half-open [start, end)"
"""How every builder stores intervals (the manifest convention of ``schema.py``)."""


def annotation_folder(folder: str | Path, dataset: str) -> Path:
    """The folder holding ``dataset``'s official files; it must exist."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise VadpipeError(f"{path}: {dataset} annotation folder not found")
    return path.resolve()


def annotation_file(folder: Path, name: str) -> Path:
    """``folder/name``, which must be a file (``name`` is the official file name)."""
    path = folder / name
    if not path.is_file():
        raise VadpipeError(f"{path}: annotation file {name} not found")
    return path


def read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line_number, text)`` of every non-blank line, stripped (LF or CRLF, any EOF)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VadpipeError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    return [(no, line.strip()) for no, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_unique_names(path: Path, name_of=lambda text, where: text) -> list[tuple[int, str]]:
    """``(line_number, name)`` per line of a list file; ``name_of(text, where)`` extracts
    the name from a line. A name listed twice is an error naming both lines."""
    seen: dict[str, int] = {}
    out = []
    for no, text in read_lines(path):
        where = f"{path}:{no}"
        name = name_of(text, where)
        if name in seen:
            raise VadpipeError(f"{where}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = no
        out.append((no, name))
    return out


def parse_int(token: str, what: str, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise VadpipeError(f"{where}: {what} must be an integer, got {token!r}") from None


def one_based_inclusive(first: int, last: int, where: str, label: str | None = None) -> Interval:
    """Frames ``first..last`` counted from 1, both ends included -> ``[first-1, last)``."""
    if first < 1 or last < first:
        raise VadpipeError(
            f"{where}: bad 1-based inclusive frame range [{first}, {last}] "
            "(need 1 <= first <= last)"
        )
    return Interval(first - 1, last, label)


def half_open(start: int, end: int, where: str, label: str | None = None) -> Interval:
    """Frames ``[start, end)`` counted from 0, as given."""
    if start < 0 or end <= start:
        raise VadpipeError(
            f"{where}: bad 0-based frame range [{start}, {end}) (need 0 <= start < end)"
        )
    return Interval(start, end, label)


def pick_path(root: Path, *candidates: str) -> Path:
    """``root/candidate`` for the first candidate that exists, else the first candidate.

    Deterministic: the first (documented) layout wins unless only an alternative exists.
    """
    paths = [root / c for c in candidates]
    return next((p for p in paths if p.exists()), paths[0])


def count_frames(path: Path) -> int | None:
    """Number of image files in a frame folder; ``None`` for a file or a missing path."""
    if not path.is_dir():
        return None
    count = sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return count or None


def videos_root(videos: str | Path) -> Path:
    """The videos root as an absolute path (it need not exist: nothing is opened)."""
    return Path(videos).expanduser().resolve()


def benchmark_meta(
    dataset: str,
    annotations: Path,
    videos: Path,
    protocol: Sequence[str],
    source_convention: str,
    **variant,
) -> dict:
    """The manifest ``meta``: which dataset, which variant, which conventions, which metrics.

    ``protocol`` lists the benchmark's standard metrics, headline first
    (names as in ``vadpipe.evaluate``: ``micro_auc``, ``macro_auc``, ``ap``).
    """
    return {
        "builder": "benchmark",
        "dataset": dataset,
        **variant,
        "intervals": HALF_OPEN,
        "source_convention": source_convention,
        "protocol": list(protocol),
        "annotations": str(annotations),
        "videos": str(videos),
    }
