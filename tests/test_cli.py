"""The CLI contract, driven through typer's CliRunner."""

import json
import re

import pytest
from typer.testing import CliRunner

from vadpipe.cli import app

from conftest import TINY, require_shared

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_demo_offline(tmp_path):
    """README check: the offline demo command runs end to end and prints each head's table.
    vadpipe-tiny has random weights, so its numbers are not asserted (quality is tested on
    planted structure elsewhere)."""
    result = invoke("demo", "--encoder", TINY, "-o", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    assert "| prototype | vadpipe-tiny:random |" in result.output
    assert "| zeroshot | vadpipe-tiny:random |" in result.output
    assert "| zeroshot-objects | vadpipe-tiny:random |" in result.output
    assert re.search(r"\d+ frames and \d+ objects", result.output)  # the objects were featurized too
    for head in ("prototype", "zeroshot", "zeroshot-objects"):
        report = json.loads((tmp_path / "demo" / "reports" / head / "report.json").read_text())
        assert {"micro_auc", "macro_auc", "ap"} <= set(report) and report["num_videos"] == 5
    evidence = [e for v in report["videos"] for e in v["evidence"]]  # zeroshot on objects: boxes behind the peaks
    assert evidence and all(len(e["box"]) == 4 for e in evidence)
    again = invoke("demo", "--encoder", TINY, "-o", tmp_path / "demo")  # rerun: cache reused
    assert again.exit_code == 0 and "0 done, 9 skipped" in again.output


def test_walkthrough_on_a_folder(tmp_path):
    """README check: the "your own videos" walkthrough, command by command, on real footage;
    the metrics' values come from random weights and are checked against sklearn elsewhere."""
    videos = require_shared("videos", "avenue")
    manifest = tmp_path / "m.csv"
    r = invoke("manifest", "folder", videos, "-o", manifest)
    assert r.exit_code == 0 and "3 videos (1 train, 2 test)" in r.output
    # give the test videos ground truth by hand, as a user would
    lines = manifest.read_text().splitlines()
    lines = [ln.replace(",test,normal,", ",test,running,0-20") if "testing_videos_21" in ln else ln for ln in lines]
    manifest.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "c.zarr"
    r = invoke("featurize", manifest, "--cache", cache, "--encoder", TINY, "--stride", 4, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "3 done" in r.output
    r = invoke("train", "prototype", "--cache", cache, "--manifest", manifest, "-o", tmp_path / "run",
               "--param", 'metric="cosine"')
    assert r.exit_code == 0, r.output
    r = invoke("score", tmp_path / "run", "--cache", cache, "--manifest", manifest, "-o", tmp_path / "s.zarr")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", tmp_path / "s.zarr", "--manifest", manifest, "-o", tmp_path / "rep", "--sigma", 2)
    assert r.exit_code == 0, r.output
    assert "micro AUC" in r.output and (tmp_path / "rep" / "report.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["featurize", "MISSING.csv", "--cache", "c.zarr", "--encoder", TINY], "error: MISSING.csv: manifest not found"),
        (["train", "nope", "--cache", "c.zarr", "--manifest", "m.csv", "-o", "r"], "error: unknown head 'nope'"),
        (["score", "no_run", "--cache", "c.zarr", "--manifest", "m.csv", "-o", "s"], "error: no_run/config.json: not found"),
        (["featurize", "m.csv", "--cache", "c.zarr", "--encoder", "ViT-B-16"], "has no weights tag"),
    ],
)
def test_user_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text("video_id,path,split,label\na,a.mp4,test,normal\n")
    r = invoke(*args)
    assert r.exit_code == 2
    assert message in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output


def test_featurize_exit_code_when_a_video_fails(tmp_path):
    good = require_shared("videos", "avenue", "testing_videos", "08.avi")
    (tmp_path / "m.csv").write_text(f"video_id,path,split,label\ngood,{good},test,normal\nbad,nothere.mp4,test,normal\n")
    r = invoke("featurize", tmp_path / "m.csv", "--cache", tmp_path / "c.zarr", "--encoder", TINY, "--stride", 8)
    assert r.exit_code == 1
    assert "1 done" in r.output and "failed: bad" in r.output and "file not found" in r.output


def test_mistakes_that_could_lose_data_or_crash_are_one_line_errors(tmp_path):
    """Writing scores over a feature cache, bad hyper-parameter types, bad numbers, outputs
    that are files: each stops with one line and exit code 2, and nothing is overwritten."""
    import numpy as np

    from conftest import planted_cache

    rng = np.random.default_rng(0)
    cache = planted_cache(tmp_path / "c.zarr", [{"video_id": v, "emb": rng.normal(size=(6, 64))} for v in ("a", "b")])
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,split,label,num_frames\na,a.mp4,train,normal,6\nb,b.mp4,test,normal,6\n")
    ok = invoke("train", "prototype", "--cache", cache.path, "--manifest", manifest, "-o", tmp_path / "run")
    assert ok.exit_code == 0, ok.output
    (tmp_path / "file").write_text("x")
    before = sorted(p.name for p in cache.path.iterdir())
    cases = [
        (["score", tmp_path / "run", "--cache", cache.path, "--manifest", manifest, "-o", cache.path],
         "is not a vadpipe scores store; refusing to overwrite it"),
        (["train", "zeroshot", "--cache", cache.path, "--manifest", manifest, "-o", tmp_path / "r2", "--param", "temperature=abc"],
         "parameter 'temperature' must be float, got 'abc'"),
        (["train", "prototype", "--cache", cache.path, "--manifest", manifest, "-o", tmp_path / "file"],
         "exists and is not a folder"),
        (["featurize", manifest, "--cache", tmp_path / "f.zarr", "--encoder", TINY, "--batch-size", "0"],
         "batch size must be >= 1"),
        (["featurize", manifest, "--cache", tmp_path / "file", "--encoder", TINY], "is not a Zarr store"),
    ]
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, (args, r.output)
    assert sorted(p.name for p in cache.path.iterdir()) == before and cache.video_ids(cache.encoders()[0]) == ["a", "b"]
    ok = invoke("score", tmp_path / "run", "--cache", cache.path, "--manifest", manifest, "-o", tmp_path / "s.zarr")
    assert ok.exit_code == 0
    r = invoke("evaluate", tmp_path / "s.zarr", "--manifest", manifest, "-o", tmp_path / "rep", "--sigma", "-1")
    assert r.exit_code == 2 and "sigma must be >= 0" in r.output
    r = invoke("cache", "info", tmp_path / "s.zarr")
    assert r.exit_code == 2 and "is a scores store, not a feature cache" in r.output
