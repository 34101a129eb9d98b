"""The feature cache: one subtree per encoder key, one group per video.

Layout (ARCHITECTURE.md §2)::

    /                              attrs: schema_version, created_by
    /<encoder_key>/                attrs: recipe (model, pretrained, dim, preprocessing, sampling)
    /<encoder_key>/<video_id>/     attrs: done (written last), fps, num_frames, width, height, source
        frame_index   int64[T]     source frame (0-based) of each sampled frame
        pts           float64[T]   its time in seconds (NaN for frame folders without fps)
        emb           float16[T, D] L2-normalised embeddings

A video group is written whole by one process and marked ``done`` only after every array
is in place, so a killed run never leaves a group that looks finished; a group without
``done`` is deleted and rewritten on the next run. Shards never write shared attributes
after the encoder group is created (concurrent attribute writes lose updates in zarr 3).
Only this module knows the storage library; heads and evaluate read through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vadpipe import __version__
from vadpipe.errors import VadpipeError

SCHEMA_VERSION = 1
EMB_CHUNK_FRAMES = 2048
DONE, FAILED, INCOMPLETE = "done", "failed", "incomplete"


@dataclass
class VideoFeatures:
    """The cached features of one video under one encoder."""

    video_id: str
    frame_index: np.ndarray  # int64[T]
    pts: np.ndarray  # float64[T]
    emb: np.ndarray  # float16[T, D]
    attrs: dict

    @property
    def num_frames(self) -> int:
        """Decoded length of the source video (not the number of samples)."""
        return int(self.attrs["num_frames"])


def check_node_name(name: str, what: str) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith("__"):
        raise VadpipeError(f"{what} {name!r} cannot be used as a cache group name")
    return name


class FeatureCache:
    """A Zarr v3 feature cache (a directory store)."""

    def __init__(self, path: str | Path, mode: str = "r"):
        import zarr

        self.path = Path(path)
        if self.path.suffix.lower() in (".h5", ".hdf5"):
            raise VadpipeError(f"{self.path}: HDF5 caches are not supported yet; use a .zarr path")
        if mode == "r":
            if not self.path.exists():
                raise VadpipeError(f"{self.path}: cache not found")
            try:
                self.root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            except (FileNotFoundError, ValueError) as exc:
                raise VadpipeError(f"{self.path}: not a vadpipe Zarr cache ({exc})") from None
            if "schema_version" not in self.root.attrs:
                raise VadpipeError(f"{self.path}: not a vadpipe cache (no schema_version)")
        else:
            self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            if "schema_version" not in self.root.attrs:
                self.root.attrs.update(
                    {"schema_version": SCHEMA_VERSION, "created_by": f"vadpipe {__version__}"}
                )
        version = self.root.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise VadpipeError(
                f"{self.path}: cache schema version {version}, this vadpipe reads {SCHEMA_VERSION}"
            )
        self.mode = mode

    # ---------------------------------------------------------------- encoders
    def encoders(self) -> list[str]:
        return sorted(self.root.group_keys())

    def recipe(self, key: str) -> dict:
        return dict(self._encoder_group(key).attrs)

    def _encoder_group(self, key: str):
        if key not in self.root:
            have = ", ".join(self.encoders()) or "none"
            raise VadpipeError(f"{self.path}: cache has no encoder {key!r} (it has: {have})")
        return self.root[key]

    def ensure_encoder(self, key: str, recipe: dict) -> None:
        """Create the encoder subtree with its recipe, or check that it matches."""
        check_node_name(key, "encoder key")
        recipe = json.loads(json.dumps(recipe))  # normalise tuples etc. to JSON types
        if key in self.root:
            have = dict(self.root[key].attrs)
            diffs = [
                k for k in ("model", "pretrained", "checkpoint_sha256", "dim", "preprocessing", "sampling")
                if k in recipe and have.get(k) != recipe[k]
            ]
            if diffs:
                k = diffs[0]
                raise VadpipeError(
                    f"{self.path}: encoder {key!r} exists with {k}={have.get(k)!r}, this run asks "
                    f"{k}={recipe[k]!r}; use another cache (one recipe per encoder key)"
                )
            return
        self.root.require_group(key).attrs.update(recipe)

    # ---------------------------------------------------------------- videos
    def video_ids(self, key: str, status: str | None = DONE) -> list[str]:
        """Video ids under ``key`` with the given status (``None``: all groups)."""
        group = self._encoder_group(key)
        ids = sorted(group.group_keys())
        if status is None:
            return ids
        return [v for v in ids if _status(group[v].attrs) == status]

    def status(self, key: str, video_id: str) -> str | None:
        if key not in self.root or video_id not in self.root[key]:
            return None
        return _status(self.root[key][video_id].attrs)

    def is_done(self, key: str, video_id: str) -> bool:
        return self.status(key, video_id) == DONE

    def write_video(
        self,
        key: str,
        video_id: str,
        frame_index: np.ndarray,
        pts: np.ndarray,
        emb: np.ndarray,
        attrs: dict,
    ) -> None:
        """Write one video's arrays, then mark it done (the marker is the last write)."""
        check_node_name(video_id, "video_id")
        emb = np.asarray(emb, dtype=np.float16)
        T = len(frame_index)
        if emb.ndim != 2 or emb.shape[0] != T or len(pts) != T:
            raise ValueError(f"inconsistent shapes for {video_id}: {emb.shape}, {T}, {len(pts)}")
        group = self._fresh_video_group(key, video_id, attrs)
        chunk = max(1, min(T, EMB_CHUNK_FRAMES))
        group.create_array("frame_index", data=np.asarray(frame_index, dtype=np.int64), chunks=(max(T, 1),))
        group.create_array("pts", data=np.asarray(pts, dtype=np.float64), chunks=(max(T, 1),))
        group.create_array("emb", data=emb, chunks=(chunk, emb.shape[1]))
        group.attrs.update({"done": True})

    def mark_failed(self, key: str, video_id: str, stage: str, reason: str, attrs: dict) -> None:
        """Record a failure in the video's own group (never in shared attributes)."""
        check_node_name(video_id, "video_id")
        group = self._fresh_video_group(key, video_id, attrs)
        group.attrs.update({"failed": {"stage": stage, "reason": reason}})

    def _fresh_video_group(self, key: str, video_id: str, attrs: dict):
        enc = self._encoder_group(key)
        if video_id in enc:
            del enc[video_id]
        group = enc.create_group(video_id)
        group.attrs.update({**json.loads(json.dumps(attrs)), "done": False})
        return group

    def read(self, key: str, video_id: str) -> VideoFeatures:
        """Features of one done video; anything else is a clear error."""
        enc = self._encoder_group(key)
        if video_id not in enc:
            raise VadpipeError(f"{self.path}: video {video_id!r} is not in the cache under {key!r}")
        group = enc[video_id]
        attrs = dict(group.attrs)
        state = _status(attrs)
        if state != DONE:
            why = attrs.get("failed", {}).get("reason", "not finished")
            raise VadpipeError(f"{self.path}: video {video_id!r} under {key!r} is {state} ({why})")
        return VideoFeatures(
            video_id=video_id,
            frame_index=group["frame_index"][:],
            pts=group["pts"][:],
            emb=group["emb"][:],
            attrs=attrs,
        )

    def iter_videos(self, key: str, video_ids) -> Iterator[VideoFeatures]:
        for vid in video_ids:
            yield self.read(key, vid)

    def require_videos(self, key: str, video_ids) -> None:
        """All of ``video_ids`` done under ``key``, or one error naming the missing ones."""
        enc = self._encoder_group(key)
        missing = [v for v in video_ids if v not in enc or _status(enc[v].attrs) != DONE]
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
