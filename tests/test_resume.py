"""Issue 3: a run killed at any point, rerun, gives the same bytes; shards in one store lose nothing."""

import os
import subprocess
import sys

import pytest

from conftest import TINY, assert_same_arrays, shared_clips_manifest, tree_bytes


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory):
    return shared_clips_manifest(tmp_path_factory.mktemp("resume") / "m.csv",
                                 "ped2_test", "avenue21", "avenue08", "ped2_train", "avenue12")


def run_featurize(manifest, cache, *extra, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "VADPIPE_FAULT_INJECT"}
    if fault:
        env["VADPIPE_FAULT_INJECT"] = fault
    cmd = [sys.executable, "-c", "from vadpipe.cli import app; app()", "featurize", str(manifest), "--cache", str(cache),
           "--encoder", TINY, "--stride", "4", "--precision", "fp32", "--no-progress", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(manifest_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ref") / "c.zarr"
    r = run_featurize(manifest_path, cache, "--workers", "1")
    assert r.returncode == 0, r.stderr
    return tree_bytes(cache)


@pytest.mark.parametrize("fault", ["after_array:1", "before_done:3", "after_video:4"])
def test_killed_and_resumed_run_is_bit_identical(manifest_path, reference, tmp_path, fault):
    cache = tmp_path / "c.zarr"
    killed = run_featurize(manifest_path, cache, "--workers", "0", fault=fault)
    assert killed.returncode == -9, killed.stderr  # SIGKILL at the fault point
    resumed = run_featurize(manifest_path, cache, "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert tree_bytes(cache) == reference


def test_concurrent_shards_into_one_store_lose_nothing(manifest_path, reference, tmp_path):
    cache = tmp_path / "c.zarr"
    env = {k: v for k, v in os.environ.items() if k != "VADPIPE_FAULT_INJECT"}
    procs = [
        subprocess.Popen([sys.executable, "-c", "from vadpipe.cli import app; app()", "featurize", str(manifest_path),
                          "--cache", str(cache), "--encoder", TINY, "--stride", "4", "--precision", "fp32",
                          "--no-progress", "--workers", "0", "--shard", str(i), "--num-shards", "3"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert tree_bytes(cache) == reference


def test_killed_and_resumed_hdf5_run_has_the_same_content(manifest_path, tmp_path):
    ref = tmp_path / "ref.h5"
    assert run_featurize(manifest_path, ref, "--workers", "0").returncode == 0
    cache = tmp_path / "c.h5"
    killed = run_featurize(manifest_path, cache, "--workers", "0", fault="before_done:3")
    assert killed.returncode == -9, killed.stderr
    resumed = run_featurize(manifest_path, cache, "--workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "2 skipped" in resumed.stdout + resumed.stderr
    assert_same_arrays(cache, ref)  # same content; an HDF5 file rewritten after a kill has other offsets
