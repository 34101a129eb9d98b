"""What heads read from the cache: one video's inputs, and a training set read once.

A head declares its inputs (``Head.inputs``): ``"emb"``, the image encoder's embeddings,
and ``"captions"``, a captioner group's answers built on those frames. The base class
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

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vadpipe.cache import CAPTIONER
from vadpipe.errors import VadpipeError
from vadpipe.texts import normalize_answer
from vadpipe.vectors import l2_normalize

INPUTS = ("emb", "captions")


@dataclass
class Captions:
    """A captioner's answers on a video's sampled frames."""

    key: str  # the captioner group's cache key
    text: np.ndarray  # str[T, Q]: normalised answers (lowercase, no surrounding punctuation)
    text_emb: np.ndarray  # float32[T, Q, D]: their CLIP text embeddings


@dataclass
class Video:
    """One video's inputs: what ``Head._score_video`` receives."""

    video_id: str
    frame_index: np.ndarray  # int64[T] sampled source frames
    num_frames: int  # decoded length of the source video
    emb: np.ndarray  # float16[T, D] image embeddings as stored, or float32 unit rows (module docstring)
    captions: Captions | None = None


def read_video(cache, sources: dict[str, str], video_id: str, normalise: bool = False) -> Video:
    """The inputs of ``video_id`` from the cache keys in ``sources`` (``{"emb": key, "captions": key}``);
    ``normalise`` scales the image rows to unit length (float32: no second rounding to float16)."""
    features = cache.read(sources["emb"], video_id)
    emb = features.emb
    if normalise and emb is not None:
        emb = l2_normalize(emb.astype(np.float32))
    captions = None
    if sources.get("captions"):
        key = sources["captions"]
        cap = cache.read(key, video_id)
        if not np.array_equal(cap.frame_index, features.frame_index):
            raise VadpipeError(
                f"{cache.path}: captions of {video_id!r} under {key!r} are not on the frames of "
                f"{sources['emb']!r}; caption the video again"
            )
        text = cap.arrays["text"]
        normalised = {a: normalize_answer(a) for a in np.unique(text)}  # answers of any writer, one form
        text = np.array([normalised[a] for a in text.ravel()], dtype=str).reshape(text.shape)  # (T Q)
        captions = Captions(key, text, cap.arrays["text_emb"].astype(np.float32))
    return Video(video_id, features.frame_index, features.num_frames, emb, captions)


def needs_normalising(cache, key: str, geometry: str, trained: dict | None = None) -> bool:
    """Whether a head of this ``geometry`` gets the rows of ``key`` scaled to unit length on read:
    a ``unit`` head whenever the group holds raw rows; a ``stored`` head when it was trained on
    unit rows (``trained``: the recipe its run recorded) and the group holds raw ones."""
    raw = not cache.recipe(key).get("normalised", True)
    if geometry == "unit":
        return raw
    return geometry == "stored" and raw and bool((trained or {}).get("normalised"))


class TrainingSet:
    """The training videos of a manifest: selected, required in the cache, read once.

    ``normal=True`` keeps only normal videos (one-class heads), ``None`` keeps all (weak
    supervision: the labels come with them). :attr:`videos` reads every video once and keeps
    it (float16 features, as stored); :meth:`normal_mean` streams through the cache when the
    videos are not held, so a head that needs only the prototype never holds the features.
    """

    def __init__(self, cache, manifest, sources: dict[str, str], head: str, split: str = "train",
                 normal: bool | None = None, normalise: bool = False):
        if manifest is None:
            raise VadpipeError(f"{head}: training needs a manifest with the training videos")
        self.cache, self.sources, self.normalise = cache, dict(sources), normalise
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
        """Every video's inputs, in manifest order (read on first use, then held)."""
        return [read_video(self.cache, self.sources, vid, self.normalise) for vid in self.ids]

    def iter_videos(self):
        """The videos' inputs one at a time: from memory when held, else from the cache."""
        if "videos" in self.__dict__:
            yield from self.videos
        else:
            for vid in self.ids:
                yield read_video(self.cache, self.sources, vid, self.normalise)

    def normal_mean(self) -> np.ndarray:
        """Eq. 1 of AnomalyCLIP: the mean image embedding over every sampled frame of the
        normal videos, ``float64[D]``, summed video by video in float64."""
        total, count = None, 0
        for entry, video in zip(self.entries, self.iter_videos()):
            if not entry.is_normal:
                continue
            part = video.emb.astype(np.float64).sum(axis=0)  # (D)
            total = part if total is None else total + part
            count += len(video.emb)
        if not count:
            raise VadpipeError("no sampled frames in the normal training videos")
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
