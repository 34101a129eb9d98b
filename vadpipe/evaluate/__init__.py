"""Stage 3: frame-level metrics with the benchmarks' protocols. Never imports torch."""

from vadpipe.evaluate.compare import compare_reports, format_comparison
from vadpipe.evaluate.metrics import expand, frame_metrics, smooth
from vadpipe.evaluate.recognition import frame_class_targets, recognition_metrics
from vadpipe.evaluate.run import EvalConfig, evaluate, format_table

__all__ = [
    "EvalConfig",
    "compare_reports",
    "evaluate",
    "expand",
    "format_comparison",
    "format_table",
    "frame_class_targets",
    "frame_metrics",
    "recognition_metrics",
    "smooth",
]
