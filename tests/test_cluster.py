"""Featurize and train on a cluster: Slurm job arrays (submitit) on a real one-node Slurm,
resubmission after a killed task, hand-written sbatch scripts, and the local executor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vadpipe.cache import FeatureCache
from vadpipe.cli import app
from vadpipe.distribute.executors import SlurmOptions
from vadpipe.data_manifests import Manifest, VideoEntry
from vadpipe.errors import VadpipeError

from conftest import TINY, TINY_KEY, require_shared
from conftest import tree_bytes as files
from slurm_fixture import slurm_cluster  # noqa: F401 - a fixture

runner = CliRunner()


def real_entries() -> list[VideoEntry]:
    """Real footage; over 4 shards (round robin) shard 0 gets the 1st and 5th row."""
    videos = require_shared("videos")
    return [
        VideoEntry("ped2_train01", str(videos / "ucsd_ped2/training/frames/01"), "train", "normal"),
        VideoEntry("avenue_test08", str(videos / "avenue/testing_videos/08.avi"), "test", "normal"),
        VideoEntry("ped2_test01", str(videos / "ucsd_ped2/testing/frames/01"), "test", "normal"),
        VideoEntry("avenue_train12", str(videos / "avenue/training_videos/12.avi"), "train", "normal"),
        VideoEntry("avenue_test21", str(videos / "avenue/testing_videos/21.avi"), "test", "normal"),
    ]


def save_manifest(path: Path, entries: list[VideoEntry]) -> Path:
    Manifest(entries).save(path)
    return path


def featurize_args(manifest: Path, cache: Path, *more: str) -> list[str]:
    return ["featurize", str(manifest), "--cache", str(cache), "--encoder", TINY, "--stride", "4", "--no-progress", *more]


SLURM_ARRAY = ("--executor", "slurm", "--shards", "4", "--slurm-cpus", "1", "--slurm-time", "10")


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def done_videos(cache: Path) -> set[str]:
    try:
        return set(FeatureCache(cache).video_ids(TINY_KEY))
    except VadpipeError:  # not created yet
        return set()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


# ---------------------------------------------------------------------------- without Slurm
def test_slurm_options_become_sbatch_directives():
    options = SlurmOptions(partition="gpu", gpus=2, cpus=8, mem_gb=7.5, time_min=30, account="lab", qos="high",
                           extra=("constraint=a100", "--exclusive"))
    assert options.directives() == {
        "time": 30, "partition": "gpu", "gpus-per-node": 2, "cpus-per-task": 8, "mem": "7680M",
        "account": "lab", "qos": "high", "constraint": "a100", "exclusive": True,
    }
    assert SlurmOptions(mem_gb=16).directives() == {"time": 120, "mem": "16G"}
    with pytest.raises(VadpipeError, match="array"):
        SlurmOptions(extra=("array=0-9",)).directives()


def test_emit_sbatch_writes_an_array_script_of_the_same_command(tmp_path):
    manifest = save_manifest(tmp_path / "m.csv", real_entries()[:2])
    script = tmp_path / "job.sh"
    out = invoke(*featurize_args(manifest, tmp_path / "c.zarr", "--batch-size", "8", "--emit-sbatch", str(script),
                                 "--shards", "4", "--slurm-parallel", "2", "--slurm-gpus", "1",
                                 "--slurm-partition", "gpu", "--slurm-extra", "constraint=a100"))
    assert f"wrote {script}: 4 array task(s)" in out
    text = script.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu",
                 "#SBATCH --constraint=a100", f"#SBATCH --output={tmp_path}/c.zarr.slurm/%A_%a.out",
                 f"#SBATCH --chdir={Path.cwd()}"):
        assert line in text.splitlines()
    command = text.strip().splitlines()[-1]
    assert command.endswith(
        f"featurize {manifest} --cache {tmp_path}/c.zarr --encoder {TINY} --stride 4 --batch-size 8 "
        '--num-shards 4 --no-progress --shard "$SLURM_ARRAY_TASK_ID"'
    )
    assert (tmp_path / "c.zarr.slurm").is_dir()  # sbatch does not create the log folder
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert not (tmp_path / "c.zarr").exists()  # nothing ran


def test_local_executor_runs_the_shards_here_and_redoes_only_what_is_missing(tmp_path):
    manifest = save_manifest(tmp_path / "m.csv", real_entries()[:3])
    cache = tmp_path / "c.zarr"
    out = invoke(*featurize_args(manifest, cache, "--shards", "3"))
    assert "[3/3] shard 2: 1 done" in out and done_videos(cache) == {"ped2_train01", "avenue_test08", "ped2_test01"}
    assert "nothing to submit (3 of 3 shards complete)" in invoke(*featurize_args(manifest, cache, "--shards", "3"))
    shutil.rmtree(cache / TINY_KEY / "avenue_test08")  # as if its task had been killed before writing it
    out = invoke(*featurize_args(manifest, cache, "--shards", "3"))
    assert "[1/1] shard 1: 1 done, 0 skipped" in out


def test_slurm_executor_needs_slurm_and_shards(tmp_path, monkeypatch):
    manifest = save_manifest(tmp_path / "m.csv", real_entries()[:1])
    out = invoke(*featurize_args(manifest, tmp_path / "c.zarr", "--executor", "slurm", "--shard", "1", "--num-shards", "2"),
                 code=2)
    assert "--shards N" in out
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, sbatch, squeue
    out = invoke(*featurize_args(manifest, tmp_path / "c.zarr", "--executor", "slurm", "--shards", "2"), code=2)
    assert "error: --executor slurm: no Slurm here" in out


# ---------------------------------------------------------------------------- real Slurm
@pytest.fixture(scope="module")
def array_run(slurm_cluster, tmp_path_factory):
    """The real footage featurized twice: locally, and as a 4-task Slurm array."""
    root = tmp_path_factory.mktemp("array")
    manifest = save_manifest(root / "m.csv", real_entries())
    local, remote = root / "local.zarr", root / "slurm.zarr"
    invoke(*featurize_args(manifest, local))
    t0 = time.monotonic()
    output = invoke(*featurize_args(manifest, remote, *SLURM_ARRAY))
    return {"manifest": manifest, "local": local, "slurm": remote, "output": output, "seconds": time.monotonic() - t0}


def test_slurm_array_writes_the_cache_a_local_run_writes_byte_for_byte(array_run):
    out = array_run["output"]
    assert "shards 0,1,2,3 of 4" in out and "[4/4] shard" in out, out
    assert "5 done, 0 skipped, 0 failed videos; 0 of 4 tasks failed" in out
    local, remote = files(array_run["local"]), files(array_run["slurm"])
    assert sorted(local) == sorted(remote)
    assert [name for name in local if local[name] != remote[name]] == []
    assert len(done_videos(array_run["slurm"])) == 5
    logs = array_run["slurm"].with_name("slurm.zarr.slurm")
    assert len(list(logs.glob("*_log.out"))) == 4  # one stdout (and stderr) file per task


def test_rerunning_a_finished_array_submits_nothing(array_run):
    out = invoke(*featurize_args(array_run["manifest"], array_run["slurm"], *SLURM_ARRAY))
    assert "nothing to submit (4 of 4 shards complete)" in out


def test_emitted_script_is_accepted_by_sbatch(slurm_cluster, array_run, tmp_path):
    script = tmp_path / "job.sh"
    invoke(*featurize_args(array_run["manifest"], array_run["slurm"], "--emit-sbatch", str(script), "--shards", "4"))
    check = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_train_runs_as_one_slurm_job(array_run, tmp_path):
    common = ["train", "prototype", "--cache", str(array_run["slurm"]), "--manifest", str(array_run["manifest"])]
    out = invoke(*common, "-o", str(tmp_path / "remote"), "--executor", "slurm", "--slurm-time", "10")
    assert "submitted job" in out and "[1/1] train prototype" in out and f"saved to {tmp_path / 'remote'}" in out
    invoke(*common, "-o", str(tmp_path / "local"))
    assert files(tmp_path / "remote") == files(tmp_path / "local")
    # an error raised in the job comes back as its one line, with the job's log files
    out = invoke(*common, "-o", str(tmp_path / "bad"), "--param", "nonsense=1", "--executor", "slurm", code=1)
    assert "FAILED: vadpipe.errors.VadpipeError: head 'prototype': unknown parameter(s) nonsense" in out
    assert "_0_log.err" in out.split("1 task(s) failed:")[1]


def kill_task(job: str, index: int) -> None:
    """SIGKILL the Python of one array task, as the OOM killer or a node failure would.

    (``scancel``, even ``--signal=KILL``, sends SIGTERM first: submitit ignores it, but it
    interrupts the task's blocked open, which then records the video as failed and ends the
    task normally; see docs/cluster.md.)
    """
    victims = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:  # not a process, or gone
            continue
        if (b"submitit.core._submit" in argv and not argv[0].endswith(b"srun")
                and {f"SLURM_ARRAY_JOB_ID={job}".encode(), f"SLURM_ARRAY_TASK_ID={index}".encode()} <= env):
            victims.append(int(proc.name))
    assert victims, f"no process of task {job}_{index}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)


def _release(fifo: Path) -> None:
    """Unblock a reader stuck opening ``fifo`` (it then reads end-of-file)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a reader waits
    except OSError:
        return
    os.close(fd)


def test_a_killed_task_is_listed_and_a_rerun_redoes_only_its_missing_video(slurm_cluster, tmp_path):
    # The "slow" video is an FFmpeg concat file naming a FIFO: opening it blocks until the FIFO
    # has a writer, so the task of shard 1 (avenue_test08, then slow) is certainly mid-video,
    # with one video done, when it is cancelled; a rerun then finds the real footage there.
    fifo, slow = tmp_path / "slow.fifo", tmp_path / "slow.avi"
    os.mkfifo(fifo)
    slow.write_text(f"ffconcat version 1.0\nfile '{fifo.name}'\n")
    manifest = save_manifest(tmp_path / "m.csv", real_entries() + [VideoEntry("slow", str(slow), "test", "normal")])
    cache = tmp_path / "c.zarr"
    args = featurize_args(manifest, cache, *SLURM_ARRAY)
    first = subprocess.Popen([sys.executable, "-m", "vadpipe.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        record = cache.with_name("c.zarr.slurm") / "submissions.jsonl"
        wait_until(lambda: "avenue_test08" in done_videos(cache) and record.exists(), 240, "shard 1's first video")
        job = next(iter(json.loads(record.read_text())["tasks"])).split("_")[0]
        # while task 1 runs, a rerun leaves its shard alone; another sharding is refused
        out = invoke(*args, "--no-wait")
        assert f"shard 1: still queued or running as {job}_1" in out and "submitted job" not in out
        assert "still runs on this cache" in invoke(*featurize_args(manifest, cache, "--executor", "slurm", "--shards", "2"),
                                                   code=2)
        kill_task(job, 1)
        output, _ = first.communicate(timeout=240)
    finally:
        _release(fifo)
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, output
    assert f"shard 1 ({job}_1): FAILED" in output
    assert f"{cache}.slurm/{job}_1_0_log.out" in output and f"{cache}.slurm/{job}_1_0_log.err" in output
    assert done_videos(cache) == {e.video_id for e in real_entries()}  # all but "slow"
    assert FeatureCache(cache).status(TINY_KEY, "slow") in (None, "incomplete")  # never a half video marked done

    before = {name: (cache / name).stat().st_mtime_ns for name in files(cache) if not name.startswith(f"{TINY_KEY}/slow/")}
    slow.unlink()
    shutil.copy(require_shared("videos") / "avenue/testing_videos/08.avi", slow)
    out = invoke(*args)
    assert "shards 1 of 4 (3 complete already)" in out and "[1/1] shard 1" in out and "1 done, 1 skipped" in out
    assert "slow" in done_videos(cache)
    after = {name: (cache / name).stat().st_mtime_ns for name in before}
    assert after == before  # nothing done before was rewritten
