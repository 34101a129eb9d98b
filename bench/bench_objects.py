"""Benchmark: featurize with objects (detector + tracker + crops + encoder) against frames alone.

    python bench/bench_objects.py [--encoder ViT-B-32:random] [--seconds 30] [--videos 2] [--stride 8]
        [--detectors motion ssdlite320_mobilenet_v3_large] [--minutes 1 5] [--dir /tmp/vadpipe-bench-objects]

Throughput: the same synthetic footpath videos (walkers on a path, ``bench/_common.py``)
featurized into a fresh cache, frames only, then frames + objects with each detector (a
torchvision detector with random weights: its cost does not depend on them; score threshold 0
and at most 20 objects a frame, so the crops' share is not flattered by a random model finding
nothing). Each run is a fresh ``vadpipe featurize`` process with the default decode workers;
wall time from the child. Memory: peak RSS of featurize with ``--objects motion`` (decode in a
thread, one process) on a short and a long video, which must stay flat in video length.
Numbers go to docs/benchmarks.md with the command that made them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_long_video  # noqa: E402
from bench_memory import featurize_cmd, peak_rss_by_length, peak_rss_mib  # noqa: E402

TORCHVISION_SETTINGS = ["--objects-param", "weights=random", "--objects-param", "score_threshold=0",
                        "--objects-param", "max_objects=20"]


def objects_of(cache: Path) -> int:
    from vadpipe.cache.tools import cache_info

    return sum(e.get("objects", 0) for e in cache_info(cache)["encoders"].values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="ViT-B-32:random")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--detectors", nargs="+", default=["motion", "ssdlite320_mobilenet_v3_large"])
    ap.add_argument("--minutes", type=float, nargs=2, default=(1, 5))
    ap.add_argument("--dir", default="/tmp/vadpipe-bench-objects")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = ["video_id,path,split,label"]
    for i in range(args.videos):
        video = write_long_video(root / f"v{i}.mp4", args.seconds, seed=i)
        rows.append(f"v{i},{video},test,normal")
    manifest = root / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    samples = args.videos * int(args.seconds * 25 / args.stride)
    print(f"{args.videos} videos x {args.seconds:g} s at 25 fps, stride {args.stride}: {samples} sampled frames; "
          f"encoder {args.encoder}")
    _, base = peak_rss_mib(featurize_cmd(manifest, root / "frames.zarr", args.encoder, args.stride))
    print(f"frames only: {base:.1f} s ({samples / base:.1f} frames/s)")
    for det in args.detectors:
        extra = ["--objects", det] + (TORCHVISION_SETTINGS if det != "motion" else [])
        cache = root / f"{det}.zarr"
        rss, wall = peak_rss_mib(featurize_cmd(manifest, cache, args.encoder, args.stride, *extra))
        n = objects_of(cache)
        print(f"frames + objects ({det}): {wall:.1f} s, {n} objects ({n / samples:.1f} a frame), "
              f"{samples / wall:.1f} frames/s, {n / wall:.1f} objects/s; {wall / base:.2f}x the frames-only time; "
              f"peak RSS {rss:.0f} MiB")
    long = root / "long"
    long.mkdir()
    peaks = peak_rss_by_length(long, args.minutes, args.encoder, args.stride, "--objects", "motion",
                               label=" with objects (motion)")
    a, b = args.minutes
    print(f"peak RSS ratio {b:g} min / {a:g} min = {peaks[b] / peaks[a]:.3f} (flat: <= 1.2)")


if __name__ == "__main__":
    main()
