"""Square crops around detected boxes, with context, padded where they leave the frame.

An object's crop is the square on its box's longer side, grown by ``margin`` of that side on
every side and centred on the box; where it reaches past the frame it is filled with black (as
open_clip pads a letterboxed image), never shifted or squashed, so the object keeps its place
and shape. The square is then resized to the encoder's input size with the frames' own
preprocessing (bicubic, antialiased, on uint8).
"""

from __future__ import annotations

import numpy as np


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """``float[n, 4]`` boxes -> ``int64[n, 4]`` squares ``(x0, y0, x1, y1)``, end exclusive, at least 1 px."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + 2 * margin)
    side = np.maximum(np.round(side), 1).astype(np.int64)
    x0 = np.floor(cx - side / 2).astype(np.int64)
    y0 = np.floor(cy - side / 2).astype(np.int64)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def square_crops(rgb: np.ndarray, boxes: np.ndarray, margin: float) -> list[np.ndarray]:
    """``uint8 (H, W, 3)`` frame, ``float[n, 4]`` boxes -> ``n`` square ``uint8 (side, side, 3)``
    crops at source resolution (the captioner's processor resizes them its own way)."""
    H, W = rgb.shape[:2]
    out = []
    for x0, y0, x1, y1 in square_boxes(boxes, margin):
        side = int(x1 - x0)
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out.append(canvas)
    return out


def crop_objects(rgb: np.ndarray, boxes: np.ndarray, margin: float, preprocessing):
    """``uint8 (H, W, 3)`` frame, ``float[n, 4]`` boxes -> ``uint8 tensor (n, 3, s, s)`` crops."""
    import torch

    s = preprocessing.size
    if not len(boxes):
        return torch.zeros((0, 3, s, s), dtype=torch.uint8)
    return torch.cat([preprocessing.resize_square(torch.from_numpy(c)[None]) for c in square_crops(rgb, boxes, margin)])
