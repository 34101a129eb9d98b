"""One rule for unit vectors, shared by every stage that normalises embeddings."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows (along ``axis``) scaled to unit length; zero rows stay zero."""
    return x / np.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)


def stack_rows(parts, dtype=None, block_bytes: int = 64 << 20) -> np.ndarray:
    """``np.concatenate`` of the row arrays in ``parts`` (cast to ``dtype``, if given), holding
    the rows about once, not twice, while they are stacked.

    A list (sizes known) is copied straight into the result and emptied as it is read, each
    part let go once copied (the caller's own references still hold its parts). Any other
    iterable -- a generator, whose parts are let go as they come -- is first copied into
    blocks of about ``block_bytes``, each its own allocation (so, unlike many small parts,
    handed back to the system when freed), then into the result, each block let go once
    copied: the transient cost is one block, not a second copy of every row.
    """
    if not isinstance(parts, list):
        parts = _blocks(parts, dtype, block_bytes)
    if not parts:
        return np.zeros((0, 0), dtype or np.float32)
    out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype or parts[0].dtype)
    offset = 0
    parts.reverse()
    while parts:
        part = parts.pop()
        out[offset : offset + len(part)] = part
        offset += len(part)
    return out


def _blocks(parts, dtype, block_bytes: int) -> list[np.ndarray]:
    """The rows of ``parts`` copied into blocks of about ``block_bytes`` (the last one cut to
    its rows; where the parts have no row, one empty block of their row shape)."""
    blocks, fill, empty = [], 0, []
    for part in parts:
        part = np.asarray(part)
        empty = empty or [np.zeros((0, *part.shape[1:]), dtype or part.dtype)]
        while len(part):
            if not blocks or fill == len(blocks[-1]):
                rows = max(1, block_bytes // max(part[:1].nbytes, 1))
                blocks.append(np.empty((rows, *part.shape[1:]), dtype or part.dtype))
                fill = 0
            take = min(len(part), len(blocks[-1]) - fill)
            blocks[-1][fill : fill + take] = part[:take]
            part, fill = part[take:], fill + take
    if not blocks:
        return empty
    blocks[-1] = blocks[-1][:fill]
    return blocks


def normalize_rows_(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` of a writeable float ``(n D)`` array in place, without the ``(n D)``
    temporary of ``np.linalg.norm`` (the squares are summed by ``einsum``)."""
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None].clip(1e-12)
    return x
