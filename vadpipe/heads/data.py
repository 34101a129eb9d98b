"""What heads read from the cache: one video's inputs, and a training set read once.

A head declares its inputs (``Head.inputs``): ``"emb"``, the image encoder's embeddings,
and ``"captions"``, a captioner group's answers built on those frames; with ``unit=object``
the base adds ``"objects"``, an objects group built on them (:mod:`vadpipe.objects`), and
hands the head its objects as units (:func:`object_units`): all of a video's object rows at
once (heads that score rows independently) or one track at a time (temporal heads). The base class
resolves the cache keys they come from and hands each video's inputs to the head as a
:class:`Video`; training reads a :class:`TrainingSet`: select the manifest's videos,
require every one of them under every input key (one error naming the missing ones), read
each video once.

Image rows come as the cache stores them, or -- for heads whose method works on unit
vectors (``Head.geometry == "unit"``) -- scaled to unit length when the group holds the
model's raw output (recipe ``normalised: false``); a group of vadpipe 0.2 already holds unit
rows and is passed through untouched, so both give a head the same numbers up to the
float16 rounding of the stored unit rows (not for ``--snippet-mean`` features: the mean of raw
rows, normalised, is not the mean of unit rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vadpipe.cache import CAPTIONER, OBJECTS
from vadpipe.errors import VadpipeError
from vadpipe.texts import normalize_answer
from vadpipe.vectors import l2_normalize

INPUTS = ("emb", "captions", "objects")
UNITS = ("frame", "object")  # what a head scores: sampled frames, or the objects in them


@dataclass
class Captions:
    """A captioner's answers on a video's sampled frames."""

    key: str  # the captioner group's cache key
    text: np.ndarray  # str[T, Q]: normalised answers (lowercase, no surrounding punctuation)
    text_emb: np.ndarray  # float32[T, Q, D]: their CLIP text embeddings


@dataclass
class Objects:
    """The objects of a video's sampled frames: one row per object and frame, by frame then track."""

    key: str  # the objects group's cache key
    frame_index: np.ndarray  # int64[N]
    track_id: np.ndarray  # int64[N]; -1: a detection no track holds
    box: np.ndarray  # float32[N, 4] x1, y1, x2, y2 in source pixels
    label: np.ndarray  # str[N]
    emb: np.ndarray  # [N, D] crop embeddings, as the frames' rows (stored or unit)
    captions: Captions | None = None  # answers about each object's crop (one row per object row)


@dataclass
class Video:
    """One video's inputs: what ``Head._score_video`` receives."""

    video_id: str
    frame_index: np.ndarray  # int64[T] sampled source frames
    num_frames: int  # decoded length of the source video
    emb: np.ndarray  # float16[T, D] image embeddings as stored, or float32 unit rows (module docstring)
    captions: Captions | None = None
    objects: Objects | None = None


def read_video(cache, sources: dict[str, str], video_id: str, normalise: bool = False) -> Video:
    """The inputs of ``video_id`` from the cache keys in ``sources`` (``{"emb": key, "captions": key,
    "objects": key}``); ``normalise`` scales the image rows (frames' and objects') to unit length
    (float32: no second rounding to float16). With objects, the captions are the objects' (one
    row per object row) and come with them."""
    features = cache.read(sources["emb"], video_id)
    emb = features.emb
    if normalise and emb is not None:
        emb = l2_normalize(emb.astype(np.float32))
    objects = None
    if sources.get("objects"):
        obj = cache.read(sources["objects"], video_id)
        rows = obj.emb if not normalise else l2_normalize(obj.emb.astype(np.float32))
        objects = Objects(sources["objects"], obj.frame_index, obj.arrays["track_id"], obj.arrays["box"],
                          obj.arrays["label"], rows)
    captions = None
    if sources.get("captions"):
        on = sources.get("objects") or sources["emb"]
        captions = _read_captions(cache, sources["captions"], video_id, objects.frame_index if objects else
                                  features.frame_index, on)
        if objects is not None:
            objects.captions, captions = captions, None
    return Video(video_id, features.frame_index, features.num_frames, emb, captions, objects)


def _read_captions(cache, key: str, video_id: str, frame_index: np.ndarray, on: str) -> Captions:
    cap = cache.read(key, video_id)
    if not np.array_equal(cap.frame_index, frame_index):
        raise VadpipeError(
            f"{cache.path}: captions of {video_id!r} under {key!r} are not on the rows of {on!r}; caption the video again"
        )
    text = cap.arrays["text"]
    normalised = {a: normalize_answer(a) for a in np.unique(text)}  # answers of any writer, one form
    text = np.array([normalised[a] for a in text.ravel()], dtype=str).reshape(text.shape)  # (T Q)
    return Captions(key, text, cap.arrays["text_emb"].astype(np.float32))


def object_units(video: Video, mode: str) -> list[tuple[np.ndarray, Video]]:
    """A video's objects as the units a head scores, each ``(row indices, Video of those rows)``:
    ``"rows"`` -- one unit holding every object row (heads that score rows independently);
    ``"tracks"`` -- one unit per track, in order of first appearance (temporal heads: a track is
    the head's sequence), a row no track holds (``track_id`` -1) a unit of its own."""
    obj = video.objects

    def unit(name: str, rows: np.ndarray) -> tuple[np.ndarray, Video]:
        cap = obj.captions
        captions = None if cap is None else Captions(cap.key, cap.text[rows], cap.text_emb[rows])
        return rows, Video(name, obj.frame_index[rows], video.num_frames, obj.emb[rows], captions)

    if mode == "rows":
        return [unit(video.video_id, np.arange(len(obj.frame_index)))]
    tracked = obj.track_id >= 0
    ids, first = np.unique(obj.track_id[tracked], return_index=True)
    units = [unit(f"{video.video_id}#track{t}", np.flatnonzero(obj.track_id == t))
             for t in ids[np.argsort(first, kind="stable")]]
    return units + [unit(f"{video.video_id}#row{r}", np.array([r])) for r in np.flatnonzero(~tracked)]


def needs_normalising(cache, key: str, geometry: str, trained: dict | None = None) -> bool:
    """Whether a head of this ``geometry`` gets the rows of ``key`` scaled to unit length on read:
    a ``unit`` head whenever the group holds raw rows; a ``stored`` head when it was trained on
    unit rows (``trained``: the recipe its run recorded) and the group holds raw ones."""
    raw = not cache.recipe(key).get("normalised", True)
    if geometry == "unit":
        return raw
    return geometry == "stored" and raw and bool((trained or {}).get("normalised"))


class StoredRows(Sequence):
    """Row arrays held as the cache stores them (float16: half of float32) and handed out, one
    at a time, as the head reads them -- scaled to unit length in float32 where ``normalise``,
    the same values :func:`read_video` gives (the scaling is row by row). For heads that hold a
    part of every training video for many steps (``clipassist``: up to 256 frames of each)."""

    def __init__(self, parts: list[np.ndarray], normalise: bool):
        self.parts, self.normalise = parts, normalise

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, i: int) -> np.ndarray:
        rows = self.parts[i]
        return l2_normalize(rows.astype(np.float32)) if self.normalise else rows


class ReadRows(Sequence):
    """The image rows of some training videos, read from the cache at each access: nothing is
    held. For a head whose step is long next to a read (``anomalyclip`` on a CPU reads its 64
    videos in ~30 ms of a ~17 s step, instead of holding every training video)."""

    def __init__(self, data: "TrainingSet", entries):
        self.data, self.entries = data, list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> np.ndarray:
        d = self.data
        return read_video(d.cache, d.sources, self.entries[i].video_id, d.normalise and not d.stored).emb


class TrainingSet:
    """The training videos of a manifest: selected, required in the cache, read once.

    ``normal=True`` keeps only normal videos (one-class heads), ``None`` keeps all (weak
    supervision: the labels come with them). :attr:`videos` reads every video once and keeps
    it (float16 features, as stored); :meth:`normal_mean` streams through the cache when the
    videos are not held, so a head that needs only the prototype never holds the features.
    """

    def __init__(self, cache, manifest, sources: dict[str, str], head: str, split: str = "train",
                 normal: bool | None = None, normalise: bool = False, units: str | None = None,
                 stored: bool = False):
        if manifest is None:
            raise VadpipeError(f"{head}: training needs a manifest with the training videos")
        # stored: rows as the cache holds them, for a head that keeps a part of them and normalises
        # each as it uses it (StoredRows); ``normalise`` still says whether the head's rows are unit ones
        self.cache, self.sources, self.normalise, self.stored = cache, dict(sources), normalise, stored
        self.units = units  # None: videos; "rows" / "tracks": their objects (object_units)
        self.entries = manifest.select(split=split, normal=normal)
        if not self.entries:
            which = {True: " normal", False: " anomalous", None: ""}[normal]
            raise VadpipeError(
                f"{head}: no{which} training videos selected (split={split}); check the manifest's split and "
                "label columns"
            )
        for key in self.sources.values():
            cache.require_videos(key, self.ids)

    @property
    def ids(self) -> list[str]:
        return [e.video_id for e in self.entries]

    @cached_property
    def videos(self) -> list[Video]:
        """Every video's inputs (or, with ``units``, every object unit), in manifest order
        (read on first use, then held)."""
        return [unit for _, units in self._read_all() for unit in units]

    def iter_videos(self):
        """The videos' inputs one at a time: from memory when held, else from the cache."""
        if "videos" in self.__dict__:
            yield from self.videos
        else:
            for _, units in self._read_all():
                yield from units

    def _read_all(self):
        """``(entry, [Video, ...])`` per training video: the video itself, or its object units."""
        for entry in self.entries:
            video = read_video(self.cache, self.sources, entry.video_id, self.normalise and not self.stored)
            yield entry, [video] if self.units is None else [u for _, u in object_units(video, self.units)]

    def normal_mean(self) -> np.ndarray:
        """Eq. 1 of AnomalyCLIP: the mean image embedding over every sampled frame (or object
        row) of the normal videos, ``float64[D]``, summed video by video in float64."""
        total, count = None, 0
        for entry, units in self._read_all():
            if not entry.is_normal:
                continue
            for video in units:
                part = video.emb.astype(np.float64).sum(axis=0)  # (D)
                total = part if total is None else total + part
                count += len(video.emb)
        if not count:
            raise VadpipeError("no sampled frames (or objects) in the normal training videos")
        return total / count


def resolve_caption_key(cache, clip_key: str, choice: str | None, head: str) -> str | None:
    """The captioner group a head reads: ``"auto"`` -- the one built on ``clip_key`` (None if
    there is none; an error if there are several), a key, or ``None`` -- no captions."""
    keys = cache.keys(kind=CAPTIONER, clip_key=clip_key)
    if choice in (None, "none"):
        return None
    if choice == "auto":
        if len(keys) > 1:
            raise VadpipeError(
                f"{head}: cache {cache.path} has {len(keys)} captioner groups for {clip_key!r} "
                f"({', '.join(keys)}); choose one with --param caption_encoder=KEY"
            )
        return keys[0] if keys else None
    if choice not in keys:
        raise VadpipeError(
            f"{head}: cache {cache.path} has no captioner {choice!r} built on {clip_key!r} "
            f"(it has: {', '.join(keys) or 'none'})"
        )
    return choice


def resolve_objects_key(cache, clip_key: str, choice: str, head: str) -> str:
    """The objects group a head reads with ``unit=object``: ``"auto"`` -- the one built on
    ``clip_key`` (an error if there is none or several), else a key or a detector name
    (``motion`` -> ``CLIP_KEY+motion``)."""
    keys = cache.keys(kind=OBJECTS, clip_key=clip_key)
    if choice == "auto":
        if len(keys) != 1:
            raise VadpipeError(
                f"{head}: unit=object needs one objects group built on {clip_key!r} in {cache.path}, it has "
                f"{len(keys)} ({', '.join(keys) or 'none: featurize with --objects DETECTOR'})"
                + ("; choose one with --param objects=KEY" if keys else "")
            )
        return keys[0]
    for key in (choice, f"{clip_key}+{choice}"):
        if key in keys:
            return key
    raise VadpipeError(f"{head}: cache {cache.path} has no objects group {choice!r} built on {clip_key!r} "
                       f"(it has: {', '.join(keys) or 'none'})")
