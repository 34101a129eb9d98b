"""Benchmark: read a UCF-Crime-sized cache into memory vs np.load of the same bytes.

1610 videos x ~440 sampled frames x 512-d float16 (about 725 MB). Reports the read-speed
ratio (target >= 0.8: vadpipe reads at least 80% as fast as plain .npy files) and the cache
size over the raw float16 bytes (target <= 1.05), for Zarr and HDF5. The files were just
written, so reads come from the page cache: this compares the readers' own overhead, which
is what vadpipe controls (a cold disk slows both alike). vadpipe reads frame_index, pts and
attributes too; np.load reads the embeddings alone.

    python bench/bench_cache_read.py [--videos 1610] [--frames 440] [--dim 512] [--dir /tmp/bench]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from vadpipe.cache import FeatureCache
from vadpipe.cache.tools import disk_bytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1610)
    ap.add_argument("--frames", type=int, default=440)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dir", default="/tmp/vadpipe-bench-cache")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(int(args.frames * 0.5), int(args.frames * 1.5), args.videos)
    key = "ViT-B-32:random"
    raw = 0
    npy = root / "npy"
    npy.mkdir()
    caches = {"zarr": root / "c.zarr", "hdf5": root / "c.h5"}
    writers = {k: FeatureCache(p, mode="a") for k, p in caches.items()}
    for w in writers.values():
        w.ensure_encoder(key, {"model": "ViT-B-32", "pretrained": "random", "dim": args.dim})
    t = {k: 0.0 for k in caches}
    for i, T in enumerate(lengths):
        emb = rng.standard_normal((T, args.dim), dtype=np.float32)
        emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
        raw += emb.nbytes
        np.save(npy / f"v{i:05d}.npy", emb)
        for k, w in writers.items():
            t0 = time.perf_counter()
            w.write_video(key, f"v{i:05d}", np.arange(T) * 16, np.arange(T) * 0.5, emb, {"num_frames": int(T * 16)})
            t[k] += time.perf_counter() - t0
    for w in writers.values():
        w.close()
    ids = [f"v{i:05d}" for i in range(args.videos)]

    # both readers keep everything in memory, as a head loading its training set does; the
    # readers take turns, three rounds, best time of each (page cache and fresh-page faults
    # otherwise favour whoever runs second)
    def read_npy():
        return [np.load(npy / f"{v}.npy") for v in ids]

    def read_cache(path):
        with FeatureCache(path) as cache:
            return [f.emb for f in cache.iter_videos(key, ids)]

    readers = {"np.load": read_npy, **{k: (lambda p=p: read_cache(p)) for k, p in caches.items()}}
    best = {k: float("inf") for k in readers}
    for _ in range(3):
        for name, read in readers.items():
            t0 = time.perf_counter()
            loaded = read()
            best[name] = min(best[name], time.perf_counter() - t0)
            assert sum(a.nbytes for a in loaded) == raw
            del loaded
    print(f"{args.videos} videos, {raw / 2**20:.0f} MiB raw float16; np.load: {best['np.load']:.2f} s "
          f"({raw / 2**20 / best['np.load']:.0f} MiB/s)")
    for k, p in caches.items():
        size = disk_bytes(p)
        files = sum(1 for f in p.rglob("*") if f.is_file()) if p.is_dir() else 1
        print(f"{k}: write {t[k]:.1f} s; read {best[k]:.2f} s; speed ratio vs np.load {best['np.load'] / best[k]:.2f} "
              f"(target >= 0.8); size {size / raw:.3f} x raw (target <= 1.05); {files} files")


if __name__ == "__main__":
    main()
