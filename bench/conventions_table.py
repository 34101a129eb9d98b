"""How much each evaluation convention moves the numbers, on synthetic scores over the real
annotation files (the table in docs/evaluation.md).

For each benchmark whose annotation files are in ../shared/data/annotations, seeded
synthetic snippet scores (16 frames a snippet; random, structured = correlated with the
ground truth, and the structured ones rounded to 0.1 so they tie) are evaluated under every
convention that applies to the benchmark; the table gives the headline metrics and their
difference to the ``vadpipe`` convention. Video lengths are the real ones where the
annotations give them (ShanghaiTech masks, Avenue, Ped2), else the last annotated frame plus
16-300 frames (normal videos: 100-600 frames).

    python bench/conventions_table.py [--annotations ../shared/data/annotations]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from vadpipe.data_manifests.benchmarks import build_benchmark_manifest
from vadpipe.evaluate import EvalConfig, evaluate
from vadpipe.scores import Scores

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations"
DATASETS = {  # dataset: (annotation folder, builder options, conventions that apply, metrics shown)
    "ucf_crime": ("ucf_crime", {}, ("rtfm", "vadclip", "lavad", "anomalyclip"), ("micro_auc", "ap")),
    "xd_violence": ("xd_violence", {}, ("vadclip", "xdviodet", "lavad", "anomalyclip"), ("ap", "micro_auc")),
    "shanghaitech": ("shanghaitech", {"split": "weak"}, ("rtfm",), ("micro_auc", "ap")),
    "avenue": ("avenue", {}, ("mnad",), ("micro_auc", "macro_auc")),
    "ped2": ("ucsd_ped2", {}, ("mnad",), ("micro_auc", "macro_auc")),
}
PED2_LENGTHS = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)


def lengths_of(manifest, rng) -> dict[str, int]:
    out = {}
    for i, e in enumerate(manifest.select("test")):
        if e.num_frames:
            out[e.video_id] = e.num_frames
        elif e.mask_path:
            out[e.video_id] = len(np.load(e.mask_path))
        elif manifest.meta.get("dataset") == "ped2":
            out[e.video_id] = PED2_LENGTHS[i]
        elif e.intervals:
            out[e.video_id] = max(iv.end for iv in e.intervals) + int(rng.integers(16, 300))
        else:
            out[e.video_id] = int(rng.integers(100, 600))
    return out


def synthetic_scores(manifest, lengths, kind, rng) -> dict[str, Scores]:
    out = {}
    for e in manifest.select("test"):
        n = lengths[e.video_id]
        labels = e.frame_labels(n) if e.mask_path else np.zeros(n)
        for iv in e.intervals:
            labels[iv.start : min(iv.end, n)] = 1
        T = math.ceil(n / 16)
        if kind == "random":
            p = rng.random(T)
        else:
            per = np.array([labels[16 * i : 16 * (i + 1)].mean() for i in range(T)])
            p = 0.25 * per + 0.5 * rng.random(T) + 0.3 * rng.random()  # a per-video offset too
            p = np.round(p, 1) if kind == "ties" else p
        out[e.video_id] = Scores(np.arange(T) * 16, p, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path, default=ROOT)
    args = ap.parse_args()
    print("| dataset | convention | metric | random | structured | ties | vadpipe (structured) |")
    print("|---|---|---|---|---|---|---|")
    for dataset, (folder, options, conventions, metrics) in DATASETS.items():
        if not (args.annotations / folder).is_dir():
            print(f"| {dataset} | (annotations not found) | | | | | |")
            continue
        manifest = build_benchmark_manifest(dataset, args.annotations / folder, "/nonexistent", **options)
        rng = np.random.default_rng(0)
        lengths = lengths_of(manifest, rng)
        runs = {kind: synthetic_scores(manifest, lengths, kind, rng) for kind in ("random", "structured", "ties")}
        for convention in conventions:
            reports = {k: evaluate(s, manifest, None, EvalConfig(convention=convention, plots=False))
                       for k, s in runs.items()}
            for m in metrics:
                diffs = [reports[k][m] - reports[k]["vadpipe_convention"][m] for k in runs]
                cells = " | ".join(f"{d:+.2e}" for d in diffs)
                print(f"| {dataset} | {convention} | {m} | {cells} | {reports['structured']['vadpipe_convention'][m]:.4f} |")


if __name__ == "__main__":
    main()
