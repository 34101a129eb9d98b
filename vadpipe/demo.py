"""``vadpipe demo``: the whole flow on a synthetic scene, end to end.

Generates the synthetic footpath dataset (``vadpipe.synth``), featurizes its frames and the
objects in them (``motion``: background subtraction, no weights), trains and scores the
``prototype`` and ``zeroshot`` heads on whole frames and ``zeroshot`` on the objects
(``unit=object``: its timelines show the boxed object behind each peak), evaluates each and
returns their reports.
The default encoder is a real open_clip model (weights downloaded by open_clip on first use);
``vadpipe-tiny`` runs offline with random weights, so its numbers measure the plumbing,
not CLIP.
"""

from __future__ import annotations

from pathlib import Path

from vadpipe.evaluate import EvalConfig, evaluate
from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
from vadpipe.objects import ObjectsConfig
from vadpipe.runs import score_run, train_head
from vadpipe.synth import make_demo_dataset

DEFAULT_ENCODER = "ViT-B-32:openai"
SCENE_PROMPTS = {  # vadpipe's normal-vs-anomaly softmax: the demo scene has a normal description to weigh against
    "mode": "softmax",
    "normal_prompts": ["people walking on a footpath", "a quiet park with a footpath", "pedestrians on a path"],
    "anomaly_prompts": ["a car driving on a footpath", "a fire", "a person walking on the grass", "a person running"],
}
STEPS = (  # name (run, scores and report folder), head, parameters
    ("prototype", "prototype", {}),
    ("zeroshot", "zeroshot", SCENE_PROMPTS),
    ("zeroshot-objects", "zeroshot", {**SCENE_PROMPTS, "unit": "object"}),
)


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
    config = FeaturizeConfig(encoder=encoder, sampling=Sampling(stride), device=device,
                             objects=ObjectsConfig.parse("motion"))
    summary = featurize(manifest, cache, config, progress=progress)
    reports = {}
    for name, head, params in STEPS:
        run = out / "runs" / name
        train_head(head, cache, manifest, run, encoder=encoder, params=params, device=device)
        scored = score_run(run, cache, manifest, out / "scores" / f"{name}.zarr", device=device)
        reports[name] = evaluate(scored.path, manifest, out / "reports" / name, EvalConfig())
        reports[name]["run_dir"] = str(run)
    return {"featurize": summary, "reports": reports, "out": str(out)}
