"""Issue 3: HDF5 parity, merge, import/export, verify and info."""
import json


import numpy as np
import pytest
from typer.testing import CliRunner

from vadpipe.cache import FeatureCache
from vadpipe.cache.tools import cache_info, export_npy, import_npy, merge_caches, verify_cache
from vadpipe.cli import app
from vadpipe.errors import VadpipeError
from vadpipe.data_manifests import Manifest, VideoEntry
from vadpipe.featurize import FeaturizeConfig, Sampling, featurize

from conftest import TINY, TINY_KEY, assert_same_arrays, planted_cache


@pytest.fixture(scope="module")
def synth(synthetic_dataset):
    return synthetic_dataset


@pytest.fixture(scope="module")
def zarr_cache(synth, tmp_path_factory):
    path = tmp_path_factory.mktemp("z") / "c.zarr"
    assert not featurize(synth, path, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32")).failed
    return path


def test_hdf5_has_the_same_tree_and_arrays(synth, zarr_cache, tmp_path):
    h5 = tmp_path / "c.h5"
    assert not featurize(synth, h5, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32")).failed
    assert_same_arrays(zarr_cache, h5)
    assert FeatureCache(h5).format == "hdf5"


def test_hdf5_scalar_attributes_are_native(synth, tmp_path):
    """What a user looks at with h5py shows as itself; nested recipe parts stay one JSON string."""
    import h5py

    h5 = tmp_path / "c.h5"
    featurize(synth, h5, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32"))
    vid = synth.ids()[0]
    with h5py.File(h5, "r") as f:
        assert f.attrs["schema_version"] == 2  # vadpipe 0.2 wrote 1: everything in the JSON string
        assert json.loads(f.attrs["vadpipe_attrs"])["schema_version"] == 2  # what 0.2 reads, to refuse it
        assert f[TINY_KEY].attrs["dim"] == 64 and f[TINY_KEY].attrs["model"] == "vadpipe-tiny"
        group = f[f"{TINY_KEY}/{vid}"].attrs
        assert group["done"] is True or group["done"] == np.True_
        assert group["num_frames"] == 60 and group["width"] == 320 and group["height"] == 240
        assert group["fps"] > 0
        nested = json.loads(group["vadpipe_attrs"])
        assert "done" not in nested and "num_frames" not in nested and set(nested) >= {"source", "warnings"}
        assert json.loads(f[TINY_KEY].attrs["vadpipe_attrs"])["sampling"] == {"mode": "stride", "stride": 4, "start": 0}
    attrs = FeatureCache(h5).video_attrs(TINY_KEY, vid)
    assert attrs["done"] is True and type(attrs["num_frames"]) is int and type(attrs["fps"]) is float


def test_hdf5_cache_of_vadpipe_0_2_reads_and_extends(synth, tmp_path):
    """0.2 kept every attribute in the one JSON string: such a file reads the same, and a video
    written into it now gets native attributes."""
    import h5py

    h5 = tmp_path / "old.h5"
    featurize(synth, h5, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32"), video_ids=synth.ids()[:1])
    with h5py.File(h5, "a") as f:  # rewrite every node's attributes as 0.2 did
        for node in [f, f[TINY_KEY], f[f"{TINY_KEY}/{synth.ids()[0]}"]]:
            merged = {k: (v.item() if hasattr(v, "item") else v) for k, v in node.attrs.items() if k != "vadpipe_attrs"}
            merged.update(json.loads(node.attrs["vadpipe_attrs"]))
            merged.update({"schema_version": 1} if "schema_version" in merged else {})
            for k in list(node.attrs):
                del node.attrs[k]
            node.attrs["vadpipe_attrs"] = json.dumps(merged)
    before = FeatureCache(h5).video_attrs(TINY_KEY, synth.ids()[0])
    assert before["done"] is True and before["num_frames"] == 60
    summary = featurize(synth, h5, FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32"))
    assert summary.skipped == synth.ids()[:1] and len(summary.done) == len(synth) - 1
    assert FeatureCache(h5).video_attrs(TINY_KEY, synth.ids()[0]) == before
    with h5py.File(h5, "r") as f:  # extended with native attributes: marked so 0.2 refuses it
        assert f.attrs["schema_version"] == 2 and json.loads(f.attrs["vadpipe_attrs"])["schema_version"] == 2
    with h5py.File(h5, "a") as f:
        f.attrs["schema_version"] = 3
    with pytest.raises(VadpipeError, match="cache schema version 3, this vadpipe reads 1, 2"):
        FeatureCache(h5)


def test_hdf5_shards_then_merge(synth, zarr_cache, tmp_path):
    for i in range(2):
        cfg = FeaturizeConfig(encoder=TINY, sampling=Sampling(4), precision="fp32", shard=i, num_shards=2)
        featurize(synth, tmp_path / "c.h5", cfg)
    shards = sorted(tmp_path.glob("c.shard-*-of-00002.h5"))
    assert len(shards) == 2 and not (tmp_path / "c.h5").exists()
    r = CliRunner().invoke(app, ["cache", "merge", *map(str, shards), "-o", str(tmp_path / "merged.zarr")])
    assert r.exit_code == 0, r.output
    assert_same_arrays(zarr_cache, tmp_path / "merged.zarr")
    counts = merge_caches(shards, tmp_path / "merged.zarr")  # again: nothing new
    assert counts["copied"] == 0 and counts["duplicates_skipped"] == len(synth)


def test_export_import_round_trip(synth, zarr_cache, tmp_path):
    ids = export_npy(zarr_cache, TINY, tmp_path / "npy")
    assert len(ids) == len(synth)
    manifest = Manifest([VideoEntry(e.video_id, e.path, e.split, e.label, e.intervals, fps=e.fps,
                                    num_frames=e.num_frames) for e in synth])
    s = import_npy(tmp_path / "npy", tmp_path / "imp.zarr", TINY, manifest, snippet=4)  # rows kept as given
    assert len(s.imported) == len(synth) and not s.failed
    src, imp = FeatureCache(zarr_cache), FeatureCache(tmp_path / "imp.zarr")
    recipe = imp.recipe(TINY_KEY)
    assert recipe["imported"] and recipe["model"] == TINY and recipe["dim"] == 64
    assert src.recipe(TINY_KEY)["normalised"] is False and recipe["normalised"] is False  # raw rows, said so
    for vid in ids:
        a, b = src.read(TINY_KEY, vid), imp.read(TINY_KEY, vid)
        np.testing.assert_array_equal(a.emb, b.emb)
        np.testing.assert_array_equal(a.frame_index, b.frame_index)
        np.testing.assert_allclose(a.pts, b.pts)
        assert b.num_frames == a.num_frames
    # heads that need the text tower work on the imported features
    from vadpipe.heads import get_head

    get_head("zeroshot").fit(imp, manifest)

    # --normalise: unit rows, recorded; a later import of raw rows into that key is refused file by file
    s = import_npy(tmp_path / "npy", tmp_path / "unit.zarr", TINY, manifest, snippet=4, normalise=True)
    unit = FeatureCache(tmp_path / "unit.zarr")
    assert unit.recipe(TINY_KEY)["normalised"] is True
    np.testing.assert_allclose(np.linalg.norm(unit.read(TINY_KEY, ids[0]).emb.astype(np.float32), axis=1), 1, atol=2e-3)
    unit_files = tmp_path / "unit_npy"
    export_npy(tmp_path / "unit.zarr", TINY, unit_files)
    s = import_npy(unit_files, tmp_path / "guess.zarr", TINY, manifest, snippet=4)  # unit rows given: said so
    assert FeatureCache(tmp_path / "guess.zarr").recipe(TINY_KEY)["normalised"] is True
    more = Manifest([VideoEntry("raw_one", "x", "test", "normal")])
    np.save(unit_files / "raw_one.npy", 5 * np.ones((3, 64), np.float32))
    s = import_npy(unit_files, tmp_path / "guess.zarr", TINY, more, snippet=4)
    assert s.imported == [] and "rows are not unit length, the key's are unit" in s.failed[0]["reason"]


def test_import_layouts_and_bad_files(tmp_path):
    d = tmp_path / "npy"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "crops.npy", rng.normal(size=(6, 10, 32)).astype(np.float32))  # RTFM-style (T, crops, D)
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "wrongdim.npy", rng.normal(size=(5, 16)).astype(np.float32))
    (d / "garbage.npy").write_bytes(b"nope")
    np.save(d / "short.npy", rng.normal(size=(8, 32)).astype(np.float32))  # 8 x 16 frames, video of 50
    ids = ("crops", "pickled", "wrongdim", "garbage", "absent")
    manifest = Manifest([VideoEntry(v, "x", "test", "normal") for v in ids]
                        + [VideoEntry("short", "x", "test", "normal", num_frames=50)])
    s = import_npy(d, tmp_path / "c.zarr", "i3d-rtfm", manifest, snippet=16)
    assert s.imported == ["crops"]
    reasons = {f["video_id"]: f["reason"] for f in s.failed}
    assert "not a readable .npy" in reasons["pickled"] and "not a readable .npy" in reasons["garbage"]
    assert "feature dim 16 != 32" in reasons["wrongdim"] and "not found" in reasons["absent"]
    assert "8 rows x 16 frames go past the 50 frames the manifest gives (wrong --snippet?)" in reasons["short"]
    f = FeatureCache(tmp_path / "c.zarr").read("i3d-rtfm", "crops")
    np.testing.assert_array_equal(f.frame_index, np.arange(6) * 16)
    assert f.num_frames == 96 and f.emb.shape == (6, 32)
    # failures are kept as featurize keeps them: in the cache (cache info) and the JSONL log
    log = [json.loads(line) for line in (tmp_path / "c.zarr.failures.jsonl").read_text().splitlines()]
    assert {r["video_id"] for r in log} == {"pickled", "wrongdim", "garbage", "absent", "short"}
    assert all(r["stage"] == "import" and r["path"].endswith(f"{r['video_id']}.npy") for r in log)
    assert cache_info(tmp_path / "c.zarr")["encoders"]["i3d-rtfm"]["failed"] == 5
    # a rerun with the missing files in place imports them
    np.save(d / "absent.npy", rng.normal(size=(3, 32)).astype(np.float32))
    assert import_npy(d, tmp_path / "c.zarr", "i3d-rtfm", manifest, snippet=16).imported == ["absent"]
    # importing into a featurized encoder's key is refused before anything is touched
    featurized = planted_cache(tmp_path / "f.zarr", [{"video_id": "crops", "emb": rng.normal(size=(4, 64))}])
    with pytest.raises(VadpipeError, match="exists with"):
        import_npy(d, featurized.path, TINY_KEY, manifest, snippet=16)
    # nothing readable at all: the log still has every failure
    s = import_npy(d, tmp_path / "none.zarr", "other", Manifest([VideoEntry("garbage", "x", "test", "normal")]))
    assert s.imported == [] and len(s.failed) == 1 and (tmp_path / "none.zarr.failures.jsonl").exists()


def test_verify_and_info(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"video_id": f"v{i}", "emb": rng.normal(size=(8, 64))} for i in range(3)]
    cache = planted_cache(tmp_path / "c.zarr", rows, normalised=True)  # unit rows: verify checks their norm
    assert verify_cache(cache.path) == []
    w = FeatureCache(cache.path, mode="a")
    bad = rng.normal(size=(4, 64)).astype(np.float16)  # not unit norm
    w.write_video(TINY_KEY, "notunit", np.arange(4), np.zeros(4), bad, {"num_frames": 4})
    nan = np.full((4, 64), np.nan, np.float16)
    w.write_video(TINY_KEY, "nan", np.arange(4), np.zeros(4), nan, {"num_frames": 4})
    w.write_video(TINY_KEY, "outside", np.arange(4) * 5, np.zeros(4), np.eye(4, 64, dtype=np.float16), {"num_frames": 10})
    w._fresh_video_group(TINY_KEY, "half", {"num_frames": 3})  # a killed writer's leftover
    w.mark_failed(TINY_KEY, "broken", "decode", "empty file (0 bytes)", {})
    problems = verify_cache(cache.path)
    text = "\n".join(problems)
    assert "notunit: 4 embedding(s) not unit norm" in text
    assert "nan: emb has NaN/inf values" in text
    assert "outside: frame_index outside [0, 10)" in text
    assert "half: incomplete" in text and "broken" not in text and "v0" not in text
    info = cache_info(cache.path)["encoders"][TINY_KEY]
    assert (info["done"], info["failed"], info["incomplete"]) == (6, 1, 1)
    assert info["failures"] == [{"video_id": "broken", "stage": "decode", "reason": "empty file (0 bytes)"}]
    r = CliRunner().invoke(app, ["cache", "verify", str(cache.path)])
    assert r.exit_code == 1 and "4 problem(s)" in r.output
    r = CliRunner().invoke(app, ["cache", "info", str(cache.path)])
    assert r.exit_code == 0 and "6 done, 1 failed, 1 incomplete" in r.output


@pytest.mark.parametrize("portable", [False, True], ids=["dir_fd", "plain-paths"])
def test_fast_zarr_reader_equals_the_zarr_api(tmp_path, monkeypatch, portable):
    """The direct-file read path gives exactly what zarr itself reads, fill-value chunks
    included; also where the OS has no dir_fd/readv (e.g. Windows)."""
    import os

    import zarr
    from zarr.codecs import BytesCodec

    import vadpipe.cache.zarr_fast

    if portable:
        monkeypatch.setattr(vadpipe.cache.zarr_fast, "_DIR_FD", False)
        monkeypatch.delattr(os, "readv", raising=False)

    w = FeatureCache(tmp_path / "c.zarr", mode="a")
    w.ensure_encoder("k", {"dim": 3})
    rows = {
        "one": (np.array([0]), np.array([0.0]), np.zeros((1, 3), np.float16)),  # all fill value: no chunk files
        "many": (np.arange(5) * 3, np.arange(5) / 7, np.random.default_rng(0).normal(size=(5, 3)).astype(np.float16)),
    }
    for vid, (idx, pts, emb) in rows.items():
        w.write_video("k", vid, idx, pts, emb, {"num_frames": 20},
                      arrays={"text": np.array([["a b"], ["c"], ["d"], ["e"], ["f"]])[: len(idx)]})
    # arrays of other kinds (several compressed chunks, big-endian) go through the zarr API
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")["k"]["many"]
    g.create_array("chunked", data=np.arange(10.0).reshape(5, 2), chunks=(2, 2))
    g.create_array("big_endian", data=np.arange(5, dtype=">i4"), compressors=None, serializer=BytesCodec(endian="big"))
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    r = FeatureCache(tmp_path / "c.zarr")
    through_zarr = []  # the arrays the fast path handed to the zarr API
    api_read = r._backend.read_array
    monkeypatch.setattr(r._backend, "read_array", lambda node, name: through_zarr.append(name) or api_read(node, name))
    assert {"chunked", "big_endian"} <= set(r.read("k", "many").arrays)
    assert sorted(through_zarr) == ["big_endian", "chunked", "text"]
    for vid in rows:
        f = r.read("k", vid)
        g = root["k"][vid]
        for name, got in [("frame_index", f.frame_index), ("pts", f.pts), ("emb", f.emb), ("text", f.arrays["text"])] + [
            (name, f.arrays[name]) for name in ("chunked", "big_endian") if name in f.arrays
        ]:
            ref = g[name][:]
            assert got.dtype == ref.dtype and got.shape == ref.shape
            np.testing.assert_array_equal(got, ref)
        assert f.attrs == dict(g.attrs)


def test_recipe_mismatch_names_the_field(tmp_path):
    c = FeatureCache(tmp_path / "c.zarr", mode="a")
    c.ensure_encoder("k", {"dim": 4, "sampling": {"mode": "fps", "fps": 5.0}})
    with pytest.raises(VadpipeError, match=r"sampling\.mode='fps', this run asks sampling\.mode='stride'"):
        c.ensure_encoder("k", {"dim": 4, "sampling": {"mode": "stride", "stride": 4, "start": 0}})
    c.ensure_encoder("j", {"sampling": {"x": None}})
    with pytest.raises(VadpipeError, match=r"exists with sampling=\{'x': None\}, this run asks sampling=\{\}"):
        c.ensure_encoder("j", {"sampling": {}})
