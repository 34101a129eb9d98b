"""vadpipe: video anomaly detection with vision-language models, as a two-stage
offline feature-cache pipeline (featurize once, then train/score light heads)."""

__version__ = "0.5.3"

from vadpipe.errors import VadpipeError  # noqa: E402

__all__ = ["VadpipeError", "__version__"]
