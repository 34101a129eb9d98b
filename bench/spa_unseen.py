"""How much vadpipe's rule for unseen answers moves s3m's AUC (VLAVAD's SPA, sec. 3.3.1).

The paper scores "the reciprocal of the frequency" of an answer in the normal training data
and says nothing about answers never seen there. vadpipe's default (``spa_unseen="nearest"``)
lets an unseen answer borrow the count of its nearest seen answer in CLIP text space, scaled
to zero as the cosine falls to ``spa_similarity_floor``; ``"exact"`` is the literal reading
(unseen = count 0 = most anomalous). Both are read at scoring time only, so one trained run
serves the whole sweep.

Needs a real captioned cache (BLIP-2 answers on Ped2 / Avenue / ShanghaiTech frames) and a
run trained on it; vadpipe's sandbox has neither BLIP-2 weights nor a GPU, so the numbers are
yours to make:

    vadpipe recipes run vlavad-ped2 --videos ... --annotations ... -o work/ped2
    python bench/spa_unseen.py work/ped2/run work/ped2/features.zarr work/ped2/manifest.csv

Prints, for the SPA-selected question, the share of test frames whose answer was never seen
(by ground truth), then micro AUC for ``exact`` and for ``nearest`` at several floors.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np


def main(run_dir: str, cache_path: str, manifest_path: str) -> None:
    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import load_manifest
    from vadpipe.evaluate import evaluate
    from vadpipe.evaluate.run import EvalConfig
    from vadpipe.heads import load_head
    from vadpipe.heads.data import read_video

    head = load_head(run_dir, device="cpu")
    manifest = load_manifest(manifest_path)
    ids = manifest.ids("test")
    with FeatureCache(cache_path) as cache:
        q = head.spa_questions_[0]
        seen = set(head.spa_answers_[0])
        unseen = {"normal": [0, 0], "anomalous": [0, 0]}
        for vid in ids:
            video = read_video(cache, head.sources(), vid)
            labels = manifest[vid].frame_labels(video.num_frames)[video.frame_index]
            new = np.array([a not in seen for a in video.captions.text[:, q]])
            for name, mask in (("normal", labels == 0), ("anomalous", labels == 1)):
                unseen[name][0] += int(new[mask].sum())
                unseen[name][1] += int(mask.sum())
        for name, (n, total) in unseen.items():
            print(f"{name} test frames with an unseen answer: {n}/{total} ({n / max(total, 1):.1%})")
        settings = [("exact", 0.8)] + [("nearest", f) for f in (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)]
        for mode, floor in settings:
            head.config = replace(head.config, spa_unseen=mode, spa_similarity_floor=floor)
            scores = head.score_videos(cache, ids)
            auc = evaluate(scores, manifest, config=EvalConfig(plots=False))["micro_auc"]
            print(f"spa_unseen={mode:<8} floor={floor:<5} micro AUC {auc:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
