"""The feature cache: one subtree per encoder key, one group per video.

Layout (ARCHITECTURE.md §2), the same tree in Zarr v3 (default, a directory) and HDF5
(a ``.h5`` / ``.hdf5`` file)::

    /                              attrs: schema_version, created_by
    /<encoder_key>/                attrs: recipe (model, pretrained, dim, preprocessing, sampling)
    /<encoder_key>/<video_id>/     attrs: done (written last), fps, num_frames, width, height, source
        frame_index   int64[T]     source frame (0-based) of each sampled frame
        pts           float64[T]   its time in seconds (NaN for frame folders without fps)
        emb           float16[T, D] image embeddings as the model outputs them (recipe
                                    ``normalised: false``; unit rows in caches of vadpipe 0.2)
        text          str[T, Q]     captioners: one answer per question
        text_emb      float16[T, Q, D] captioners: CLIP text embedding of each answer

An objects group (kind ``objects``, key ``ENCODER_KEY+DETECTOR``, see :mod:`vadpipe.objects`)
has one row per object and sampled frame, ordered by frame then track (a frame index repeats
once per object; a video may have no rows)::

    /<encoder_key>+<detector>/<video_id>/   attrs: as above, num_samples (sampled frames), num_objects
        frame_index   int64[N]      the frame the object is in
        pts           float64[N]    its time
        track_id      int64[N]      tracker's id (-1: a detection no track holds)
        box           float32[N, 4] x1, y1, x2, y2 in source pixels
        det_score     float32[N]    detector's score
        label         str[N]        detector's class name (motion: "motion")
        emb           float16[N, D] the encoder's embedding of the object's square crop

A video group is written whole by one process and marked ``done`` only after every array
is in place, so a killed run never leaves a group that looks finished; a group without
``done`` is deleted and rewritten on the next run. Shards never write shared attributes
after the encoder group is created (concurrent attribute writes lose updates in zarr 3).

Concurrency: a Zarr store takes many writer processes at once (one per video group).
An HDF5 file takes one writer: sharded runs write one file per shard
(:func:`shard_cache_path`) and ``vadpipe cache merge`` joins them.

Storage: each video is one group holding a handful of arrays, each a single chunk unless
a video has more than ``EMB_CHUNK_FRAMES`` samples, so a cache costs about seven small files
per video (not one per frame). Embeddings are stored uncompressed: float16 CLIP features do
not compress, and raw chunks read at memory speed.

Only this package knows the storage libraries (:mod:`~vadpipe.cache.zarr_backend`,
:mod:`~vadpipe.cache.hdf5_backend`); featurize writes through it and heads read through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vadpipe import __version__
from vadpipe._faults import fault_point
from vadpipe.errors import VadpipeError

SCHEMA_VERSION = 1  # of Zarr stores; an HDF5 file's is its backend's (2: native scalar attributes)
EMB_CHUNK_FRAMES = 4096
DONE, FAILED, INCOMPLETE = "done", "failed", "incomplete"
HDF5_SUFFIXES = (".h5", ".hdf5")
IMAGE, CAPTIONER, OBJECTS = "image", "captioner", "objects"  # kinds of encoder groups (a recipe's "kind")
RECIPE_FIELDS = ("model", "pretrained", "checkpoint_sha256", "dim", "quick_gelu", "preprocessing", "sampling",
                 "normalised", "objects")


def is_hdf5(path: str | Path) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


def shard_cache_path(path: str | Path, shard: int, num_shards: int) -> Path:
    """Where shard ``shard`` writes when the cache is HDF5 (one writer per file)."""
    p = Path(path)
    if not is_hdf5(p) or num_shards == 1:
        return p
    return p.with_name(f"{p.stem}.shard-{shard:05d}-of-{num_shards:05d}{p.suffix}")


@dataclass
class VideoFeatures:
    """The cached features of one video under one encoder."""

    video_id: str
    frame_index: np.ndarray  # int64[T]
    pts: np.ndarray  # float64[T]
    emb: np.ndarray | None  # float16[T, D] (image encoders; None for captioners)
    attrs: dict
    arrays: dict = field(default_factory=dict)  # other per-sample arrays, e.g. text, text_emb

    @property
    def num_frames(self) -> int:
        """Decoded length of the source video (not the number of samples)."""
        return int(self.attrs["num_frames"])


def check_node_name(name: str, what: str) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith("__"):
        raise VadpipeError(f"{what} {name!r} cannot be used as a cache group name")
    return name


class FeatureCache:
    """A feature cache: Zarr v3 directory (default) or HDF5 file (``.h5``)."""

    def __init__(self, path: str | Path, mode: str = "r"):
        self.path = Path(path)
        self.mode = mode
        if mode == "r" and not self.path.exists():
            raise VadpipeError(f"{self.path}: cache not found")
        from vadpipe.cache.hdf5_backend import H5Backend
        from vadpipe.cache.zarr_backend import ZarrBackend

        backend = H5Backend if is_hdf5(self.path) else ZarrBackend
        if mode != "r":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        version = backend.schema_versions[-1]
        root_attrs = {"schema_version": version, "created_by": f"vadpipe {__version__}"}
        self._backend = backend(self.path, mode, root_attrs)
        root = self._backend.attrs("")
        if root.get("kind") == "vadpipe-scores":
            raise VadpipeError(f"{self.path}: is a scores store, not a feature cache")
        if "schema_version" not in root:
            if mode == "r" or self._backend.groups(""):
                raise VadpipeError(f"{self.path}: not a vadpipe cache (no schema_version)")
            self._backend.update_attrs("", root_attrs)  # a new HDF5 file (one writer)
            root = self._backend.attrs("")
        if root.get("schema_version") not in backend.schema_versions:
            raise VadpipeError(
                f"{self.path}: cache schema version {root.get('schema_version')}, this vadpipe reads "
                f"{', '.join(map(str, backend.schema_versions))}"
            )
        if mode != "r" and root["schema_version"] != version:  # what this version writes from now on
            self._backend.update_attrs("", {"schema_version": version})

    @property
    def format(self) -> str:
        return "hdf5" if is_hdf5(self.path) else "zarr"

    def close(self) -> None:
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- encoders
    def encoders(self) -> list[str]:
        return self._backend.groups("")

    def keys(self, kind: str | None = None, clip_key: str | None = None) -> list[str]:
        """Encoder keys of one ``kind`` (``image``: CLIP image embeddings; ``captioner``:
        answers and their text embeddings), only those built on ``clip_key``'s frames if given."""
        keys = []
        for key in self.encoders():
            recipe = self._backend.attrs(key)
            if kind is not None and recipe.get("kind", IMAGE) != kind:
                continue
            if clip_key is not None and recipe.get("clip_key") != clip_key:
                continue
            keys.append(key)
        return keys

    def image_encoders(self) -> list[str]:
        """Keys of image encoders (CLIP embeddings), leaving out captioners' text groups."""
        return self.keys(kind=IMAGE)

    def recipe(self, key: str) -> dict:
        """The encoder group's recipe. An image group written before vadpipe 0.4, which stored
        L2-normalised rows and built every tower with GELU and did not say so, reads
        ``normalised: True`` and ``quick_gelu: False``."""
        self._require_encoder(key)
        recipe = self._backend.attrs(key)
        if recipe.get("kind", IMAGE) == IMAGE:
            recipe.setdefault("normalised", True)
            recipe.setdefault("quick_gelu", False)
        return recipe

    def _require_encoder(self, key: str) -> None:
        if not self._backend.has(key):
            have = ", ".join(self.encoders()) or "none"
            raise VadpipeError(f"{self.path}: cache has no encoder {key!r} (it has: {have})")

    def ensure_encoder(self, key: str, recipe: dict) -> None:
        """Create the encoder subtree with its recipe, or check that it matches."""
        check_node_name(key, "encoder key")
        recipe = _jsonable(recipe)
        if not self._backend.create_group_once(key, recipe):
            difference = recipe_difference(self.recipe(key), recipe, RECIPE_FIELDS + ("precision",))
            if difference:
                field_name, old, new = difference
                raise VadpipeError(
                    f"{self.path}: encoder {key!r} exists with {field_name}={old!r}, this run asks "
                    f"{field_name}={new!r}; use another cache (one recipe per encoder key)"
                )

    # ---------------------------------------------------------------- videos
    def video_ids(self, key: str, status: str | None = DONE) -> list[str]:
        """Video ids under ``key`` with the given status (``None``: all groups)."""
        self._require_encoder(key)
        ids = self._backend.groups(key)
        if status is None:
            return ids
        return [v for v in ids if _status(self._backend.attrs(f"{key}/{v}")) == status]

    def status(self, key: str, video_id: str) -> str | None:
        node = f"{key}/{video_id}"
        if not self._backend.has(key) or not self._backend.has(node):
            return None
        return _status(self._backend.attrs(node))

    def is_done(self, key: str, video_id: str) -> bool:
        return self.status(key, video_id) == DONE

    def video_attrs(self, key: str, video_id: str) -> dict:
        return self._backend.attrs(f"{key}/{video_id}")

    def write_video(
        self,
        key: str,
        video_id: str,
        frame_index: np.ndarray,
        pts: np.ndarray,
        emb: np.ndarray | None = None,
        attrs: dict | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write one video's arrays, then mark it done (the marker is the last write).

        ``emb`` (``float16[T, D]``) is an image encoder's output; ``arrays`` holds any other
        per-sample arrays whose first axis is T (a captioner's ``text`` ``str[T, Q]`` and
        ``text_emb`` ``float16[T, Q, D]``).
        """
        check_node_name(video_id, "video_id")
        self._require_encoder(key)
        T = len(frame_index)
        data = {name: np.asarray(arr) for name, arr in (arrays or {}).items()}
        if emb is not None:
            data["emb"] = np.asarray(emb, dtype=np.float16)
            if data["emb"].ndim != 2:
                raise ValueError(f"emb of {video_id} must be 2-D, got {data['emb'].shape}")
        for name, arr in data.items():
            if len(arr) != T:
                raise ValueError(f"{name} of {video_id} has {len(arr)} rows for {T} samples")
        if len(pts) != T:
            raise ValueError(f"pts of {video_id} has {len(pts)} rows for {T} samples")
        node = self._fresh_video_group(key, video_id, attrs or {})
        rows = max(1, min(T, EMB_CHUNK_FRAMES))
        self._backend.write_array(node, "frame_index", np.asarray(frame_index, dtype=np.int64), (rows,))
        self._backend.write_array(node, "pts", np.asarray(pts, dtype=np.float64), (rows,))
        for name, arr in data.items():
            self._backend.write_array(node, name, arr, (rows,) + arr.shape[1:])
            fault_point("after_array")
        fault_point("before_done")
        self._backend.update_attrs(node, {"done": True})

    def mark_failed(self, key: str, video_id: str, stage: str, reason: str, attrs: dict) -> None:
        """Record a failure in the video's own group (never in shared attributes)."""
        check_node_name(video_id, "video_id")
        node = self._fresh_video_group(key, video_id, attrs)
        self._backend.update_attrs(node, {"failed": {"stage": stage, "reason": reason}})

    def _fresh_video_group(self, key: str, video_id: str, attrs: dict) -> str:
        node = f"{key}/{video_id}"
        self._backend.create_group(node)  # replaces a half-written or failed group
        self._backend.update_attrs(node, {**_jsonable(attrs), "done": False})
        return node

    def read(self, key: str, video_id: str) -> VideoFeatures:
        """Features of one done video; anything else is a clear error."""
        group = self._backend.read_group(f"{key}/{video_id}")
        if group is None:
            self._require_encoder(key)
            raise VadpipeError(f"{self.path}: video {video_id!r} is not in the cache under {key!r}")
        attrs, arrays = group
        state = _status(attrs)
        if state != DONE:
            why = attrs.get("failed", {}).get("reason", "not finished")
            raise VadpipeError(f"{self.path}: video {video_id!r} under {key!r} is {state} ({why})")
        return VideoFeatures(
            video_id=video_id,
            frame_index=arrays.pop("frame_index"),
            pts=arrays.pop("pts"),
            emb=arrays.pop("emb", None),
            attrs=attrs,
            arrays=arrays,
        )

    def array_info(self, key: str, video_id: str) -> dict[str, tuple[tuple, str]]:
        """Shape and dtype of each array of a video group, without reading the data."""
        node = f"{key}/{video_id}"
        return {name: self._backend.array_info(node, name) for name in self._backend.arrays(node)}

    def iter_videos(self, key: str, video_ids) -> Iterator[VideoFeatures]:
        for vid in video_ids:
            yield self.read(key, vid)

    def require_videos(self, key: str, video_ids) -> None:
        """All of ``video_ids`` done under ``key``, or one error naming the missing ones."""
        self._require_encoder(key)
        missing = [v for v in video_ids if self.status(key, v) != DONE]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise VadpipeError(
                f"{self.path}: {len(missing)} video(s) not featurized under {key!r}: {shown}"
            )


def _status(attrs) -> str:
    if attrs.get("done") is True:
        return DONE
    if attrs.get("failed"):
        return FAILED
    return INCOMPLETE


def recipe_difference(have: dict, want: dict, fields=RECIPE_FIELDS) -> tuple[str, object, object] | None:
    """The first of ``fields`` that ``want`` gives and ``have`` records differently, as
    ``(name, have's value, want's value)``; a nested recipe names its sub-field
    (``sampling.stride``), ``mode`` first (a sampling mode change, not its missing fields)."""
    for name in fields:
        if name not in want or have.get(name) == want[name]:
            continue
        old, new = have.get(name), want[name]
        if isinstance(old, dict) and isinstance(new, dict):
            subs = [s for s in sorted(set(old) | set(new), key=lambda s: (s != "mode", s)) if old.get(s) != new.get(s)]
            if subs:
                return f"{name}.{subs[0]}", old.get(subs[0]), new.get(subs[0])
        return name, old, new
    return None


def _jsonable(obj) -> dict:
    """Plain JSON types only (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
