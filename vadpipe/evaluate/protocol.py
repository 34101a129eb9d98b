"""Named benchmark protocols: which metric is the headline, which ground-truth variant was used.

The benchmark manifest builders record in ``Manifest.meta`` the dataset, the variant they
chose (``split``, ``gt``, ``end``, ``cross_scene``) and ``protocol``: the benchmark's
standard metrics, headline first (UCF-Crime ``["micro_auc"]``; XD-Violence ``["ap"]``;
ShanghaiTech / Avenue / Ped2 ``["micro_auc", "macro_auc"]``). A manifest without a
``protocol`` gets the field's default headline, micro AUC.
"""

from __future__ import annotations

import math

from vadpipe.errors import VadpipeError

METRIC_LABELS = {
    "micro_auc": "micro AUC",
    "macro_auc": "macro AUC",
    "ap": "AP",
    "mauc": "mAUC",
    "map": "mAP",
}
DETECTION_METRICS = ("micro_auc", "macro_auc", "ap")
RECOGNITION_METRICS = ("mauc", "map")
DEFAULT_HEADLINE = ("micro_auc",)
VARIANT_KEYS = ("dataset", "split", "gt", "end", "cross_scene", "classes", "train_dataset")
"""Manifest meta keys that change the ground truth or the video set: runs must agree on them."""


def headline_of(meta: dict, where: str) -> tuple[list[str], str]:
    """``(headline metrics, where they came from: "manifest" or "default")``."""
    protocol = (meta or {}).get("protocol")
    if protocol is None:
        return list(DEFAULT_HEADLINE), "default"
    if isinstance(protocol, str):
        protocol = [protocol]
    unknown = [str(m) for m in protocol if m not in METRIC_LABELS]
    if not protocol or unknown:
        raise VadpipeError(
            f"{where}: manifest protocol {protocol!r} names unknown metric(s) "
            f"{', '.join(unknown) or '(none given)'} (known: {', '.join(METRIC_LABELS)})"
        )
    return list(protocol), "manifest"


def variant_of(meta: dict) -> dict:
    """The meta keys that identify the ground-truth variant (only those recorded)."""
    return {k: meta[k] for k in VARIANT_KEYS if k in (meta or {})}


def fmt(x) -> str:
    """A metric for a table or a plot: 4 decimals, ``n/a`` for missing / NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return " ".join(f"{k}:{format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def describe_variant(variant: dict) -> str:
    """``dataset=shanghaitech, split=weak, cross_scene=none`` or a note that none was recorded."""
    if not variant:
        return "not recorded (manifest without benchmark metadata)"
    return ", ".join(f"{k}={format_value(v)}" for k, v in variant.items())


def metric_order(headline: list[str], with_recognition: bool) -> list[str]:
    """Headline metrics first, then the other detection (and recognition) metrics."""
    others = [*DETECTION_METRICS, *(RECOGNITION_METRICS if with_recognition else ())]
    return list(headline) + [m for m in others if m not in headline]
