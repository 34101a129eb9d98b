"""``prototype``: the normality prototype of AnomalyCLIP (Zanella et al. 2024, eq. 1).

m = mean CLIP feature over every sampled frame of the normal training videos; each frame is
recentred, x = f - m, and scored by how far it lies from normality.

Choices where the paper leaves room (it uses x as the input to its selector, not as a
score): ``metric="l2"`` scores ``||f - m||_2`` (default); ``metric="cosine"`` scores
``1 - cos(f, m)``, insensitive to the prototype's shorter-than-unit norm. Training uses
only videos with split ``train`` and label ``normal``; anomalous training videos are ignored
(one-class supervision). Frames are read as the cache stores them (``geometry = "stored"``):
on featurize's raw features ``l2`` is the norm of AnomalyCLIP's recentred feature x (the
quantity its Table 9 row 2 ranks for MIL selection); on unit rows of a vadpipe 0.2 cache it
is the distance on the sphere. A run scores only caches of the geometry it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, ObjectUnits, Scores

METRICS = ("l2", "cosine")


@dataclass
class PrototypeConfig(ObjectUnits):
    metric: str = "l2"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise VadpipeError(f"prototype: unknown metric {self.metric!r} (choose from {', '.join(METRICS)})")


class PrototypeHead(Head):
    name = "prototype"
    Config = PrototypeConfig
    geometry = "stored"
    object_mode = "rows"  # unit=object: the prototype of normal objects, each object scored alone

    def _fit(self, cache, manifest) -> None:
        # eq. 1, streamed through the cache: the features are never all in memory
        self.prototype_ = self.training_set(cache, manifest, normal=True).normal_mean().astype(np.float32)  # (D)

    def _score_video(self, video) -> Scores:
        f = video.emb.astype(np.float32)  # (T D)
        x = f - self.prototype_  # recentred, (T D)
        if self.config.metric == "l2":
            score = np.linalg.norm(x, axis=1)
        else:
            m = self.prototype_ / max(np.linalg.norm(self.prototype_), 1e-12)
            score = 1.0 - f @ m / np.linalg.norm(f, axis=1).clip(1e-12)
        return Scores(video.frame_index, score.astype(np.float32), video.num_frames)

    def _state(self) -> dict[str, np.ndarray]:
        return {"prototype": self.prototype_.astype(np.float32)}

    def _load_state(self, state, extra) -> None:
        self.prototype_ = state["prototype"]
