"""The HDF5 backend of :class:`~vadpipe.cache.FeatureCache`: the same tree in one file.

Attributes a user would look at with ``h5py`` -- scalars such as ``done``, ``fps``,
``num_frames``, ``width``, ``height``, ``dim``, ``schema_version`` -- are native HDF5
attributes (``f["ViT-B-16:openai/video01"].attrs["num_frames"]``). Nested values (the
sampling and preprocessing recipe, the source file's stat, lists) and ``None`` have no
native HDF5 form: they are kept together as one JSON string attribute, ``vadpipe_attrs``.
Reading merges both. Files written by vadpipe 0.2, which kept everything in the JSON
string, read the same.

Such files are schema version 2; version 1 files (vadpipe 0.2)
are read, and one extended by this version is marked 2, so vadpipe 0.2 refuses it by its
version instead of misreading its videos. An HDF5 file takes one writer: sharded runs write
one file per shard and ``vadpipe cache merge`` joins them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError

JSON_ATTR = "vadpipe_attrs"


def _is_native(value) -> bool:
    """Stored as a native HDF5 attribute: bools, int64-range ints, floats, strings without NUL."""
    if isinstance(value, bool) or isinstance(value, float):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and "\x00" not in value


def _python(value):
    """An attribute as h5py returns it -> a plain Python value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


class H5Backend:
    """Nodes addressed by '/'-joined paths in one HDF5 file."""

    schema_versions = (1, 2)  # what this backend reads; it writes the last
    def __init__(self, path: Path, mode: str, root_attrs: dict):
        import h5py

        try:
            self.f = h5py.File(str(path), "r" if mode == "r" else "a")
        except OSError as exc:
            raise VadpipeError(f"{path}: not a readable HDF5 cache ({exc})") from None

    def _node(self, node: str):
        return self.f[node] if node else self.f

    def attrs(self, node: str) -> dict:
        return _read_attrs(self._node(node).attrs)

    def update_attrs(self, node: str, attrs: dict) -> None:
        if JSON_ATTR in attrs:
            raise ValueError(f"{JSON_ATTR!r} is reserved")
        stored = self._node(node).attrs
        nested = json.loads(stored[JSON_ATTR]) if JSON_ATTR in stored else {}
        native = {k: v for k, v in attrs.items() if _is_native(v)}
        nested.update({k: v for k, v in attrs.items() if k not in native})
        for key in native:
            nested.pop(key, None)
        if "schema_version" in attrs:  # also in the JSON: vadpipe 0.2 reads only that, and then
            nested["schema_version"] = attrs["schema_version"]  # names the version it cannot read
        # the JSON string first (whole), then the natives; a key moving to the JSON goes last
        stored[JSON_ATTR] = json.dumps(nested)
        for key, value in native.items():
            stored[key] = value
        for key in [k for k in attrs if k not in native and k in stored]:
            del stored[key]
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
        return _read_dataset(self.f[node][name])

    def array_info(self, node: str, name: str) -> tuple[tuple, str]:
        ds = self.f[node][name]
        return tuple(ds.shape), ("str" if ds.dtype.kind == "O" else str(ds.dtype))

    def read_group(self, node: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        group = self.f.get(node)
        if group is None:
            return None
        return _read_attrs(group.attrs), {name: _read_dataset(ds) for name, ds in group.items()}

    def close(self) -> None:
        self.f.flush()
        self.f.close()


def _read_attrs(stored) -> dict:
    out = json.loads(stored[JSON_ATTR]) if JSON_ATTR in stored else {}
    out.update({k: _python(v) for k, v in stored.items() if k != JSON_ATTR})  # a native value is the newer
    return out


def _read_dataset(ds) -> np.ndarray:
    return ds.asstr()[()].astype(str) if ds.dtype.kind == "O" else ds[()]
