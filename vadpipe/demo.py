"""``vadpipe demo``: the whole flow on a synthetic scene, end to end.

Generates the synthetic footpath dataset (``vadpipe.synth``), featurizes it, trains and
scores the ``prototype`` and ``zeroshot`` heads, evaluates both and returns their reports.
The default encoder is a real open_clip model (weights downloaded by open_clip on first use);
``vadpipe-tiny`` runs offline with random weights, so its numbers measure the plumbing,
not CLIP.
"""

from __future__ import annotations

from pathlib import Path

from vadpipe.evaluate import EvalConfig, evaluate
from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
from vadpipe.runs import score_run, train_head
from vadpipe.synth import make_demo_dataset

DEFAULT_ENCODER = "ViT-B-32:openai"
SCENE_PROMPTS = {  # vadpipe's normal-vs-anomaly softmax: the demo scene has a normal description to weigh against
    "mode": "softmax",
    "normal_prompts": ["people walking on a footpath", "a quiet park with a footpath", "pedestrians on a path"],
    "anomaly_prompts": ["a car driving on a footpath", "a fire", "a person walking on the grass", "a person running"],
}


def run_demo(out_dir: str | Path, encoder: str = DEFAULT_ENCODER, stride: int = 2, device: str = "auto",
             progress: bool = False) -> dict:
    out = Path(out_dir)
    manifest_path = out / "data" / "manifest.csv"
    if manifest_path.exists():
        from vadpipe.data_manifests import load_manifest

        manifest = load_manifest(manifest_path)
    else:
        manifest = make_demo_dataset(out / "data")
    cache = out / "cache.zarr"
    summary = featurize(
        manifest, cache, FeaturizeConfig(encoder=encoder, sampling=Sampling(stride), device=device), progress=progress
    )
    reports = {}
    for head, params in (("prototype", {}), ("zeroshot", SCENE_PROMPTS)):
        run = out / "runs" / head
        train_head(head, cache, manifest, run, encoder=encoder, params=params, device=device)
        scored = score_run(run, cache, manifest, out / "scores" / f"{head}.zarr", device=device)
        reports[head] = evaluate(scored.path, manifest, out / "reports" / head, EvalConfig())
        reports[head]["run_dir"] = str(run)
    return {"featurize": summary, "reports": reports, "out": str(out)}
