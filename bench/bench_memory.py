"""Benchmark: peak memory of featurize on a 1-minute vs a 30-minute video (target ratio <= 1.2).

Each run is a fresh process (`vadpipe featurize`, decode in a thread so one process holds
everything), whose peak RSS is read from the kernel (ru_maxrss of the child).

    python bench/bench_memory.py [--encoder ViT-B-32:random] [--stride 20] [--dir /tmp/vadpipe-bench-mem]

Both videos must fill at least one full batch (64 samples): the encoder's activations for
a full batch are the largest single allocation, and a short video that never fills one
would make the long one look worse than it is.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_long_video  # noqa: E402


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a child; return its peak RSS (MiB) and wall time."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t); "
        "sys.exit(r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    rss, wall = out.stdout.strip().splitlines()[-1].split()
    return float(rss), float(wall)


def featurize_cmd(manifest: Path, cache: Path, encoder: str, stride: int, *extra: str) -> list[str]:
    """``vadpipe featurize`` in a fresh Python, as the benchmarks run it."""
    return [sys.executable, "-c", "from vadpipe.cli import app; app()", "featurize", str(manifest), "--cache",
            str(cache), "--encoder", encoder, "--stride", str(stride), "--no-progress", *extra]


def peak_rss_by_length(root: Path, minutes_list, encoder: str, stride: int, *extra: str,
                       label: str = "") -> dict[float, float]:
    """Peak RSS (MiB) of featurize (decode in a thread: one process holds everything) on a
    synthetic video of each length in ``minutes_list``; prints one line per length."""
    results = {}
    for minutes in minutes_list:
        t = time.perf_counter()
        video = write_long_video(root / f"v{minutes:g}min.mp4", minutes * 60)
        print(f"wrote {video.name} ({video.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
        manifest = root / f"m{minutes:g}.csv"
        manifest.write_text(f"video_id,path,split,label\nv,{video},test,normal\n")
        rss, wall = peak_rss_mib(featurize_cmd(manifest, root / f"c{minutes:g}.zarr", encoder, stride,
                                               "--workers", "0", *extra))
        results[minutes] = rss
        print(f"{minutes:g} min video{label}: peak RSS {rss:.0f} MiB, {wall:.0f} s")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="ViT-B-32:random")
    ap.add_argument("--stride", type=int, default=20)  # >= one full batch of 64 even in 1 minute
    ap.add_argument("--minutes", type=float, nargs=2, default=(1, 30))
    ap.add_argument("--dir", default="/tmp/vadpipe-bench-mem")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results = peak_rss_by_length(root, args.minutes, args.encoder, args.stride)
    a, b = args.minutes
    print(f"peak RSS ratio {b:g} min / {a:g} min = {results[b] / results[a]:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
