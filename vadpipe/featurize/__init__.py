"""Stage 1: decode videos, sample frames, embed them with open_clip, write the cache.

* :mod:`~vadpipe.featurize.readers` -- frame sources (PyAV, folders of images);
* :mod:`~vadpipe.featurize.sampling` -- which frames are encoded;
* :mod:`~vadpipe.featurize.decode` -- decode workers (chunks of resized frames);
* :mod:`~vadpipe.featurize.batches` -- per-video fixed-size encoder batches;
* :mod:`~vadpipe.featurize.pipeline` -- :func:`featurize`, the run loop;
* :mod:`~vadpipe.featurize.captioner` -- BLIP-2 answers about the sampled frames;
* :mod:`~vadpipe.featurize.runtime` -- what both passes share (cores, progress, summary).
"""

from vadpipe.featurize.pipeline import FeaturizeConfig, featurize
from vadpipe.featurize.runtime import FeaturizeSummary
from vadpipe.featurize.sampling import Sampling

__all__ = ["FeaturizeConfig", "FeaturizeSummary", "Sampling", "featurize"]
