"""XD-Violence (Wu et al., ECCV 2020): 3954 train / 800 test videos, 6 violence classes.

Files read (official names, in one folder):

* ``audio.list``, ``audio_test.list`` — the official train / test lists, one feature path
  per line (``.../<name>__vggish.npy``); video name = basename minus ``__vggish.npy``.
  The video-level label is in the name: ``..._label_B2-G-0`` (codes, ``0`` = none;
  ``label_A`` = non-violent).
* ``annotations.txt`` — the 500 violent test videos: ``<name> s1 e1 [s2 e2 ...]``, frame
  indices 0-based, ``[s, e)`` (VadCLIP sets ``gt[s:e] = 1``). 14 names end in ``.mp4``.
* ``annotations_multiclasses.txt`` — the same 500 videos: ``<name> <code> s e <code> s e ...``.
  Its intervals carry classes, may overlap each other, and for a few videos differ by a
  frame or more from ``annotations.txt``.
"""

from __future__ import annotations

import re
from pathlib import Path

from vadpipe.data_manifests._annotations import (
    annotation_file,
    annotation_folder,
    benchmark_meta,
    half_open,
    parse_int,
    read_lines,
    read_unique_names,
    sort_intervals,
    videos_root,
)
from vadpipe.data_manifests.schema import NORMAL, Interval, Manifest, VideoEntry, check_video_id
from vadpipe.errors import VadpipeError

CLASS_CODES = {
    "A": NORMAL,
    "B1": "Fighting",
    "B2": "Shooting",
    "B4": "Riot",
    "B5": "Abuse",
    "B6": "CarAccident",
    "G": "Explosion",
}
"""XD-Violence class codes -> vadpipe class names (CamelCase, no spaces)."""

_LABEL_RE = re.compile(r"_label_([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)$")
_FEATURE_SUFFIX = "__vggish.npy"


def build_xd_violence(annotations: str | Path, videos: str | Path) -> Manifest:
    """XD-Violence manifest: official split, name-derived labels, classed test intervals.

    Layout: ``VideoEntry.path = <videos>/<name>.mp4``; ``video_id`` = the name (it keeps
    ``#``, ``=`` and dots; unique over both splits). Frame counts are unknown
    (``num_frames`` None).

    Labels: ``label_A`` -> ``normal``; otherwise the class of the *first* code in the name
    (``label_G-B2-B6`` -> ``Explosion``). Train videos have only this video-level label.

    Test ground truth: the frames are exactly those of ``annotations.txt`` (0-based
    ``[s, e)``, used as is, as VadCLIP's and the authors' ``make_gt.py`` do; a trailing
    ``.mp4`` on a name is stripped). Each interval is cut where ``annotations_multiclasses.txt``
    assigns classes: a piece covered by a classed interval carries that class (pieces of
    different classes may overlap, as in the source); frames no classed interval covers
    carry no class and fall back to the video label. The 300 ``label_A`` test videos are
    normal with no intervals.
    """
    folder = annotation_folder(annotations, "xd_violence")
    root = videos_root(videos)
    train = _read_video_list(annotation_file(folder, "audio.list"))
    test = _read_video_list(annotation_file(folder, "audio_test.list"))
    binary_file = annotation_file(folder, "annotations.txt")
    classed_file = annotation_file(folder, "annotations_multiclasses.txt")
    binary = _read_annotations(binary_file, ("s", "e"))
    classed = _read_annotations(classed_file, ("class", "s", "e"))
    _same_names(binary, classed, binary_file, classed_file)
    shared = set(train) & set(test)
    if shared:
        name = sorted(shared)[0]
        raise VadpipeError(f"{test[name][0]}: {name!r} is in both audio.list and audio_test.list")

    entries = [
        VideoEntry(video_id=name, path=str(root / f"{name}.mp4"), split="train", label=label)
        for name, (_, label) in train.items()
    ]
    for name, (where, label) in test.items():
        intervals: tuple[Interval, ...] = ()
        if name in binary:
            ann_where, pairs = binary.pop(name)
            if label == NORMAL:
                raise VadpipeError(f"{ann_where}: {name!r} is non-violent (label_A) but annotated")
            intervals = _classify(
                _binary_intervals(pairs, ann_where), _classed_intervals(*classed[name])
            )
        elif label != NORMAL:
            raise VadpipeError(
                f"{where}: violent test video {name!r} has no line in {binary_file.name}"
            )
        entries.append(
            VideoEntry(
                video_id=name,
                path=str(root / f"{name}.mp4"),
                split="test",
                label=label,
                intervals=intervals,
            )
        )
    if binary:
        name, (ann_where, _) = next(iter(binary.items()))
        raise VadpipeError(f"{ann_where}: {name!r} is annotated but not in audio_test.list")

    meta = benchmark_meta(
        "xd_violence",
        folder,
        root,
        protocol=["ap"],
        source_convention=(
            "annotations.txt pairs are 0-based [s, e) (VadCLIP gt[s:e]=1), used as is; "
            "classes from annotations_multiclasses.txt within those frames"
        ),
        split="official",
        end_offset=0,
        video_label="class of the first code in the name",
        class_codes=CLASS_CODES,
    )
    return Manifest(entries, meta=meta)


def _name_label(name: str, where: str) -> str:
    """The video label from the ``_label_<codes>`` suffix of a name: first code's class."""
    m = _LABEL_RE.search(name)
    if not m:
        raise VadpipeError(f"{where}: video name {name!r} has no _label_<codes> suffix")
    codes = [c for c in m.group(1).split("-") if c != "0"]
    unknown = [c for c in codes if c not in CLASS_CODES]
    if not codes or unknown:
        raise VadpipeError(
            f"{where}: unknown class code(s) {', '.join(unknown) or '(none)'} in {name!r} "
            f"(known: {', '.join(CLASS_CODES)})"
        )
    return CLASS_CODES[codes[0]]


def _read_video_list(path: Path) -> dict[str, tuple[str, str]]:
    """``{name: (where, label)}`` in file order from a ``__vggish.npy`` feature list."""

    def video_name(text: str, where: str) -> str:
        base = text.replace("\\", "/").rsplit("/", 1)[-1]
        if not base.endswith(_FEATURE_SUFFIX):
            raise VadpipeError(
                f"{where}: expected a path ending in <name>{_FEATURE_SUFFIX}, got {base!r}"
            )
        return check_video_id(base[: -len(_FEATURE_SUFFIX)], where)

    return {
        name: (f"{path}:{no}", _name_label(name, f"{path}:{no}"))
        for no, name in read_unique_names(path, video_name)
    }


def _read_annotations(path: Path, group: tuple[str, ...]) -> dict[str, tuple[str, list[list[str]]]]:
    """``{name: (where, [fields of one interval, ...])}``; ``group`` names one interval's fields."""
    out: dict[str, tuple[str, list[list[str]]]] = {}
    width = len(group)
    for no, text in read_lines(path):
        where = f"{path}:{no}"
        name, *rest = text.split()
        name = name.removesuffix(".mp4")
        if not rest or len(rest) % width:
            raise VadpipeError(
                f"{where}: expected '<video> {' '.join(group)} [...]', "
                f"got {len(rest)} fields after the name"
            )
        if name in out:
            raise VadpipeError(f"{where}: {name!r} annotated twice (first at {out[name][0]})")
        out[name] = (where, [rest[i : i + width] for i in range(0, len(rest), width)])
    return out


def _same_names(binary: dict, classed: dict, binary_file: Path, classed_file: Path) -> None:
    for ours, theirs, other in ((binary, classed, classed_file), (classed, binary, binary_file)):
        extra = [n for n in ours if n not in theirs]
        if extra:
            raise VadpipeError(f"{ours[extra[0]][0]}: {extra[0]!r} is missing from {other.name}")


def _binary_intervals(pairs: list[list[str]], where: str) -> list[Interval]:
    return [
        half_open(parse_int(s, "a frame index", where), parse_int(e, "a frame index", where), where)
        for s, e in pairs
    ]


def _classed_intervals(where: str, triples: list[list[str]]) -> list[Interval]:
    out = []
    for code, s, e in triples:
        if code not in CLASS_CODES or CLASS_CODES[code] == NORMAL:
            raise VadpipeError(
                f"{where}: unknown violence class code {code!r} (known: "
                f"{', '.join(c for c, n in CLASS_CODES.items() if n != NORMAL)})"
            )
        start, end = parse_int(s, "a frame index", where), parse_int(e, "a frame index", where)
        out.append(half_open(start, end, where, CLASS_CODES[code]))
    return out


def _classify(binary: list[Interval], classed: list[Interval]) -> tuple[Interval, ...]:
    """The frames of ``binary``, cut into pieces labelled by the ``classed`` intervals.

    Union of the result == union of ``binary``; uncovered gaps get no label.
    """
    out = []
    for b in binary:
        pieces = [
            Interval(max(b.start, c.start), min(b.end, c.end), c.label)
            for c in classed
            if max(b.start, c.start) < min(b.end, c.end)
        ]
        cursor = b.start
        for p in sorted(pieces, key=lambda p: p.start):
            if p.start > cursor:
                out.append(Interval(cursor, p.start))
            cursor = max(cursor, p.end)
        if cursor < b.end:
            out.append(Interval(cursor, b.end))
        out += pieces
    return sort_intervals(out)
