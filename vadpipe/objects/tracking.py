"""ByteTrack over the sampled frames of one video, as ``supervision`` implements it.

``supervision`` (MIT) is the tracker's maintained home that imports on a headless server: its
0.30 releases need no OpenCV at all. Its successor package, ``trackers`` (Apache-2.0), pulls in
``opencv-python``, the GUI build that needs ``libGL`` and clashes with the headless OpenCV the
``motion`` detector uses in the same environment; when ByteTrack leaves ``supervision`` (0.31)
this module is the one place to move.
"""

from __future__ import annotations

import warnings

import numpy as np

from vadpipe.objects.config import TrackerConfig
from vadpipe.objects.detectors import Detections


class Tracker:
    """One video's tracker: ``ids(detections)`` -> ``int64[n]`` track ids (-1: not held)."""

    def __init__(self, config: TrackerConfig):
        self.config = config
        self._bytetrack = None
        if config.method == "bytetrack":
            import supervision as sv

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated in supervision, kept to 0.30
                self._bytetrack = sv.ByteTrack(
                    track_activation_threshold=config.track_threshold,
                    lost_track_buffer=config.buffer,
                    minimum_matching_threshold=config.match_threshold,
                    frame_rate=30,  # with lost_track_buffer: a lost track waits `buffer` sampled frames
                    minimum_consecutive_frames=1,
                )

    def ids(self, dets: Detections) -> np.ndarray:
        n = len(dets.boxes)
        if dets.ids is not None:
            return dets.ids.astype(np.int64)
        out = np.full(n, -1, dtype=np.int64)
        if self._bytetrack is None:
            return out
        import supervision as sv

        rows = sv.Detections(
            xyxy=dets.boxes.astype(np.float32).reshape(-1, 4),
            confidence=dets.scores.astype(np.float32),
            class_id=np.zeros(n, dtype=int),
            data={"row": np.arange(n)},
        )
        tracked = self._bytetrack.update_with_detections(rows)  # every frame, also empty ones: tracks age
        if len(tracked):
            out[np.asarray(tracked.data["row"], dtype=np.int64)] = np.asarray(tracked.tracker_id, dtype=np.int64)
        return out
