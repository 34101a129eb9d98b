"""The Zarr v3 backend of :class:`~vadpipe.cache.FeatureCache`: a directory store.

Nodes are addressed by '/'-joined paths. A store takes many writer processes at once (one
per video group): the root and each encoder group are created with their attributes in one
atomic metadata write, so concurrent shard processes never see a group without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vadpipe.cache.zarr_fast import read_group_files
from vadpipe.errors import VadpipeError


class ZarrBackend:
    """Nodes addressed by '/'-joined paths in a Zarr v3 directory store."""

    schema_versions = (1,)  # what this backend reads; it writes the last
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

        A local store is read by :mod:`vadpipe.cache.zarr_fast` (the arrays vadpipe writes,
        straight from their files); what that reader does not handle, and remote stores, go
        through the zarr API.
        """
        folder = self._local_folder(node)
        if folder is None:
            if not self.has(node):
                return None
            return self.attrs(node), {n: self.read_array(node, n) for n in self.arrays(node)}
        group = read_group_files(folder)
        if group is None:
            return None
        attrs, arrays = group
        return attrs, {n: a if a is not None else self.read_array(node, n) for n, a in arrays.items()}

    def _local_folder(self, node: str) -> str | None:
        """The node's folder when the store is a local directory (None otherwise)."""
        if self._local_root is None:
            return None
        return os.path.join(self._local_root, node)

    def close(self) -> None:
        pass
