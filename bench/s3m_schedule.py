"""Training curve of the ``s3m`` head (VLAVAD's S3M): how many optimiser steps?

VLAVAD gives no batch size and no epoch count for S3M. vadpipe trains ``epochs`` (20) shuffled
passes over the windows of the normal training videos, cut at ``max_steps`` optimiser steps
(batches of 64 windows). This benchmark measures the held-out frame AUC of A_t against the
number of steps, on planted dynamics at the size of a benchmark's training set, to choose
``max_steps``: the cost of a step does not depend on the data, so without the cut a
UCF-Crime-sized set (800 normal videos x ~440 samples = 352k windows) takes 110k steps.

**Cache** (written once under ``--dir``): D = 512 (ViT-B size). ``--scenes`` circles, each
through a random centre in a random plane (radius 0.6) and each with its own speed; a
normal video follows one scene's circle at that scene's speed from a random phase, with
noise 0.05 per dimension / sqrt(D) x 10 (``--noise``). A test video breaks its trajectory for
25 samples: it stops (even ids) or runs backwards (odd). Every anomalous embedding lies on
its normal circle, so only the dynamics give it away (as tests/test_s3m.py's circle test,
at scale and with many scenes). ``--videos`` training videos of ``--frames`` samples.

**Measurement.** One ``get_head("s3m", max_steps=n, sigma=0).fit(...)`` per n (the cosine
schedule ends at each n, so each row is its own run, as a user would get it), then the frame
AUC of the test videos, the last 50 steps' mean training loss and seconds per step.

    python bench/s3m_schedule.py [--videos 200] [--frames 440] [--scenes 16]
        [--steps 125,250,500,1000,2000] [--batch-size 64] [--threads N] [--dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

D = 512
KEY = "vadpipe-bench:s3m"


def build(root: Path, videos: int, frames: int, scenes: int, noise: float, seed: int = 0):
    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import Interval, Manifest, VideoEntry

    path, manifest_path = root / "cache.zarr", root / "manifest.csv"
    if (root / "done").exists():
        from vadpipe.data_manifests import load_manifest

        return FeatureCache(path), load_manifest(manifest_path)
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(D, 3 * scenes)))[0].T.reshape(scenes, 3, D)  # centre, u, v per scene
    speed = rng.uniform(2 * np.pi / 40, 2 * np.pi / 15, size=scenes)
    cache = FeatureCache(path, mode="a")
    cache.ensure_encoder(KEY, {"kind": "image", "model": "bench", "dim": D, "sampling": {"mode": "planted"},
                               "normalised": False})
    entries = []

    def video(vid, split, broken):
        k = int(rng.integers(scenes))
        c, u, v = basis[k]
        steps = np.full(frames, speed[k])
        intervals = ()
        if broken is not None:
            a = int(rng.integers(30, frames - 60))
            steps[a : a + 25] = 0.0 if broken else -speed[k]
            intervals = (Interval(a, a + 25),)
        phase = rng.uniform(0, 2 * np.pi) + np.cumsum(steps)
        emb = c + 0.6 * (np.cos(phase)[:, None] * u + np.sin(phase)[:, None] * v)
        emb += noise / np.sqrt(D) * rng.normal(size=(frames, D))
        cache.write_video(KEY, vid, np.arange(frames), np.arange(frames) / 25.0, emb.astype(np.float16),
                          {"num_frames": frames, "fps": 25.0})
        entries.append(VideoEntry(vid, "x", split, "normal" if broken is None else "anomaly", intervals,
                                  num_frames=frames if split == "test" else None))

    for i in range(videos):
        video(f"tr{i:04d}", "train", None)
    for i in range(max(8, videos // 5)):
        video(f"te{i:04d}", "test", i % 2 == 0)
    Manifest(entries).save(manifest_path)
    (root / "done").touch()
    cache.close()
    return FeatureCache(path), Manifest(entries)


def frame_auc_of(manifest, scores) -> float:
    """ROC AUC of the sampled frames' scores against the manifest's frame labels."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([manifest[v].frame_labels(s.num_frames)[s.frame_index] for v, s in scores.items()])
    return float(roc_auc_score(y, np.concatenate([s.score for s in scores.values()])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--frames", type=int, default=440)
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--steps", default="125,250,500,1000,2000")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vadpipe-bench-s3m"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from vadpipe.heads import get_head

    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.dir / f"v{args.videos}-f{args.frames}-s{args.scenes}-n{args.noise:g}"
    root.mkdir(parents=True, exist_ok=True)
    cache, manifest = build(root, args.videos, args.frames, args.scenes, args.noise)
    rows = []
    print(f"{args.videos} training videos x {args.frames} samples, {args.scenes} scenes, D={D}; "
          f"batch {args.batch_size}; {torch.get_num_threads()} threads")
    print("| max_steps | steps run | epochs | frame AUC | loss (last 50) | s / step | fit s |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in args.steps.split(",")]:
        t = time.perf_counter()
        head = get_head("s3m", max_steps=n, sigma=0.0, batch_size=args.batch_size, device="cpu").fit(cache, manifest)
        fit_s = time.perf_counter() - t
        auc = frame_auc_of(manifest, head.score_videos(cache, manifest.ids("test")))
        steps = len(head.losses_)
        windows = args.videos * (args.frames - 1)
        row = {"max_steps": n, "steps": steps, "epochs": steps * args.batch_size / windows, "auc": auc,
               "loss": float(np.mean(head.losses_[-50:])), "s_per_step": fit_s / steps, "fit_s": fit_s}
        rows.append(row)
        print(f"| {n} | {steps} | {row['epochs']:.2f} | {auc:.4f} | {row['loss']:.4f} | {row['s_per_step']:.4f} | {fit_s:.1f} |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
