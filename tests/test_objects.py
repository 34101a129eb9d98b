"""Issue 15: the object-centric stage -- detect, track, crop, embed; the objects group in the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import scipy.io

from vadpipe.cache import FeatureCache
from vadpipe.cache.tools import export_npy, verify_cache
from vadpipe.encoders.preprocessing import Preprocessing
from vadpipe.errors import VadpipeError
from vadpipe.objects import ObjectsConfig
from vadpipe.objects.crops import crop_objects, square_boxes
from vadpipe.objects.detectors import ObjectsError, read_mot_file

from conftest import TINY, require_shared, shared_clips_manifest, tree_bytes

TINY_KEY = "vadpipe-tiny:random"
MOTION_KEY = TINY_KEY + "+motion"
PRE = Preprocessing(32, (0.5,) * 3, (0.5,) * 3)


def tracks_of(path, params=None):
    """Run the motion finder over every frame of ``path``: {track id: [(frame, box)]}, per-frame rows."""
    from vadpipe.featurize.readers import open_source
    from vadpipe.objects.finder import ObjectFinder

    finder = ObjectFinder(ObjectsConfig.parse("motion", params or {}), PRE).start("v")
    tracks, frames = {}, {}
    for index, pts, rgb in open_source(str(path)).iter_frames(lambda i, p: True):
        rows = finder(index, pts, rgb)
        frames[index] = rows
        for t, box in zip(rows.track_id.tolist(), rows.box):
            tracks.setdefault(t, []).append((index, box))
    return tracks, frames


# The cyclist of UCSD Ped2 Test001 (anomalous frames 60-179, 0-based), its centre read off the
# frames by eye: it rides in from the left edge and crosses the walkway to the right.
CYCLIST = {60: (10, 110), 90: (72, 127), 120: (130, 140), 150: (192, 153), 179: (254, 166)}


def cyclist_at(frame: int) -> tuple[float, float]:
    keys = sorted(CYCLIST)
    return (float(np.interp(frame, keys, [CYCLIST[k][0] for k in keys])),
            float(np.interp(frame, keys, [CYCLIST[k][1] for k in keys])))


def contains(box, point, slack=4.0) -> bool:
    x, y = point
    return box[0] - slack <= x <= box[2] + slack and box[1] - slack <= y <= box[3] + slack


def test_motion_finds_and_tracks_the_ped2_cyclist():
    clip = require_shared("videos") / "ucsd_ped2/testing/frames/01"
    tracks, _ = tracks_of(clip)
    on_cyclist = Counter()
    for t, rows in tracks.items():
        if t < 0:
            continue
        for frame, box in rows:
            if 60 <= frame <= 179 and contains(box, cyclist_at(frame)):
                on_cyclist[t] += 1
    best, count = on_cyclist.most_common(1)[0]
    assert count >= 90, on_cyclist.most_common(4)  # most of the 120 anomalous frames, one track
    rows = tracks[best]
    assert sum(contains(b, cyclist_at(f)) for f, b in rows if f >= 60) >= 0.9 * len([f for f, _ in rows if f >= 60])


def test_motion_finds_the_running_child_on_avenue_21():
    shared = require_shared("videos")
    masks = scipy.io.loadmat(require_shared("annotations") / "avenue/testing_label_mask/21_label.mat")["volLabel"][0]
    _, frames = tracks_of(shared / "avenue/testing_videos/21.avi")
    on_child = Counter()
    anomalous = 0
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        anomalous += 1
        ys, xs = np.nonzero(mask)
        rows = frames[i]
        for t, box in zip(rows.track_id.tolist(), rows.box):
            if t >= 0 and contains(box, (xs.mean(), ys.mean()), slack=0):
                on_child[t] += 1
    assert anomalous == 53
    assert on_child.most_common(1)[0][1] >= 45, on_child.most_common(3)


def test_square_crops_keep_the_object_centred_and_pad_black_at_the_border():
    sq = square_boxes(np.array([[10, 20, 30, 60]]), margin=0.1)  # 20 x 40 box -> 48 px square
    np.testing.assert_array_equal(sq, [[-4, 16, 44, 64]])
    rgb = np.full((50, 80, 3), 200, np.uint8)
    rgb[20:40, 0:10] = 50  # an object at the left edge
    crops = crop_objects(rgb, np.array([[0, 20, 10, 40]], np.float32), 0.0, PRE).numpy()
    assert crops.shape == (1, 3, 32, 32)
    # the 20 px square spans x = -5..15: 5 px of black, the 10 px object, 5 px of the frame beyond it
    left, middle, right = crops[0, :, 12:20, :6], crops[0, :, 12:20, 11:21], crops[0, :, 12:20, -5:]
    assert left.max() < 5  # past the frame's edge: black padding, not a shifted window
    assert abs(float(middle.mean()) - 50) < 5 and abs(float(right.mean()) - 200) < 5


def test_frame_crop_modes_keep_the_edges():
    frames = __import__("torch").full((1, 90, 160, 3), 255, dtype=__import__("torch").uint8)
    frames[:, :, :10] = 0  # a dark stripe at the left edge of a 16:9 frame
    from dataclasses import replace

    center = PRE.resize_crop_batch(frames)
    full = replace(PRE, crop="full").resize_crop_batch(frames)
    pad = replace(PRE, crop="pad").resize_crop_batch(frames)
    assert center.shape == full.shape == pad.shape == (1, 3, 32, 32)
    assert center[0, :, :, 0].float().mean() > 250  # the centre crop drops the stripe
    assert full[0, :, :, 0].float().mean() < 20 and pad[0, :, 16, 0].float().mean() < 20
    assert pad[0, :, 0].max() == 0 and pad[0, :, -1].max() == 0  # letterboxed: black bars above and below
    assert "crop" not in PRE.as_dict() and replace(PRE, crop="pad").as_dict()["crop"] == "pad"
    with pytest.raises(VadpipeError, match="crop"):
        replace(PRE, crop="zoom")


def test_objects_config_checks_settings_and_names_its_key(tmp_path):
    cfg = ObjectsConfig.parse("motion", {"min_area": 300, "max_objects": 20, "method": "mog2", "track_buffer": 10})
    assert cfg.key(TINY_KEY) == MOTION_KEY and cfg.tracker.buffer == 10 and cfg.min_area == 300.0
    assert cfg.recipe()["settings"]["method"] == "mog2"
    with pytest.raises(VadpipeError, match="unknown setting"):
        ObjectsConfig.parse("motion", {"score_thresh": 0.5})
    with pytest.raises(VadpipeError, match="unknown detector"):
        ObjectsConfig.parse("yolox", {})
    with pytest.raises(VadpipeError, match="must be"):
        ObjectsConfig.parse("motion", {"max_objects": "many"})
    (tmp_path / "dets").mkdir()
    assert ObjectsConfig.parse(f"file:{tmp_path / 'dets'}").key(TINY_KEY) == TINY_KEY + "+file-dets"


def test_mot_files_are_read_with_ids_and_bad_lines_name_file_and_line(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("# frame,id,x,y,w,h,score,class\n1,3,10,20,30,40,0.9,person\n1,4,0,0,5,5,0.4,-1\n3,3,12,20,30,40,0.8,person\n")
    frames = read_mot_file(good)
    assert sorted(frames) == [0, 2]
    np.testing.assert_array_equal(frames[0].ids, [3, 4])
    np.testing.assert_allclose(frames[0].boxes[0], [10, 20, 40, 60])
    assert frames[0].labels == ["person", "object"]
    untracked = tmp_path / "b.txt"
    untracked.write_text("0,-1,10,20,30,40,0.9\n")
    assert read_mot_file(untracked, first_frame=0)[0].ids is None  # no ids anywhere: vadpipe tracks
    for text, why in (("1,3,10,20,30\n", "column"), ("1,3,a,20,30,40,0.9\n", "numbers"),
                      ("1,3,10,20,0,40,0.9\n", "positive"), ("0,3,10,20,30,40,0.9\n", "before the first frame")):
        bad = tmp_path / "bad.txt"
        bad.write_text("1,3,10,20,30,40,0.9\n" + text)
        with pytest.raises(ObjectsError, match=f"bad.txt:2: .*{why}"):
            read_mot_file(bad)


# ---------------------------------------------------------------- featurize --objects
def featurize_cli(manifest, cache, *extra, fault=None, workers="0"):
    env = {k: v for k, v in os.environ.items() if k != "VADPIPE_FAULT_INJECT"}
    if fault:
        env["VADPIPE_FAULT_INJECT"] = fault
    cmd = [sys.executable, "-c", "from vadpipe.cli import app; app()", "featurize", str(manifest), "--cache",
           str(cache), "--encoder", TINY, "--stride", "2", "--precision", "fp32", "--batch-size", "16",
           "--no-progress", "--workers", workers, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return shared_clips_manifest(tmp_path_factory.mktemp("objects") / "m.csv", "ped2_test", "avenue21", "avenue08")


@pytest.fixture(scope="module")
def motion_cache(clips, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ref") / "c.zarr"
    r = featurize_cli(clips, cache, "--objects", "motion", workers="1")
    assert r.returncode == 0, r.stderr
    assert "objects" in r.stdout and MOTION_KEY in r.stdout
    return cache


def test_featurize_objects_writes_an_objects_group_beside_the_frames(motion_cache):
    with FeatureCache(motion_cache) as cache:
        assert cache.encoders() == [TINY_KEY, MOTION_KEY]
        assert cache.image_encoders() == [TINY_KEY]  # heads never take objects for frames
        recipe = cache.recipe(MOTION_KEY)
        assert recipe["kind"] == "objects" and recipe["clip_key"] == TINY_KEY
        assert recipe["objects"]["detector"] == "motion" and recipe["objects"]["tracker"]["method"] == "bytetrack"
        assert recipe["sampling"] == cache.recipe(TINY_KEY)["sampling"]
        frames, objects = cache.read(TINY_KEY, "ped2_test"), cache.read(MOTION_KEY, "ped2_test")
        n = len(objects.frame_index)
        assert n > len(frames.frame_index)  # many walkers a frame
        assert objects.emb.shape == (n, 64) and objects.emb.dtype == np.float16
        assert objects.arrays["box"].shape == (n, 4) and objects.arrays["box"].dtype == np.float32
        assert objects.arrays["track_id"].dtype == np.int64 and objects.arrays["det_score"].dtype == np.float32
        assert set(objects.arrays["label"].tolist()) == {"motion"}
        assert np.isin(objects.frame_index, frames.frame_index).all()
        order = np.lexsort((objects.arrays["track_id"], objects.frame_index))
        np.testing.assert_array_equal(order, np.arange(n))  # by frame, then track
        assert objects.attrs["num_objects"] == n and objects.attrs["num_samples"] == len(frames.frame_index) == 90
        box = objects.arrays["box"]
        assert (box[:, 0] >= 0).all() and (box[:, 2] <= 360).all() and (box[:, 3] <= 240).all()
    assert verify_cache(motion_cache) == []


def test_a_rerun_skips_and_a_second_detector_coexists(motion_cache, clips, tmp_path):
    before = tree_bytes(motion_cache)
    r = featurize_cli(clips, motion_cache, "--objects", "motion")
    assert r.returncode == 0 and "3 skipped" in r.stdout, r.stdout + r.stderr
    assert tree_bytes(motion_cache) == before
    # the motion rows written back as MOT files (1-based frames, ids kept) are a second detector
    dets = tmp_path / "dets"
    dets.mkdir()
    with FeatureCache(motion_cache) as cache:
        for vid in cache.video_ids(MOTION_KEY):
            f = cache.read(MOTION_KEY, vid)
            b = f.arrays["box"]
            lines = [f"{fi + 1},{t},{x1},{y1},{x2 - x1},{y2 - y1},{s},walker"
                     for fi, t, (x1, y1, x2, y2), s in zip(f.frame_index, f.arrays["track_id"], b.tolist(),
                                                           f.arrays["det_score"])]
            (dets / f"{vid}.txt").write_text("\n".join(lines) + "\n")
    copy = tmp_path / "c.zarr"
    import shutil

    shutil.copytree(motion_cache, copy)
    r = featurize_cli(clips, copy, "--objects", f"file:{dets}", "--objects-param", "min_area=0")
    assert r.returncode == 0, r.stderr
    with FeatureCache(copy) as cache:
        assert sorted(cache.encoders()) == sorted([TINY_KEY, MOTION_KEY, TINY_KEY + "+file-dets"])
        for vid in cache.video_ids(MOTION_KEY):
            a, b = cache.read(MOTION_KEY, vid), cache.read(TINY_KEY + "+file-dets", vid)
            keep = a.arrays["track_id"] >= 0  # rows without a track id went out as -1: re-read as untracked
            np.testing.assert_array_equal(a.frame_index, b.frame_index)
            np.testing.assert_array_equal(a.arrays["track_id"][keep], b.arrays["track_id"][keep])
            np.testing.assert_allclose(a.arrays["box"], b.arrays["box"], atol=1e-3)
            np.testing.assert_array_equal(a.emb, b.emb)  # same boxes, same crops, same encoder
            assert set(b.arrays["label"].tolist()) <= {"walker"}
    assert verify_cache(copy) == []


def test_a_bad_detections_file_fails_that_video_only(clips, tmp_path):
    dets = tmp_path / "dets"
    dets.mkdir()
    (dets / "ped2_test.txt").write_text("1,1,10,10,20,30,0.9\n2,1,11,10,20,30,0.9\n")
    (dets / "avenue21.txt").write_text("1,1,10,10,20,30,0.9\n2,1,oops,10,20,30,0.9\n")
    # avenue08 has no file
    cache = tmp_path / "c.zarr"
    r = featurize_cli(clips, cache, "--objects", f"file:{dets}")
    assert r.returncode == 1
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2, r.stderr
    assert any(f"avenue21.txt:2: frame,id,x,y,w,h,score must be numbers" in line for line in failed)
    assert any("avenue08.txt: detections file not found" in line for line in failed)
    key = TINY_KEY + "+file-dets"
    with FeatureCache(cache) as c:
        assert c.video_ids(TINY_KEY) == ["avenue08", "avenue21", "ped2_test"]  # every video's frames are kept
        assert c.video_ids(key) == ["ped2_test"]
        assert c.status(key, "avenue21") == "failed"
        rows = c.read(key, "ped2_test")
        np.testing.assert_array_equal(rows.frame_index, [0])  # frame 2 (1-based) = index 1 is not sampled
        np.testing.assert_array_equal(rows.arrays["track_id"], [1])
    fixed = featurize_cli(clips, cache, "--objects", f"file:{dets}")
    assert fixed.returncode == 1 and "1 skipped" in fixed.stdout  # still bad: only the failed ones redone


@pytest.mark.parametrize("fault", ["after_array:5", "before_done:2", "after_video:3"])
def test_killed_and_resumed_objects_run_is_bit_identical(clips, motion_cache, tmp_path, fault):
    cache = tmp_path / "c.zarr"
    killed = featurize_cli(clips, cache, "--objects", "motion", fault=fault)
    assert killed.returncode == -9, killed.stderr
    resumed = featurize_cli(clips, cache, "--objects", "motion", workers="1")
    assert resumed.returncode == 0, resumed.stderr
    assert tree_bytes(cache) == tree_bytes(motion_cache)


def test_export_lists_each_object_row(motion_cache, tmp_path):
    ids = export_npy(motion_cache, MOTION_KEY, tmp_path / "out")
    import json

    index = json.loads((tmp_path / "out" / "index.json").read_text())
    vid = ids[0]
    rows = np.load(tmp_path / "out" / f"{vid}.npy")
    assert len(index["videos"][vid]["box"]) == len(rows) == len(index["videos"][vid]["track_id"])


# ---------------------------------------------------------------- torchvision detectors
def test_a_torchvision_detector_runs_with_random_weights_and_loads_a_local_file(tmp_path):
    torch = pytest.importorskip("torch")
    from vadpipe.objects.detectors import build_torchvision_detector, make_detector
    from vadpipe.objects.finder import ObjectFinder

    name = "ssdlite320_mobilenet_v3_large"
    params = {"weights": "random", "score_threshold": 0.0, "nms_threshold": 0.5}
    cfg = ObjectsConfig.parse(name, {**params, "min_area": 0, "max_objects": 5})
    assert cfg.recipe()["weights"] == {"tag": "random", "seed": 0}
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    rows = ObjectFinder(cfg, PRE).start("v")(0, 0.0, rgb)
    assert 0 < rows.count <= 5 and rows.crops.shape == (rows.count, 3, 32, 32)
    assert set(rows.label.tolist()) <= set(__import__("vadpipe.objects.detectors", fromlist=["x"]).coco_categories(name))
    weights = tmp_path / "ssd.pth"
    torch.save(build_torchvision_detector(name, "random").state_dict(), weights)
    local = ObjectsConfig.parse(name, {**params, "weights": str(weights), "min_area": 0, "max_objects": 5})
    assert local.recipe()["weights"]["sha256"]
    again = ObjectFinder(local, PRE).start("v")(0, 0.0, rgb)
    np.testing.assert_array_equal(again.box, rows.box)  # the same weights, read from the file
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(VadpipeError, match="does not fit"):
        make_detector(name, ObjectsConfig.parse(name, {"weights": str(bad)}).detector_settings()).model()
    with pytest.raises(VadpipeError, match="unknown COCO class"):
        make_detector(name, ObjectsConfig.parse(name, {"weights": "random", "classes": ["unicorn"]}).detector_settings())
    person = ObjectsConfig.parse(name, {**params, "classes": ["person"], "min_area": 0})
    assert set(ObjectFinder(person, PRE).start("v")(0, 0.0, rgb).label.tolist()) <= {"person"}


def test_objects_groups_merge_into_hdf5_and_read_back_the_same(motion_cache, tmp_path):
    from vadpipe.cache.tools import merge_caches

    out = tmp_path / "all.h5"
    assert merge_caches([motion_cache], out)["copied"] == 6  # 3 videos x (frames, objects)
    assert verify_cache(out) == []
    with FeatureCache(motion_cache) as a, FeatureCache(out) as b:
        assert b.recipe(MOTION_KEY) == a.recipe(MOTION_KEY)
        for vid in a.video_ids(MOTION_KEY):
            fa, fb = a.read(MOTION_KEY, vid), b.read(MOTION_KEY, vid)
            np.testing.assert_array_equal(fa.emb, fb.emb)
            for name in ("track_id", "box", "det_score", "label"):
                np.testing.assert_array_equal(fa.arrays[name], fb.arrays[name])


def test_frame_crop_is_recorded_and_a_cache_keeps_one(tmp_path):
    manifest = shared_clips_manifest(tmp_path / "m.csv", "avenue08")
    cache = tmp_path / "c.zarr"
    r = featurize_cli(manifest, cache, "--crop", "pad")
    assert r.returncode == 0, r.stderr
    with FeatureCache(cache) as c:
        assert c.recipe(TINY_KEY)["preprocessing"]["crop"] == "pad"
    again = featurize_cli(manifest, cache)  # the default centre crop under the same key: refused
    assert again.returncode == 2 and "preprocessing.crop='pad'" in again.stderr, again.stderr
    assert featurize_cli(manifest, cache, "--crop", "zoom").returncode == 2
