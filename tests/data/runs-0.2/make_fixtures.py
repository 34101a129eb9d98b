"""How the run folders here were made: vadpipe 0.2.0 (commit dbf0a51), before the heads
package and the module-state checkpoints. Run from a checkout of that commit:

    PYTHONPATH=<that checkout> python make_fixtures.py <that checkout>/tests OUT_DIR

Each run folder is exactly as 0.2.0 saved it: one per head on
``test_heads.planted_sphere(n_train=3, n_test=2, n_weak=3)`` (``clipassist-frame`` is 0.2's
``clipassist`` with ``mode="frame"``; the ``anomalyclip`` run says ``device: "cuda"``, as a run
trained on a GPU did), ``kmeans-learned`` with a learned prompt context (0.2 saved it), and
``s3m-captions`` on ``test_s3m.answers_cache()`` (SPA tables under 0.2's names).
``scores.npz`` holds what 0.2.0 scored with each; tests/test_heads.py loads the folders with
today's code and expects the same scores in every field.
"""

import json
import sys
from pathlib import Path

import numpy as np

tests, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(tests))
import test_heads  # noqa: E402  (0.2.0's own test helpers)
import test_s3m  # noqa: E402
from vadpipe.models import get_head  # noqa: E402

FAST = dict(test_heads.FAST)
SPHERE = {name: (name, FAST.get(name, {})) for name in ("anomalyclip", "clipassist", "kmeans", "prototype", "s3m", "zeroshot")}
SPHERE["clipassist-frame"] = ("clipassist", {"mode": "frame", "epochs": 1})
SPHERE["kmeans-learned"] = ("kmeans", {**FAST["kmeans"], "learn_prompts": True, "prompt_steps": 3, "lr": 5e-3})
sphere = test_heads.planted_sphere(out / "tmp", n_train=3, n_test=2, n_weak=3)
answers = test_s3m.answers_cache(out / "tmp" / "answers.zarr")
RUNS = {run: (*spec, sphere) for run, spec in SPHERE.items()}
RUNS["s3m-captions"] = ("s3m", dict(test_s3m.SMALL, epochs=1, sigma=3), answers)
arrays = {}
for run, (head, params, (cache, manifest)) in RUNS.items():
    model = get_head(head, **params).fit(cache, manifest)
    model.save(out / run)
    for vid, s in model.score_videos(cache, manifest.ids("test")).items():
        arrays[f"{run}/{vid}/frame_index"] = s.frame_index
        arrays[f"{run}/{vid}/score"] = s.score
        if s.class_probs is not None:
            arrays[f"{run}/{vid}/class_probs"] = s.class_probs
            arrays[f"{run}/{vid}/class_names"] = np.array(s.class_names, dtype=str)
        if s.explanation is not None:
            arrays[f"{run}/{vid}/explanation"] = np.array(s.explanation, dtype=str)
config = json.loads((out / "anomalyclip" / "config.json").read_text())
config["config"]["device"] = "cuda"  # as saved by a run trained with device=cuda
(out / "anomalyclip" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
np.savez(out / "scores.npz", **arrays)
