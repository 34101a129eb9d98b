"""Dong 2024's two methods as two heads: ``clipassist`` (video mode, :mod:`.video`) and
``clipassist-frame`` (frame mode, :mod:`.frame`), on the networks of :mod:`.net` and the
shared weak-label plumbing of :mod:`.common`."""

from vadpipe.heads.clipassist.frame import ClipAssistFrameConfig, ClipAssistFrameHead
from vadpipe.heads.clipassist.net import (
    DiagonalSimilarity,
    GlobalTemporalAdapter,
    LocalTransformer,
    TemporalModule,
    distance_adjacency,
    majority_vote,
    similarity_adjacency,
    video_class_similarity,
)
from vadpipe.heads.clipassist.video import ClipAssistConfig, ClipAssistHead

__all__ = [
    "ClipAssistConfig", "ClipAssistFrameConfig", "ClipAssistFrameHead", "ClipAssistHead", "DiagonalSimilarity",
    "GlobalTemporalAdapter", "LocalTransformer", "TemporalModule", "distance_adjacency", "majority_vote",
    "similarity_adjacency", "video_class_similarity",
]
