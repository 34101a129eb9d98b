"""One rule for unit vectors, shared by every stage that normalises embeddings."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows (along ``axis``) scaled to unit length; zero rows stay zero."""
    return x / np.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)


def stack_rows(parts: list[np.ndarray], dtype=None) -> np.ndarray:
    """``np.concatenate(parts)`` (cast to ``dtype``, if given) that lets go of each part once
    copied: ``parts`` is emptied, so the rows are held about once, not twice, while they are
    stacked (the caller's own references to the parts still hold them)."""
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
