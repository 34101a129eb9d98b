"""End to end on real footage (UCSD Ped2 frames, CUHK Avenue AVIs) with vadpipe-tiny."""

import json
import re

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vadpipe.cache import FeatureCache
from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.evaluate import EvalConfig, evaluate
from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
from vadpipe.runs import score_run, train_head

from conftest import TINY, TINY_KEY, require_shared

STRIDE = 2


def ped2_test001_interval() -> Interval:
    """Test001's range from the official UCSDped2.m ([61:180], 1-based inclusive)."""
    text = (require_shared("annotations", "ucsd_ped2") / "UCSDped2.m").read_text()
    a, b = map(int, re.findall(r"gt_frame\s*=\s*\[(\d+):(\d+)\]", text)[0])
    return Interval(a - 1, b)  # -> 0-based, end exclusive


def avenue_intervals(video: str) -> tuple[Interval, ...]:
    gt = json.loads((require_shared("annotations", "avenue") / "avenue_frame_labels_from_masks.json").read_text())
    v = gt["videos"][video]
    return tuple(Interval(a - 1, b) for a, b in v["anomalous_frames_1based_inclusive"]), v["num_frames"]


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory):
    videos = require_shared("videos")
    iv21, n21 = avenue_intervals("21")
    iv08, n08 = avenue_intervals("08")
    entries = [
        VideoEntry("ped2_train01", str(videos / "ucsd_ped2/training/frames/01"), "train", "normal"),
        VideoEntry("ped2_test01", str(videos / "ucsd_ped2/testing/frames/01"), "test", "anomaly",
                   (ped2_test001_interval(),), num_frames=180),
        VideoEntry("avenue_train12", str(videos / "avenue/training_videos/12.avi"), "train", "normal"),
        VideoEntry("avenue_test21", str(videos / "avenue/testing_videos/21.avi"), "test", "anomaly", iv21, num_frames=n21),
        VideoEntry("avenue_test08", str(videos / "avenue/testing_videos/08.avi"), "test", "anomaly", iv08, num_frames=n08),
    ]
    path = tmp_path_factory.mktemp("real") / "manifest.csv"
    Manifest(entries).save(path)
    return Manifest.load(path)


@pytest.fixture(scope="module")
def real_cache(real_manifest, tmp_path_factory):
    cache = tmp_path_factory.mktemp("real_cache") / "cache.zarr"
    summary = featurize(real_manifest, cache, FeaturizeConfig(encoder=TINY, sampling=Sampling(STRIDE)))
    assert not summary.failed and len(summary.done) == 5
    return cache


def test_cache_holds_one_embedding_per_sampled_frame(real_cache):
    cache = FeatureCache(real_cache)
    assert cache.encoders() == [TINY_KEY]
    recipe = cache.recipe(TINY_KEY)
    assert recipe["model"] == TINY and recipe["sampling"] == {"mode": "stride", "stride": STRIDE, "start": 0}
    assert recipe["preprocessing"]["size"] == 64 and "vadpipe_version" in recipe and recipe["normalised"] is False
    for vid, n in {"ped2_train01": 120, "ped2_test01": 180, "avenue_train12": 145, "avenue_test21": 76, "avenue_test08": 36}.items():
        f = cache.read(TINY_KEY, vid)
        assert f.num_frames == n
        np.testing.assert_array_equal(f.frame_index, np.arange(0, n, STRIDE))
        assert f.emb.dtype == np.float16 and f.emb.shape == (len(range(0, n, STRIDE)), 64)
        # what the model outputs, not unit rows (the recipe says so): heads normalise where their method does
        assert np.abs(np.linalg.norm(f.emb.astype(np.float32), axis=1) - 1.0).max() > 0.05
    avi = cache.read(TINY_KEY, "avenue_test21")
    np.testing.assert_allclose(avi.pts[:3], [0.0, 0.08, 0.16])  # 25 fps, every 2nd frame
    assert avi.attrs["fps"] == 25.0 and avi.attrs["width"] == 640 and avi.attrs["height"] == 360
    assert np.isnan(cache.read(TINY_KEY, "ped2_test01").pts).all()  # frame folder, no fps given


def test_train_score_evaluate_matches_sklearn(real_cache, real_manifest, tmp_path):
    run = tmp_path / "run"
    train_head("prototype", real_cache, real_manifest, run)
    scores = score_run(run, real_cache, real_manifest, tmp_path / "scores.zarr").path
    report = evaluate(scores, real_manifest, tmp_path / "report", EvalConfig())
    assert json.loads((tmp_path / "report" / "report.json").read_text())["micro_auc"] == report["micro_auc"]

    # the same expanded arrays, built independently: repeat each sample over its stride
    from vadpipe.scores import ScoresStore

    store = ScoresStore(scores)
    ys, ss, per_video = [], [], []
    for e in real_manifest.select(split="test"):
        s = store.read(e.video_id)
        expanded = np.repeat(s.score, STRIDE)[: s.num_frames]
        y = e.frame_labels(s.num_frames)
        ys.append(y)
        ss.append(expanded)
        if 0 < y.sum() < len(y):
            per_video.append(roc_auc_score(y, expanded))
    y, s = np.concatenate(ys), np.concatenate(ss)
    assert report["num_frames"] == 180 + 76 + 36 and report["num_anomalous_frames"] == int(y.sum())
    assert report["micro_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert report["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert report["macro_auc"] == pytest.approx(np.mean(per_video), abs=1e-12)
    assert set(report["per_video_auc"]) == {"ped2_test01", "avenue_test21"}  # video 08 is all anomalous


def test_rerun_skips_done_videos(real_cache, real_manifest):
    before = {p: p.stat().st_mtime_ns for p in real_cache.rglob("*") if p.is_file()}
    summary = featurize(real_manifest, real_cache, FeaturizeConfig(encoder=TINY, sampling=Sampling(STRIDE)))
    assert summary.done == [] and len(summary.skipped) == 5 and summary.frames == 0
    after = {p: p.stat().st_mtime_ns for p in real_cache.rglob("*") if p.is_file()}
    assert before == after  # nothing rewritten


def test_recipe_mismatch_is_refused(real_cache, real_manifest):
    from vadpipe.errors import VadpipeError

    with pytest.raises(VadpipeError, match=r"exists with sampling\.stride=2, this run asks sampling\.stride=3"):
        featurize(real_manifest, real_cache, FeaturizeConfig(encoder=TINY, sampling=Sampling(3)))


def test_cache_of_an_older_preprocessing_is_not_extended(tmp_path):
    """A cache begun with another resize implementation (vadpipe 0.1: torchvision's float
    path) is refused by name, not silently mixed."""
    from vadpipe.cache import FeatureCache
    from vadpipe.errors import VadpipeError
    from vadpipe.encoders import load_clip

    recipe = load_clip(TINY).recipe()
    old = {**recipe, "preprocessing": {**recipe["preprocessing"], "implementation": "vadpipe tensor resize "
                                       "(torchvision antialias) + center crop"}}
    with FeatureCache(tmp_path / "c.zarr", mode="a") as c:
        c.ensure_encoder(TINY_KEY, old)
        with pytest.raises(VadpipeError, match=r"preprocessing\.implementation='vadpipe tensor resize"):
            c.ensure_encoder(TINY_KEY, recipe)


def test_bad_videos_are_reported_and_the_rest_complete(tmp_path):
    videos = require_shared("videos")
    good = videos / "avenue/testing_videos/08.avi"
    data = (videos / "avenue/testing_videos/21.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    (tmp_path / "1k.avi").write_bytes(data[:1024])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    (tmp_path / "no_frames").mkdir()
    rows = [
        VideoEntry("good", str(good), "test", "normal"),
        VideoEntry("missing", str(tmp_path / "missing.mp4"), "test", "normal"),
        VideoEntry("half", str(tmp_path / "half.avi"), "test", "normal"),
        VideoEntry("onek", str(tmp_path / "1k.avi"), "test", "normal"),
        VideoEntry("empty", str(tmp_path / "empty.mp4"), "test", "normal"),
        VideoEntry("text", str(tmp_path / "text.mp4"), "test", "normal"),
        VideoEntry("no_frames", str(tmp_path / "no_frames"), "test", "normal"),
        VideoEntry("good2", str(videos / "ucsd_ped2/testing/frames/01"), "test", "normal"),
    ]
    cache_path = tmp_path / "c.zarr"
    summary = featurize(Manifest(rows), cache_path, FeaturizeConfig(encoder=TINY, sampling=Sampling(4)))
    assert summary.done == ["good", "good2"]
    reasons = {r["video_id"]: r["reason"] for r in summary.failed}
    assert reasons["missing"] == "file not found"
    assert reasons["half"].startswith("truncated: decoded 37 of 76 frames")
    assert reasons["onek"].startswith("not a readable video")
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["text"].startswith("not a readable video")
    assert reasons["no_frames"].startswith("empty frame folder")
    log = [json.loads(line) for line in (tmp_path / "c.zarr.failures.jsonl").read_text().splitlines()]
    assert {r["video_id"] for r in log} == set(reasons) and all({"path", "stage", "reason"} <= set(r) for r in log)
    cache = FeatureCache(cache_path)
    assert cache.video_ids(TINY_KEY) == ["good", "good2"]
    assert cache.video_ids(TINY_KEY, status="failed") == sorted(reasons)
    # --allow-partial keeps what could be decoded of the truncated file
    again = featurize(Manifest(rows), cache_path, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), allow_partial=True),
                      video_ids=["half"])
    assert again.done == ["half"] and cache.read(TINY_KEY, "half").num_frames == 37
