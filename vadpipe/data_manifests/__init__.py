"""Manifests: the table of videos, splits, labels and ground truth that every stage reads."""

from vadpipe.data_manifests.folder import build_folder_manifest
from vadpipe.data_manifests.schema import (
    Interval,
    Manifest,
    VideoEntry,
    intervals_from_labels,
    load_manifest,
    parse_intervals,
)

__all__ = [
    "Interval",
    "Manifest",
    "VideoEntry",
    "build_folder_manifest",
    "intervals_from_labels",
    "load_manifest",
    "parse_intervals",
]
