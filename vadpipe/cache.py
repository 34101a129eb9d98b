"""The feature cache: one subtree per encoder key, one group per video.

Layout (ARCHITECTURE.md §2), the same tree in Zarr v3 (default, a directory) and HDF5
(a ``.h5`` / ``.hdf5`` file)::

    /                              attrs: schema_version, created_by
    /<encoder_key>/                attrs: recipe (model, pretrained, dim, preprocessing, sampling)
    /<encoder_key>/<video_id>/     attrs: done (written last), fps, num_frames, width, height, source
        frame_index   int64[T]     source frame (0-based) of each sampled frame
        pts           float64[T]   its time in seconds (NaN for frame folders without fps)
        emb           float16[T, D] L2-normalised embeddings (image encoders)
        text          str[T, Q]     captioners: one answer per question
        text_emb      float16[T, Q, D] captioners: CLIP text embedding of each answer

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

Only this module knows the storage libraries; heads and evaluate read through it.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vadpipe import __version__
from vadpipe.errors import VadpipeError

SCHEMA_VERSION = 1
EMB_CHUNK_FRAMES = 4096
DONE, FAILED, INCOMPLETE = "done", "failed", "incomplete"
_CORE_ARRAYS = ("frame_index", "pts")
HDF5_SUFFIXES = (".h5", ".hdf5")
_FAULT_ENV = "VADPIPE_FAULT_INJECT"  # tests: "<point>:<n>" kills the process at the n-th <point>
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process the n-th time ``name`` is reached.

    Only active when the environment variable ``VADPIPE_FAULT_INJECT=name:n`` is set (the
    kill-and-resume tests); a no-op otherwise.
    """
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


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


# --------------------------------------------------------------------------- backends
class _ZarrBackend:
    """Nodes addressed by '/'-joined paths in a Zarr v3 directory store."""

    def __init__(self, path: Path, mode: str, root_attrs: dict):
        import zarr
        from zarr.errors import ContainsGroupError

        if mode == "r":
            try:
                self.root = zarr.open_group(str(path), mode="r", zarr_format=3)
            except (FileNotFoundError, ValueError) as exc:
                raise VadpipeError(f"{path}: not a vadpipe Zarr cache ({exc})") from None
        else:
            if path.is_file() or (path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists()):
                raise VadpipeError(f"{path}: exists and is not a Zarr store; refusing to write a cache into it")
            # shard processes may start together on a new store: create the root with its
            # attributes in one atomic write, and open the one another process made first
            try:
                self.root = zarr.open_group(str(path), mode="r+", zarr_format=3)
            except FileNotFoundError:
                try:
                    self.root = zarr.create_group(str(path), zarr_format=3, attributes=root_attrs)
                except (ContainsGroupError, FileExistsError):
                    self.root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        from zarr.storage import LocalStore

        store = self.root.store
        self._local_root = os.path.join(str(store.root), self.root.path) if isinstance(store, LocalStore) else None

    def attrs(self, node: str) -> dict:
        return dict((self.root[node] if node else self.root).attrs)

    def update_attrs(self, node: str, attrs: dict) -> None:
        (self.root[node] if node else self.root).attrs.update(attrs)

    def groups(self, node: str) -> list[str]:
        return sorted((self.root[node] if node else self.root).group_keys())

    def arrays(self, node: str) -> list[str]:
        return sorted(self.root[node].array_keys())

    def has(self, node: str) -> bool:
        return node in self.root

    def create_group(self, node: str) -> None:
        parent, _, name = node.rpartition("/")
        g = self.root[parent] if parent else self.root
        if name in g:
            del g[name]
        g.create_group(name)

    def create_group_once(self, node: str, attrs: dict) -> bool:
        """Create ``node`` with its attributes in one (atomic) metadata write; False if it
        exists already. Concurrent shard processes never see a group without attributes."""
        from zarr.errors import ContainsGroupError

        try:
            self.root.create_group(node, attributes=attrs, overwrite=False)
            return True
        except (ContainsGroupError, FileExistsError):
            return False

    def write_array(self, node: str, name: str, data: np.ndarray, chunks: tuple) -> None:
        g = self.root[node]
        if data.dtype.kind == "U":
            g.create_array(name, data=data, chunks=chunks)
        else:
            g.create_array(name, data=data, chunks=chunks, compressors=None)

    def read_array(self, node: str, name: str) -> np.ndarray:
        return self.root[node][name][:]

    def array_info(self, node: str, name: str) -> tuple[tuple, str]:
        a = self.root[node][name]
        return tuple(a.shape), str(a.dtype)

    def read_group(self, node: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        """A group's attributes and all its arrays (None if there is no such group).

        Fast path for a local store: the arrays vadpipe writes (one chunk, the ``bytes``
        codec, no compression) are read straight from their files as the Zarr v3 spec lays
        them out -- metadata in ``zarr.json``, the chunk in ``c/0[/0]``, an absent chunk
        meaning all ``fill_value``. Anything else (compressed, several chunks, string
        dtypes, remote stores) goes through the zarr API. Per video this is about 20x
        faster than opening each array with zarr, which matters when a head loads a whole
        cache.
        """
        folder = self._local_folder(node)
        if folder is None:
            if not self.has(node):
                return None
            return self.attrs(node), {n: self.read_array(node, n) for n in self.arrays(node)}
        # paths relative to the group's open folder: one path walk per video, not per file
        # (plain paths where the OS has no dir_fd, e.g. Windows)
        try:
            gfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if _DIR_FD else None
        except (FileNotFoundError, NotADirectoryError):
            return None
        base = "" if _DIR_FD else folder + os.sep
        try:
            try:
                meta = json.loads(_read_file(base + "zarr.json", gfd))
            except FileNotFoundError:
                return None
            arrays = {}
            for entry in os.scandir(gfd if _DIR_FD else folder):
                if entry.is_dir():
                    data = _read_plain_zarr_array(base + entry.name, gfd)
                    arrays[entry.name] = data if data is not None else self.read_array(node, entry.name)
        finally:
            if gfd is not None:
                os.close(gfd)
        return dict(meta.get("attributes", {})), arrays

    def _local_folder(self, node: str) -> str | None:
        """The node's folder when the store is a local directory (None otherwise)."""
        if self._local_root is None:
            return None
        return os.path.join(self._local_root, node)

    def close(self) -> None:
        pass


# the fast reader opens files relative to a group's open folder where the OS can
_DIR_FD = os.open in os.supports_dir_fd and os.scandir in os.supports_fd
_PLAIN_DTYPES = {"int64", "float64", "float32", "float16", "int32", "uint8", "bool"}
_PLAN_MEMO: dict[bytes, tuple | None] = {}  # raw array zarr.json -> its read plan (many are identical)
_PLAN_MEMO_MAX = 4096


def _read_file(path: str, dir_fd: int | None = None) -> bytes:
    """A whole (small) file, with plain system calls: Python file objects cost more than
    the read itself for the metadata files of a cache."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0), dir_fd=dir_fd)
    try:
        parts = []
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                return b"".join(parts)
            parts.append(block)
    finally:
        os.close(fd)


def _plain_plan(raw: bytes) -> tuple | None:
    """``(shape, dtype, chunk file name, fill value)`` of an uncompressed single-chunk Zarr v3
    array from its metadata; None when the array is any other kind."""
    if raw in _PLAN_MEMO:
        return _PLAN_MEMO[raw]
    try:
        meta = json.loads(raw)
        shape = tuple(meta.get("shape", ()))
        grid = meta.get("chunk_grid", {})
        codecs = meta.get("codecs", [])
        plain = (
            meta.get("node_type") == "array"
            and isinstance(meta.get("data_type"), str)
            and meta["data_type"] in _PLAIN_DTYPES
            and grid.get("name") == "regular"
            and tuple(grid["configuration"]["chunk_shape"]) == shape
            and meta.get("chunk_key_encoding", {}).get("name") == "default"
            and len(codecs) == 1
            and codecs[0].get("name") == "bytes"
            and codecs[0].get("configuration", {}).get("endian", "little") == "little"
            and not meta.get("storage_transformers")
            and 0 not in shape
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        plain = False
    plan = None
    if plain:
        sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        chunk = "c" + sep + sep.join("0" * len(shape)) if shape else "c"
        plan = (shape, np.dtype(meta["data_type"]).newbyteorder("<"), chunk, meta.get("fill_value", 0))
    if len(_PLAN_MEMO) < _PLAN_MEMO_MAX:
        _PLAN_MEMO[raw] = plan
    return plan


def _read_plain_zarr_array(folder: str, dir_fd: int | None = None) -> np.ndarray | None:
    """An uncompressed single-chunk Zarr v3 array read from its files; None if not that kind.
    ``folder`` may be relative to the open directory ``dir_fd`` (short path walks)."""
    try:
        plan = _plain_plan(_read_file(os.path.join(folder, "zarr.json"), dir_fd))
    except OSError:
        return None
    if plan is None:
        return None
    shape, dtype, chunk, fill = plan
    try:
        fd = os.open(os.path.join(folder, chunk), os.O_RDONLY | getattr(os, "O_BINARY", 0), dir_fd=dir_fd)
    except FileNotFoundError:  # never written: every element is the fill value
        return np.full(shape, fill, dtype=dtype)
    try:
        out = np.empty(shape, dtype=dtype)
        if os.fstat(fd).st_size != out.nbytes:
            return None
        n = _readinto(fd, memoryview(out).cast("B"))  # one pass, straight into the array
    finally:
        os.close(fd)
    return out if n == out.nbytes else None


def _readinto(fd: int, buf: memoryview) -> int:
    if hasattr(os, "readv"):
        return os.readv(fd, [buf])
    with open(fd, "rb", buffering=0, closefd=False) as fh:  # e.g. Windows
        return fh.readinto(buf)


class _H5Backend:
    """The same tree in one HDF5 file; attributes are stored as JSON strings."""

    _ATTR = "vadpipe_attrs"

    def __init__(self, path: Path, mode: str, root_attrs: dict):
        import h5py

        try:
            self.f = h5py.File(str(path), "r" if mode == "r" else "a")
        except OSError as exc:
            raise VadpipeError(f"{path}: not a readable HDF5 cache ({exc})") from None
        self.root = self.f

    def _node(self, node: str):
        return self.f[node] if node else self.f

    def attrs(self, node: str) -> dict:
        raw = self._node(node).attrs.get(self._ATTR)
        return json.loads(raw) if raw is not None else {}

    def update_attrs(self, node: str, attrs: dict) -> None:
        merged = {**self.attrs(node), **attrs}
        self._node(node).attrs[self._ATTR] = json.dumps(merged)
        self.f.flush()

    def groups(self, node: str) -> list[str]:
        import h5py

        return sorted(k for k, v in self._node(node).items() if isinstance(v, h5py.Group))

    def arrays(self, node: str) -> list[str]:
        import h5py

        return sorted(k for k, v in self._node(node).items() if isinstance(v, h5py.Dataset))

    def has(self, node: str) -> bool:
        return node in self.f

    def create_group(self, node: str) -> None:
        if node in self.f:
            del self.f[node]
        self.f.create_group(node)

    def create_group_once(self, node: str, attrs: dict) -> bool:
        if node in self.f:
            return False
        self.f.create_group(node)
        self.update_attrs(node, attrs)
        return True

    def write_array(self, node: str, name: str, data: np.ndarray, chunks: tuple) -> None:
        import h5py

        if data.dtype.kind == "U":
            self.f[node].create_dataset(name, data=data.astype(object), dtype=h5py.string_dtype("utf-8"))
        else:
            # contiguous when one chunk would hold it all: HDF5 reads those fastest
            one_chunk = chunks[0] >= len(data)
            self.f[node].create_dataset(name, data=data, chunks=None if one_chunk or not data.size else chunks)

    def read_array(self, node: str, name: str) -> np.ndarray:
        ds = self.f[node][name]
        if ds.dtype.kind == "O":
            return ds.asstr()[()].astype(str)
        return ds[()]

    def array_info(self, node: str, name: str) -> tuple[tuple, str]:
        ds = self.f[node][name]
        return tuple(ds.shape), ("str" if ds.dtype.kind == "O" else str(ds.dtype))

    def read_group(self, node: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        group = self.f.get(node)
        if group is None:
            return None
        raw = group.attrs.get(self._ATTR)
        arrays = {}
        for name, ds in group.items():
            arrays[name] = ds.asstr()[()].astype(str) if ds.dtype.kind == "O" else ds[()]
        return (json.loads(raw) if raw is not None else {}), arrays

    def close(self) -> None:
        self.f.flush()
        self.f.close()


# --------------------------------------------------------------------------- the cache
class FeatureCache:
    """A feature cache: Zarr v3 directory (default) or HDF5 file (``.h5``)."""

    def __init__(self, path: str | Path, mode: str = "r"):
        self.path = Path(path)
        self.mode = mode
        if mode == "r" and not self.path.exists():
            raise VadpipeError(f"{self.path}: cache not found")
        backend = _H5Backend if is_hdf5(self.path) else _ZarrBackend
        if mode != "r":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        root_attrs = {"schema_version": SCHEMA_VERSION, "created_by": f"vadpipe {__version__}"}
        self._b = backend(self.path, mode, root_attrs)
        root = self._b.attrs("")
        if root.get("kind") == "vadpipe-scores":
            raise VadpipeError(f"{self.path}: is a scores store, not a feature cache")
        if "schema_version" not in root:
            if mode == "r" or self._b.groups(""):
                raise VadpipeError(f"{self.path}: not a vadpipe cache (no schema_version)")
            self._b.update_attrs("", root_attrs)  # a new HDF5 file (one writer)
            root = self._b.attrs("")
        if root.get("schema_version") != SCHEMA_VERSION:
            raise VadpipeError(
                f"{self.path}: cache schema version {root.get('schema_version')}, this vadpipe reads {SCHEMA_VERSION}"
            )

    @property
    def format(self) -> str:
        return "hdf5" if is_hdf5(self.path) else "zarr"

    def close(self) -> None:
        self._b.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- encoders
    def encoders(self) -> list[str]:
        return self._b.groups("")

    def image_encoders(self) -> list[str]:
        """Keys of image encoders (CLIP embeddings), leaving out captioners' text groups."""
        return [k for k in self.encoders() if self._b.attrs(k).get("kind", "image") == "image"]

    def recipe(self, key: str) -> dict:
        self._require_encoder(key)
        return self._b.attrs(key)

    def _require_encoder(self, key: str) -> None:
        if not self._b.has(key):
            have = ", ".join(self.encoders()) or "none"
            raise VadpipeError(f"{self.path}: cache has no encoder {key!r} (it has: {have})")

    def ensure_encoder(self, key: str, recipe: dict) -> None:
        """Create the encoder subtree with its recipe, or check that it matches."""
        check_node_name(key, "encoder key")
        recipe = _jsonable(recipe)
        if not self._b.create_group_once(key, recipe):
            have = self._b.attrs(key)
            diffs = [
                k for k in ("model", "pretrained", "checkpoint_sha256", "dim", "preprocessing", "sampling", "precision")
                if k in recipe and have.get(k) != recipe[k]
            ]
            if diffs:
                k, old, new = diffs[0], have.get(diffs[0]), recipe[diffs[0]]
                if isinstance(old, dict) and isinstance(new, dict):  # name the field that differs
                    subs = [s for s in sorted(set(old) | set(new), key=lambda s: (s != "mode", s))
                            if old.get(s) != new.get(s)]
                    if subs:  # "mode" first: a sampling mode change, not its missing fields
                        k, old, new = f"{k}.{subs[0]}", old.get(subs[0]), new.get(subs[0])
                raise VadpipeError(
                    f"{self.path}: encoder {key!r} exists with {k}={old!r}, this run asks "
                    f"{k}={new!r}; use another cache (one recipe per encoder key)"
                )

    # ---------------------------------------------------------------- videos
    def video_ids(self, key: str, status: str | None = DONE) -> list[str]:
        """Video ids under ``key`` with the given status (``None``: all groups)."""
        self._require_encoder(key)
        ids = self._b.groups(key)
        if status is None:
            return ids
        return [v for v in ids if _status(self._b.attrs(f"{key}/{v}")) == status]

    def status(self, key: str, video_id: str) -> str | None:
        node = f"{key}/{video_id}"
        if not self._b.has(key) or not self._b.has(node):
            return None
        return _status(self._b.attrs(node))

    def is_done(self, key: str, video_id: str) -> bool:
        return self.status(key, video_id) == DONE

    def video_attrs(self, key: str, video_id: str) -> dict:
        return self._b.attrs(f"{key}/{video_id}")

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
        self._b.write_array(node, "frame_index", np.asarray(frame_index, dtype=np.int64), (rows,))
        self._b.write_array(node, "pts", np.asarray(pts, dtype=np.float64), (rows,))
        for name, arr in data.items():
            self._b.write_array(node, name, arr, (rows,) + arr.shape[1:])
            fault_point("after_array")
        fault_point("before_done")
        self._b.update_attrs(node, {"done": True})

    def mark_failed(self, key: str, video_id: str, stage: str, reason: str, attrs: dict) -> None:
        """Record a failure in the video's own group (never in shared attributes)."""
        check_node_name(video_id, "video_id")
        node = self._fresh_video_group(key, video_id, attrs)
        self._b.update_attrs(node, {"failed": {"stage": stage, "reason": reason}})

    def _fresh_video_group(self, key: str, video_id: str, attrs: dict) -> str:
        node = f"{key}/{video_id}"
        self._b.create_group(node)  # replaces a half-written or failed group
        self._b.update_attrs(node, {**_jsonable(attrs), "done": False})
        return node

    def read(self, key: str, video_id: str) -> VideoFeatures:
        """Features of one done video; anything else is a clear error."""
        group = self._b.read_group(f"{key}/{video_id}")
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
        return {name: self._b.array_info(node, name) for name in self._b.arrays(node)}

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


def _jsonable(obj) -> dict:
    """Plain JSON types only (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
