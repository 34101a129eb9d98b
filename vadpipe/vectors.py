"""One rule for unit vectors, shared by every stage that normalises embeddings."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows (along ``axis``) scaled to unit length; zero rows stay zero."""
    return x / np.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)


def stack_rows(parts, dtype=None, block_bytes: int = 64 << 20) -> np.ndarray:
    """``np.concatenate`` of the row arrays in ``parts`` (cast to ``dtype``, if given), holding
    the rows about once, not twice, while they are stacked.

    ``parts`` may be any iterable: a generator's parts are let go as they come (a list is
    emptied as it is read; the caller's own references still hold its parts). The rows are
    first copied into blocks of about ``block_bytes``, each its own allocation (so, unlike
    many small parts, handed back to the system when freed), then into the result, each block
    let go once copied: the transient cost is one block, not a second copy of every row.
    """
    source = _drained(parts) if isinstance(parts, list) else parts
    blocks, fill, shape = [], 0, None
    for part in source:
        part = np.asarray(part)
        shape = part.shape[1:]
        while len(part):
            if not blocks or fill == len(blocks[-1]):
                rows = max(1, block_bytes // max(part[:1].nbytes, 1))
                blocks.append(np.empty((rows, *shape), dtype or part.dtype))
                fill = 0
            take = min(len(part), len(blocks[-1]) - fill)
            blocks[-1][fill : fill + take] = part[:take]
            part, fill = part[take:], fill + take
    if not blocks:
        return np.zeros((0, *(shape if shape is not None else (0,))), dtype or np.float32)
    out = np.empty((sum(len(b) for b in blocks[:-1]) + fill, *blocks[0].shape[1:]), blocks[0].dtype)
    offset = 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        n = len(block) if blocks else fill
        out[offset : offset + n] = block[:n]
        offset += n
        del block
    return out


def _drained(parts: list):
    parts.reverse()
    while parts:
        yield parts.pop()


def normalize_rows_(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` of a writeable float ``(n D)`` array in place, without the ``(n D)``
    temporary of ``np.linalg.norm`` (the squares are summed by ``einsum``)."""
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None].clip(1e-12)
    return x
