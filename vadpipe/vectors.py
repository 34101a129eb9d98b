"""One rule for unit vectors, shared by every stage that normalises embeddings."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows (along ``axis``) scaled to unit length; zero rows stay zero."""
    return x / np.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)
