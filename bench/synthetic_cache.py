"""Synthetic feature caches the size of a benchmark's, shared by the head benchmarks.

Two shapes (:data:`SHAPES`), written under the open_clip key ``ViT-B-32:random`` (a randomly
initialised ViT-B-32, built offline: 512-d, and the text tower heads need is the cache's own
model), raw rows of norm ~10 (featurize stores raw features, recipe ``normalised: false``),
float16:

* ``ucf`` -- UCF-Crime's weakly supervised split (:mod:`ucf_sized`): 800 normal + 810
  anomalous training videos (the 13 classes in turn, video-level labels only), 150 normal +
  140 anomalous test videos (one interval each), ~440 sampled frames a video (stride 16 of
  30 fps video: T uniform in [220, 660]).
* ``sht`` -- ShanghaiTech Campus, one-class protocol: 330 training videos, all normal;
  107 test videos. All frames are sampled (as VLAVAD and Gao do): ShanghaiTech has 274,515
  training frames in 330 videos and 42,883 test frames in 107, so ~832 and ~401 samples a
  video (T uniform in [F/2, 3F/2]), stride 1 at 24 fps. Every one of the 107 original test
  videos holds an anomaly (Zhong et al.'s weak re-split counts them: 63 anomalous training
  + 44 anomalous test videos = 107), so every test video gets one interval, labelled
  ``anomaly`` (the one-class manifest's label; no class list); the manifest's meta says
  ``dataset: shanghaitech, split: one-class`` as the benchmark builder's does.

Planted structure (both shapes): normal frames lie around one centre (a random vector plus
unit Gaussian noise per frame); an anomalous video carries a direction on one interval of
T/8..T/2 frames (UCF-Crime: its class's direction, in training and test videos; ShanghaiTech:
one of 17 directions, test videos only), then every row is scaled to norm 10. The ``ucf``
shape writes exactly what ``bench_anomalyclip.py`` wrote before it moved here (same seed,
same draws).

``--scale`` scales the video counts (at least 2 of each kind that exists), never the frames
a video has. :func:`ensure_cache` builds a cache once per (shape, scale) in a child process
(the caller's peak RSS stays its own) and reuses it: ``done.json`` is written last and
holds the counts and frame totals.

    python bench/synthetic_cache.py --dataset ucf|sht --scale 0.05 --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ucf_sized import CLASSES, UCF

KEY = "ViT-B-32:random"
DIM = 512
MARKER = "done.json"

# video counts and mean sampled frames per video (train, test) of each shape at full size
SHAPES: dict[str, dict] = {
    "ucf": {"name": "UCF-Crime", "counts": dict(UCF), "frames": (440, 440), "stride": 16, "fps": 30.0,
            "classes": list(CLASSES), "meta": {}},
    "sht": {"name": "ShanghaiTech (one-class)",
            "counts": {"normal": 330, "anomalous": 0, "test_normal": 0, "test_anomalous": 107},
            "frames": (round(274_515 / 330), round(42_883 / 107)), "stride": 1, "fps": 24.0,
            "classes": ["anomaly"], "meta": {"dataset": "shanghaitech", "split": "one-class"}},
}
SHT_DIRECTIONS = 17  # ShanghaiTech's semantic anomaly classes: one planted direction each


def counts(dataset: str, scale: float) -> dict:
    """The shape's video counts scaled (at least 2 of each kind it has)."""
    return {k: (max(2, round(v * scale)) if v else 0) for k, v in SHAPES[dataset]["counts"].items()}


def frame_range(mean: int) -> tuple[int, int]:
    """Sampled frames of a video: uniform in [lo, hi] (mean ~ ``mean``)."""
    return mean // 2, 3 * mean // 2


def full_size(dataset: str) -> dict:
    """Expected totals of the full-size cache: videos and sampled frames per kind, feature bytes."""
    shape = SHAPES[dataset]
    n = shape["counts"]
    train_t, test_t = (sum(frame_range(f)) / 2 for f in shape["frames"])
    out = {
        "train_videos": n["normal"] + n["anomalous"],
        "train_normal_videos": n["normal"],
        "test_videos": n["test_normal"] + n["test_anomalous"],
        "train_frames": (n["normal"] + n["anomalous"]) * train_t,
        "train_normal_frames": n["normal"] * train_t,
        "test_frames": (n["test_normal"] + n["test_anomalous"]) * test_t,
        "anomalous_videos": n["anomalous"],
    }
    out["feature_bytes"] = (out["train_frames"] + out["test_frames"]) * DIM * 2
    return out


def build(root: Path, dataset: str, scale: float, seed: int = 0) -> dict:
    """Write the synthetic cache and manifest of ``dataset`` at ``scale`` into ``root``;
    returns the totals written into ``done.json``."""
    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import Interval, Manifest, VideoEntry
    from vadpipe.encoders import load_clip

    shape = SHAPES[dataset]
    n = counts(dataset, scale)
    stride, fps = shape["stride"], shape["fps"]
    rng = np.random.default_rng(seed)
    enc = load_clip(KEY)
    cache = FeatureCache(root / "cache.zarr", mode="a")
    cache.ensure_encoder(KEY, {**enc.recipe(), "sampling": {"mode": "synthetic-bench", "stride": stride},
                               "normalised": False})  # raw rows, as featurize stores them
    normal_centre = rng.normal(size=DIM)
    n_dirs = len(shape["classes"]) if dataset == "ucf" else SHT_DIRECTIONS
    class_dirs = rng.normal(size=(n_dirs, DIM)) * 0.6
    entries = []
    totals = {"train_frames": 0, "train_normal_frames": 0, "test_frames": 0}

    def video(vid: str, split: str, label: str) -> None:
        lo, hi = frame_range(shape["frames"][0 if split == "train" else 1])
        T = int(rng.integers(lo, hi + 1))
        emb = normal_centre + rng.normal(size=(T, DIM)).astype(np.float32)
        intervals = ()
        if label != "normal":
            length = int(rng.integers(T // 8, T // 2))
            start = int(rng.integers(0, T - length))
            d = CLASSES.index(label) if dataset == "ucf" else int(rng.integers(n_dirs))
            emb[start : start + length] += class_dirs[d] * np.sqrt(DIM) / 4
            intervals = (Interval(start * stride, (start + length) * stride),)
        emb *= 10 / np.linalg.norm(emb, axis=1, keepdims=True)  # about the norm of raw ViT-B features
        cache.write_video(KEY, vid, np.arange(T) * stride, np.arange(T) * stride / fps, emb.astype(np.float16),
                          {"num_frames": T * stride, "fps": fps})
        entries.append(VideoEntry(vid, f"{vid}.mp4", split, label, intervals if split == "test" else (),
                                  num_frames=T * stride))
        totals[f"{split}_frames"] += T
        if split == "train" and label == "normal":
            totals["train_normal_frames"] += T

    if dataset == "ucf":
        from ucf_sized import write_videos

        write_videos(n, video)
    else:  # ShanghaiTech-like ids: scene_video (3 digits training, 4 digits test)
        for i in range(n["normal"]):
            video(f"{i % 13 + 1:02d}_{i:03d}", "train", "normal")
        for i in range(n["test_anomalous"]):
            video(f"{i % 12 + 1:02d}_{i:04d}", "test", "anomaly")
    Manifest(entries, meta=dict(shape["meta"])).save(root / "manifest.csv")
    info = {
        "dataset": dataset, "scale": scale, "seed": seed, "key": KEY, "dim": DIM, **n,
        "train_videos": n["normal"] + n["anomalous"], "train_normal_videos": n["normal"],
        "test_videos": n["test_normal"] + n["test_anomalous"], "anomalous_videos": n["anomalous"], **totals,
        "feature_bytes": (totals["train_frames"] + totals["test_frames"]) * DIM * 2,
    }
    (root / MARKER).write_text(json.dumps(info, indent=1) + "\n")
    return info


def cache_root(base: str | Path, dataset: str, scale: float) -> Path:
    return Path(base) / f"{dataset}-scale-{scale:g}"


def ensure_cache(base: str | Path, dataset: str, scale: float, seed: int = 0) -> tuple[Path, dict]:
    """The cache of ``dataset`` at ``scale`` under ``base``: reused when its ``done.json``
    exists, else (re)built in a child process. Returns its folder and ``done.json``."""
    root = cache_root(base, dataset, scale)
    if not (root / MARKER).exists():
        if root.exists():  # an interrupted build
            shutil.rmtree(root)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--dataset", dataset, "--scale", str(scale),
                        "--seed", str(seed), "--out", str(root)], check=True)
        print(f"built the synthetic {SHAPES[dataset]['name']} cache (scale {scale:g}) in "
              f"{time.perf_counter() - t0:.0f} s: {root}", file=sys.stderr, flush=True)
    return root, json.loads((root / MARKER).read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(SHAPES), required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder of the cache (cache.zarr, manifest.csv, done.json)")
    args = ap.parse_args()
    info = build(Path(args.out), args.dataset, args.scale, args.seed)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
