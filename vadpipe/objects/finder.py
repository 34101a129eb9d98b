"""One video's objects, frame by frame: detect -> filter -> track -> order -> crop.

Runs in the decode worker that decodes the video (detectors and trackers keep per-video state
and must see its sampled frames in order). Rows of a frame are ordered by track id (untracked
rows, -1, first), so a video's rows are ordered by frame, then track.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vadpipe.objects.config import ObjectsConfig
from vadpipe.objects.crops import crop_objects
from vadpipe.objects.detectors import Detector, Detections, make_detector
from vadpipe.objects.tracking import Tracker


class ObjectRows(NamedTuple):
    frame_index: np.ndarray  # int64[n]
    pts: np.ndarray  # float64[n]
    track_id: np.ndarray  # int64[n]
    box: np.ndarray  # float32[n, 4] x1, y1, x2, y2, source pixels
    det_score: np.ndarray  # float32[n]
    label: np.ndarray  # str[n]
    crops: object  # uint8 tensor (n, 3, s, s)

    @property
    def count(self) -> int:
        return len(self.frame_index)

    @staticmethod
    def concat(parts: list["ObjectRows"]) -> "ObjectRows":
        import torch

        return ObjectRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ObjectRows._fields[:-1]),
                          torch.cat([p.crops for p in parts]))


class ObjectFinder:
    """The detector of a run (built once per worker) and, per video, a fresh detector state and tracker."""

    def __init__(self, config: ObjectsConfig, preprocessing):
        self.config = config
        self.preprocessing = preprocessing
        self.detector: Detector = make_detector(config.detector, config.detector_settings())

    def start(self, video_id: str):
        """``(index, pts, rgb) -> ObjectRows`` for one video (raises ObjectsError for a bad source)."""
        detect = self.detector.start(video_id)
        tracker = Tracker(self.config.tracker)
        cfg = self.config

        def rows(index: int, pts: float, rgb: np.ndarray) -> ObjectRows:
            dets = _filter(detect(index, rgb), cfg)
            ids = tracker.ids(dets)
            order = np.argsort(ids, kind="stable")
            dets, ids = dets.select(order), ids[order]
            n = len(ids)
            return ObjectRows(
                np.full(n, index, dtype=np.int64), np.full(n, pts, dtype=np.float64), ids,
                dets.boxes.astype(np.float32), dets.scores.astype(np.float32), np.array(dets.labels, dtype=str).reshape(n),
                crop_objects(rgb, dets.boxes, cfg.margin, self.preprocessing),
            )

        return rows


def _filter(dets: Detections, cfg: ObjectsConfig) -> Detections:
    """``min_area``, then the ``max_objects`` highest scores (ties: the detector's order)."""
    if not len(dets.boxes):
        return dets
    b = dets.boxes
    dets = dets.select((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) >= cfg.min_area)
    if cfg.max_objects is not None and len(dets.scores) > cfg.max_objects:
        dets = dets.select(np.sort(np.argsort(-dets.scores, kind="stable")[: cfg.max_objects]))
    return dets
