"""What the benchmarks that stand in for UCF-Crime share: its video counts, its 13 classes and
the order its synthetic videos are written in (training normal, training anomalous with the
classes in turn, test normal, test anomalous)."""

from __future__ import annotations

UCF = {"normal": 800, "anomalous": 810, "test_normal": 150, "test_anomalous": 140}
CLASSES = ["Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
           "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"]


def counts(scale: float) -> dict:
    """UCF-Crime's video counts scaled (at least 2 of each kind)."""
    return {k: max(2, round(v * scale)) for k, v in UCF.items()}


def write_videos(n: dict, video) -> None:
    """Call ``video(video_id, split, label)`` for every video of counts ``n``, in UCF-Crime's order."""
    for i in range(n["normal"]):
        video(f"train_normal{i:04d}", "train", "normal")
    for i in range(n["anomalous"]):
        video(f"train_{CLASSES[i % 13]}{i:04d}", "train", CLASSES[i % 13])
    for i in range(n["test_normal"]):
        video(f"test_normal{i:04d}", "test", "normal")
    for i in range(n["test_anomalous"]):
        video(f"test_{CLASSES[i % 13]}{i:04d}", "test", CLASSES[i % 13])
