"""Stage 3: frame-level metrics with the benchmarks' protocols. Never imports torch."""

from vadpipe.evaluate.metrics import expand, frame_metrics, smooth
from vadpipe.evaluate.run import EvalConfig, evaluate, format_table

__all__ = ["EvalConfig", "evaluate", "expand", "format_table", "frame_metrics", "smooth"]
