"""Benchmark: one training epoch of the ``anomalyclip`` head on a UCF-Crime-sized cache.

UCF-Crime's training split: 800 normal + 810 anomalous videos (13 classes), ~440 sampled
frames each, 512-d (ViT-B-32: the head's text tower must be the cache's model, so the cache
is written under ``ViT-B-32:random``, which builds offline); 290 test videos are scored.
The head runs with the paper's defaults (S=32, F=16, B=64, embedding 256, 1 layer, CoOp
8 contexts, fine-tuned text projection) and ``epochs=1``.

Reports seconds per epoch and per step, peak memory (RSS) of the training process, and the
scoring time of the test videos. ``--scale`` shrinks the number of videos (not the clip or
batch size, so one step costs the same); the report extrapolates to the full size:
an epoch is 810 // 32 = 25 steps at full size (the authors' loaders drop the last partial
batch), the features held in memory grow with the number of videos, and scoring time grows
with the number of test videos. The cache is
:mod:`synthetic_cache`'s ``ucf`` shape (built once per scale under ``--dir``, then reused);
``bench_heads.py`` times every head on it.

    python bench/bench_anomalyclip.py [--scale 1.0] [--device cpu] [--threads N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from synthetic_cache import DIM, KEY, ensure_cache
from ucf_sized import UCF
from ucf_sized import counts as ucf_counts

FRAMES = 440  # sampled frames per video (synthetic_cache.SHAPES["ucf"])


def counts(scale: float) -> dict:
    return {**ucf_counts(scale), "frames": FRAMES}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of UCF-Crime's video counts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--dir", default="/tmp/vadpipe-bench-anomalyclip")
    args = ap.parse_args()
    root, _ = ensure_cache(args.dir, "ucf", args.scale)  # built once (in a child), then reused

    import torch

    import vadpipe.heads.anomalyclip.head as ac
    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import load_manifest
    from vadpipe.heads import get_head

    if args.threads:
        torch.set_num_threads(args.threads)
    cache, manifest = FeatureCache(root / "cache.zarr"), load_manifest(root / "manifest.csv")
    n = counts(args.scale)
    frames = sum(cache.read(KEY, e.video_id).emb.shape[0] for e in manifest.select(split="train"))
    rss_start = peak_rss_mb()

    timings = {}
    train = ac.train_anomalyclip

    def timed_train(*a, **k):  # the optimisation loop alone, without reading or the text tower
        t0 = time.perf_counter()
        out = train(*a, **k)
        timings["train"] = time.perf_counter() - t0
        return out

    ac.train_anomalyclip = timed_train
    # one epoch timed; lr 1e-3 so that the head's refusal of a schedule too short to train (one
    # epoch at 1e-5 is one lr-0 epoch) lets it run: a step costs the same at any lr
    head = get_head("anomalyclip", epochs=1, warmup_epochs=0, lr=1e-3, device=args.device)
    t0 = time.perf_counter()
    head.fit(cache, manifest)
    fit_s = time.perf_counter() - t0
    rss_fit = peak_rss_mb()
    steps = len(head.history_)

    test_ids = manifest.ids("test")
    t0 = time.perf_counter()
    scores = head.score_videos(cache, test_ids)
    score_s = time.perf_counter() - t0
    test_frames = sum(len(s.score) for s in scores.values())

    from vadpipe.heads.anomalyclip.train import steps_per_epoch

    full_steps = steps_per_epoch(UCF["anomalous"], UCF["normal"], head.config.batch_size)
    step_s = timings["train"] / steps
    feat_bytes_full = (UCF["normal"] + UCF["anomalous"]) * FRAMES * DIM * 2
    feat_bytes_here = frames * DIM * 2
    report = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "scale": args.scale,
        "train_videos": n["normal"] + n["anomalous"],
        "train_sampled_frames": frames,
        "steps_per_epoch": steps,
        "seconds_per_step": round(step_s, 2),
        "seconds_per_epoch_measured": round(timings["train"], 1),
        "fit_seconds_total": round(fit_s, 1),
        "peak_rss_mb_before_fit": round(rss_start),
        "peak_rss_mb_fit": round(rss_fit),
        "test_videos": len(test_ids),
        "test_sampled_frames": test_frames,
        "score_seconds": round(score_s, 1),
        "extrapolated_full_size": {
            "steps_per_epoch": full_steps,
            "seconds_per_epoch": round(step_s * full_steps),
            "peak_rss_mb": round(rss_fit + (feat_bytes_full - feat_bytes_here) / 2**20),
            "score_seconds_290_videos": round(score_s / max(test_frames, 1) * 290 * FRAMES),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
