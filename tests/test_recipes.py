"""Recipes: every shipped recipe validates, and runs end to end with vadpipe-tiny on a stand-in.

Stand-ins: the real Ped2 and Avenue clips in ../shared (one-class recipes of those datasets,
their builders' manifests cut to the clips present), and a small synthetic set for the rest
(weakly supervised recipes get anomalous training videos with a class label). The papers'
schedules (S=32 x F=16 clips, batch 64, lr 1e-5 ...) cannot train on a dozen tiny videos --
the heads refuse them, as they should -- so each head runs with small settings passed as
overrides, which the final line reports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vadpipe.cli import app
from vadpipe.data_manifests import Manifest, load_manifest
from vadpipe.errors import VadpipeError
from vadpipe.data_manifests.benchmarks import cross_dataset_manifest as cross_dataset
from vadpipe.recipes import commands, list_recipes, load_recipe, run

from conftest import SHARED, TINY, make_tiny_blip2

ANNOTATIONS = SHARED / "data" / "annotations"
VIDEOS = SHARED / "data" / "videos"
# small settings that train in seconds on the stand-ins (the heads refuse the papers' there)
SMALL = {
    "anomalyclip": dict(num_segments=4, frames_per_segment=2, top_k=1, batch_size=8, embed_dim=32, heads=2,
                        epochs=4, warmup_epochs=1, lr=1e-2),
    "clipassist": dict(epochs=2, lr=1e-2, batch_size=8),
    "clipassist-frame": dict(epochs=2, lr=1e-2, batch_size=8),
    "kmeans": dict(prompt_steps=2, num_centers=2, n_init=1),
    "s3m": dict(epochs=1, d_model=32, d_state=16, lr=1e-2),
    "zeroshot": {},
}
REAL = {"ped2": ("ucsd_ped2", "ucsd_ped2"), "avenue": ("avenue", "avenue")}


def test_every_shipped_recipe_validates():
    names = list_recipes()
    assert len(names) >= 20
    cited = {load_recipe(n).cite.split()[0] for n in names}
    assert {"Ueki", "Zanella", "Dong", "Li", "Gao"} <= cited
    for name in names:
        recipe = load_recipe(name)  # head, every parameter, builder options, sampling, convention: checked
        assert recipe.differences, f"{name}: say what vadpipe does differently"
        assert all(0 < p["value"] < 1 for p in recipe.published)
        assert recipe.head["name"] in SMALL


def test_headline_rows_are_shipped():
    names = set(list_recipes())
    wanted = {"ueki-table1-anomaly-behavior", "ueki-table1-dangerous-activity", "ueki-table1-dangerous-behavior",
              "ueki-table2-per-class", "zanella-ucf-crime", "zanella-shanghaitech", "zanella-xd-violence",
              "vlavad-ped2", "vlavad-avenue", "vlavad-shanghaitech", "gao-ped2", "gao-avenue", "gao-shanghaitech",
              "gao-cross-avenue-to-shanghaitech", "gao-cross-shanghaitech-to-avenue", "gao-cross-shanghaitech-to-ped2",
              "gao-cross-avenue-to-ped2"}
    wanted |= {f"dong-{d}-{m}" for d in ("ucf-crime", "shanghaitech") for m in ("video", "local", "frame")}
    assert wanted <= names, sorted(wanted - names)


def test_bad_recipes_are_one_clear_line(tmp_path):
    good = json.loads((Path(load_recipe("gao-ped2").path)).read_text())
    cases = {
        "head": ({**good, "head": {"name": "kmeans", "params": {"centres": 3}}}, "unknown parameter"),
        "unit": ({**good, "head": {"name": "kmeans", "params": {"preset": "ped2"}}}, "add unit=object"),
        "objects": ({**good, "featurize": {**good["featurize"], "objects": {"detector": "yolox"}}}, "unknown detector"),
        "builder": ({**good, "dataset": {"builder": "ped3"}}, "unknown dataset builder 'ped3'"),
        "option": ({**good, "dataset": {"builder": "ped2", "options": {"split": "weak"}}}, "ped2 has no option"),
        "metric": ({**good, "published": [{"metric": "auroc", "value": 0.9}]}, "a published entry needs a metric"),
        "key": ({**good, "extra": 1}, r"unknown key\(s\) extra"),
        "sampling": ({**good, "featurize": {"encoder": TINY, "sampling": {"stride": 2, "fps": 5}}}, "choose one sampling"),
        "convention": ({**good, "evaluate": {"convention": "mine"}}, "unknown convention"),
        "percent": ({**good, "published": [{"metric": "micro_auc", "value": 99.3}]}, r"in \(0, 1\] \(86.36% is"),
        "captioner": ({**good, "captioner": {"model": "Salesforce/blip2-opt-2.7b"}}, "head 'kmeans' reads no captions"),
        "questions": ({**good, "head": {"name": "s3m"}, "captioner": {"model": "m", "questions": "what?"}},
                      "questions must be a list"),
        "sigma": ({**good, "evaluate": {"sigma": "abc"}}, "bad evaluate option|sigma"),
        "phrases": ({**good, "score": {"normal": "a bike"}}, "score normal must be a list"),
        "encoder": ({**good, "featurize": {"encoder": 16, "sampling": {"stride": 1}}}, "featurize needs an encoder"),
        "per_class": ({**good, "dataset": {"builder": "ucf_crime"}, "published": [
            {"metric": "subset_mauc", "value": 0.8, "per_class": {"Abuse": 0.7, "Riot": 0.9}}]},
            "per_class names Riot, not classes of ucf_crime"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(VadpipeError, match=message) as err:
            load_recipe(path)
        assert "\n" not in str(err.value), name
    with pytest.raises(VadpipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_list_show_and_dry_run(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["recipes", "list"])
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[0] == list_recipes()[0]
    assert "zanella-ucf-crime  Zanella 2024 Table 1" in r.output and "micro_auc 0.8636, mauc 0.9066" in r.output
    r = runner.invoke(app, ["recipes", "show", "ueki-table1-dangerous-behavior"])
    assert r.exit_code == 0 and json.loads(r.output)["published"] == [{"metric": "micro_auc", "value": 0.6725}]
    r = runner.invoke(app, ["recipes", "run", "zanella-ucf-crime", "--videos", "/data/ucf", "--annotations", "/ann",
                            "-o", str(tmp_path / "w"), "--dry-run"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"vadpipe manifest ucf_crime --annotations /ann --videos /data/ucf --end inclusive -o {tmp_path}/w/manifest.csv"
    assert lines[1].endswith("--encoder ViT-B-16:openai --stride 1")
    assert lines[2].endswith("--param preset=ucf_crime") and lines[-1].endswith("--convention anomalyclip")
    assert not (tmp_path / "w").exists()  # a dry run touches nothing
    ueki = commands(load_recipe("ueki-table1-dangerous-behavior"), tmp_path / "u")
    assert "--split test" in ueki[1] and """--param 'anomaly_prompts=["dangerous behavior"]'""" in ueki[2]
    vlavad = commands(load_recipe("vlavad-ped2"), tmp_path / "v", encoder=TINY)
    assert f"--encoder {TINY}" in vlavad[2] and "--captioner Salesforce/blip2-opt-2.7b --questions" in vlavad[2]
    cross = commands(load_recipe("gao-cross-avenue-to-ped2"), tmp_path / "c")
    assert cross[0].startswith("vadpipe manifest avenue") and cross[1].startswith("vadpipe manifest ped2")
    assert cross[2] == (f"vadpipe manifest cross --train {tmp_path}/c/train-manifest.csv --test "
                        f"{tmp_path}/c/test-manifest.csv -o {tmp_path}/c/manifest.csv")
    assert vlavad[1].startswith("printf '%s\\n' 'What is the pose of the person in the picture?'")
    assert """--objects fasterrcnn_resnet50_fpn_v2 --objects-param 'classes=["person"]'""" in vlavad[2]
    assert "--objects-param score_threshold=0.5 --objects-param nms_threshold=0.3 --objects-param min_area=300" in vlavad[2]
    assert "--param unit=object" in vlavad[3]
    mine = commands(load_recipe("vlavad-ped2"), tmp_path / "v", encoder=TINY, objects="motion")
    assert "--objects motion --objects-param min_area=300" in mine[2] and "classes" not in mine[2]


def test_cross_dataset_manifest_trains_on_one_and_tests_on_the_other():
    from vadpipe.data_manifests.benchmarks import build_benchmark_manifest

    if not ANNOTATIONS.is_dir():
        pytest.skip("no ../shared annotations")
    avenue = build_benchmark_manifest("avenue", ANNOTATIONS / "avenue", "/nonexistent")
    ped2 = build_benchmark_manifest("ped2", ANNOTATIONS / "ucsd_ped2", "/nonexistent")
    m = cross_dataset(avenue, ped2)
    assert m.ids("train") == avenue.ids("train") and m.ids("test") == ped2.ids("test")
    assert m.meta["dataset"] == "ped2" and m.meta["train_dataset"] == "avenue"
    from dataclasses import replace

    same_ids = Manifest([replace(e, split="test") for e in avenue.select(split="train")])
    with pytest.raises(VadpipeError, match="video id.* in both datasets"):
        cross_dataset(avenue, same_ids)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Manifests (and pre-featurized vadpipe-tiny caches, one per sampling) of each stand-in."""
    from vadpipe.data_manifests.benchmarks import build_benchmark_manifest
    from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
    from vadpipe.synth import make_demo_dataset

    root = tmp_path_factory.mktemp("stand_ins")
    manifests = {}
    synth = make_demo_dataset(root / "synth", num_train=3, num_test_per_kind=1, num_test_normal=2, num_frames=64,
                              num_train_anomalous=2)
    synth.save(root / "synth.csv")
    manifests["synthetic"] = root / "synth.csv"
    for name, (ann, vid) in REAL.items():
        if not (ANNOTATIONS / ann).is_dir() or not (VIDEOS / vid).is_dir():
            continue
        full = build_benchmark_manifest(name, ANNOTATIONS / ann, VIDEOS / vid)
        present = Manifest([e for e in full if Path(e.path).exists()], meta=full.meta)
        present.save(root / f"{name}.csv")
        manifests[name] = root / f"{name}.csv"
    caches = {}
    for name, path in manifests.items():
        for stride in (1, 16):
            cache = root / f"{name}-{stride}.zarr"
            featurize(load_manifest(path), cache, FeaturizeConfig(encoder=TINY, sampling=Sampling(stride), workers=0))
            caches[name, stride] = cache
    blip2 = make_tiny_blip2(root / "blip2")
    return manifests, caches, blip2


def stand_in_for(recipe) -> str:
    builder = recipe.dataset["builder"]
    if recipe.dataset.get("test") is None and builder in REAL:
        return builder
    return "synthetic"


@pytest.mark.slow
@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_runs_end_to_end_with_the_tiny_encoder(tmp_path, stand_ins, name):
    manifests, caches, blip2 = stand_ins
    recipe = load_recipe(name)
    which = stand_in_for(recipe)
    if which not in manifests:
        pytest.skip(f"stand-in {which} not available (../shared)")
    stride = recipe.sampling_args.get("stride", 1)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(caches[which, stride], work / "features.zarr")  # featurize resumes: nothing left to embed
    params = SMALL[recipe.head["name"]]
    lines = []
    objects = "motion" if recipe.featurize.get("objects") else None  # no detector weights here
    result = run(recipe, work, manifest=manifests[which], encoder=TINY, params=params, device="cpu",
                 captioner=str(blip2) if recipe.captioner else None, plots=False, log=lines.append, objects=objects)
    assert set(result.obtained) == {p["metric"] for p in recipe.published}
    assert all(np.isfinite(v) for v in result.obtained.values()), result.line()
    line = result.line()
    assert line.startswith(f"{name}: ") and "paper" in line and "obtained" in line and f"encoder={TINY}" in line
    if objects:
        assert "objects=motion" in line and any("objects" in x and x.startswith("featurize:") for x in lines)
    assert (work / "report" / "report.json").exists() and (work / "result.json").exists()
    if recipe.captioner:
        assert (work / "questions.txt").read_text().splitlines() == recipe.captioner["questions"]
        assert any(line.startswith("captions:") for line in lines)
    if recipe.published[0].get("per_class"):
        assert sum(line.startswith("  ") for line in lines) == len(recipe.published[0]["per_class"])
    # resumable: a second run keeps the trained run and scores again; other settings are refused
    again = run(recipe, work, manifest=manifests[which], encoder=TINY, params=params, device="cpu",
                captioner=str(blip2) if recipe.captioner else None, plots=False, log=lines.append, objects=objects)
    assert again.obtained == result.obtained and any("exists (same recipe.json): kept" in line for line in lines)
    with pytest.raises(VadpipeError, match="made by another recipe, other settings or another manifest"):
        run(recipe, work, manifest=manifests[which], encoder=TINY, params={**params, "seed": 1}, device="cpu")


def test_recipe_run_command_ends_with_the_paper_and_the_obtained_number(tmp_path, stand_ins):
    manifests, caches, _ = stand_ins
    shutil.copytree(caches["synthetic", 16], tmp_path / "w" / "features.zarr")
    r = CliRunner().invoke(app, ["recipes", "run", "ueki-table1-dangerous-behavior", "--manifest",
                                 str(manifests["synthetic"]), "--encoder", TINY, "-o", str(tmp_path / "w"),
                                 "--device", "cpu", "--no-plots"])
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("ueki-table1-dangerous-behavior: micro_auc paper 0.6725, obtained 0.")
    assert last.endswith(f"[overridden: encoder={TINY}]")
    r = CliRunner().invoke(app, ["recipes", "run", "zanella-ucf-crime", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "give --videos and --annotations (or --manifest)" in r.output


def test_every_recipe_has_a_row_in_docs_reproducing():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "reproducing.md").read_text()
    missing = [name for name in list_recipes() if f"| `{name}` |" not in doc]
    assert not missing, missing


def test_a_work_folder_is_one_run_and_a_half_saved_run_is_trained_again(tmp_path, stand_ins):
    manifests, caches, _ = stand_ins
    recipe = load_recipe("ueki-table1-dangerous-behavior")
    work = tmp_path / "w"
    shutil.copytree(caches["synthetic", 16], work / "features.zarr")
    lines = []
    first = run(recipe, work, manifest=manifests["synthetic"], encoder=TINY, device="cpu", plots=False, log=lines.append)
    (work / "run" / "config.json").write_text('{"head": "zeroshot", "config": {')  # killed while saving
    lines.clear()
    again = run(recipe, work, manifest=manifests["synthetic"], encoder=TINY, device="cpu", plots=False, log=lines.append)
    assert not any("kept" in line for line in lines) and again.obtained == first.obtained
    other = Manifest(list(load_manifest(manifests["synthetic"]))[1:])  # another set of videos
    other.save(tmp_path / "other.csv")
    with pytest.raises(VadpipeError, match="another manifest"):
        run(recipe, work, manifest=tmp_path / "other.csv", encoder=TINY, device="cpu", plots=False)


def test_a_per_class_row_prints_each_class_then_the_mean(tmp_path, stand_ins):
    manifests, caches, _ = stand_ins
    data = json.loads(Path(load_recipe("ueki-table2-per-class").path).read_text())
    kinds = {"vehicle": 0.9, "intruder": 0.8, "fire": 0.85, "runner": 0.7}
    data["dataset"] = {"builder": "ped2", "options": {}}  # no static class list: the synthetic kinds are accepted
    data["published"] = [{"metric": "subset_mauc", "value": 0.8125, "per_class": kinds}]
    path = tmp_path / "per-class.json"
    path.write_text(json.dumps(data))
    recipe = load_recipe(path)
    work = tmp_path / "w"
    shutil.copytree(caches["synthetic", 16], work / "features.zarr")
    lines = []
    result = run(recipe, work, manifest=manifests["synthetic"], encoder=TINY, device="cpu", plots=False, log=lines.append)
    per_class = [line for line in lines if line.startswith("  ")]
    assert [line.split(":")[0].strip() for line in per_class] == list(kinds)
    assert all("n/a" not in line and "obtained 0." in line for line in per_class), per_class
    report = json.loads((work / "report" / "report.json").read_text())["recognition"]
    assert result.obtained["subset_mauc"] == pytest.approx(report["subset_mauc"])


# training videos of each benchmark's split (normal, anomalous): what the shipped schedules meet
TRAIN_VIDEOS = {("ucf_crime", None): (800, 810), ("shanghaitech", "weak"): (175, 63),
                ("shanghaitech", "one-class"): (330, 0), ("xd_violence", None): (2049, 1905),
                ("avenue", None): (16, 0), ("ped2", None): (16, 0)}


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_schedule_trains_on_its_dataset(name):
    """The heads refuse a schedule whose learning rates sum below 1e-3 (it would return the
    initialisation); every recipe's own schedule, on its dataset's real training-video counts,
    must pass -- the end-to-end runs above override them for the stand-ins."""
    from vadpipe.heads import get_head
    from vadpipe.heads.training import MIN_LR_SUM

    recipe = load_recipe(name)
    dataset = recipe.dataset
    split = dataset.get("options", {}).get("split", "one-class" if dataset["builder"] == "shanghaitech" else None)
    normal, anomalous = TRAIN_VIDEOS[dataset["builder"], split]
    head = get_head(recipe.head["name"], **recipe.head.get("params", {}))
    if head.name == "anomalyclip":
        from vadpipe.heads.anomalyclip.train import learning_rates, steps_per_epoch

        lrs = learning_rates(head.config, steps_per_epoch(anomalous, normal, head.config.batch_size))
    elif head.name.startswith("clipassist"):
        from vadpipe.heads.clipassist.common import schedule

        epochs, per_epoch = schedule(head.config, normal + anomalous)
        lrs = [head.config.lr] * (epochs * per_epoch)
    else:
        pytest.skip(f"{head.name}: no schedule check")
    assert sum(lrs) >= MIN_LR_SUM, (name, sum(lrs))
