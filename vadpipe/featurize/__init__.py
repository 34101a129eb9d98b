"""Stage 1: decode videos, sample frames, embed them with open_clip, write the cache."""

from vadpipe.featurize.pipeline import FeaturizeConfig, FeaturizeSummary, Sampling, featurize

__all__ = ["FeaturizeConfig", "FeaturizeSummary", "Sampling", "featurize"]
