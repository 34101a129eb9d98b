"""``featurize`` as an array of tasks, one per shard of the manifest, all writing one cache.

:func:`submit_featurize` submits one task per shard that still has videos not done in the
cache (computed before submitting, without loading a model), so rerunning the same command
resubmits only what a killed, preempted or failed task left undone; a shard whose earlier
task is still queued or running is left alone (two writers on one video would race).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vadpipe.distribute.executors import ENDED, ExecutorOptions, Task, default_folder, make_executor, slurm_queue
from vadpipe.errors import VadpipeError

_SUBMISSIONS = "submissions.jsonl"


class FeaturizeShard:
    """An array task: featurize one shard. Checkpointable: when Slurm signals a time-out or a
    preemption, submitit requeues the same call, which skips the videos already done."""

    def __init__(self, echo: bool = False):
        self.echo = echo  # print the summary too (into the task's log file)

    def __call__(self, manifest_path: str, cache_path: str, config) -> Any:
        from vadpipe.data_manifests import load_manifest
        from vadpipe.featurize import featurize

        # concurrent tasks of a new cache create its encoder group race-free: the group and
        # its recipe are one atomic metadata write (FeatureCache.ensure_encoder)
        summary = featurize(load_manifest(manifest_path), cache_path, config)
        if self.echo:
            print(f"shard {config.shard} of {config.num_shards}: {summary.line()}", flush=True)
        return summary

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@dataclass
class FeaturizeSubmission:
    encoder_key: str
    num_shards: int
    handles: list = field(default_factory=list)
    shards: list[int] = field(default_factory=list)  # submitted now, in array order
    todo: dict[int, list[str]] = field(default_factory=dict)  # shard -> videos not done
    running: dict[int, str] = field(default_factory=dict)  # shard -> earlier task still queued/running
    folder: Path | None = None

    @property
    def job_id(self) -> str | None:
        ids = {h.job_id.split("_")[0] for h in self.handles if h.job_id}
        return ids.pop() if len(ids) == 1 else None


def submit_featurize(manifest_path: str | Path, cache_path: str | Path, config, num_shards: int,
                     options: ExecutorOptions) -> FeaturizeSubmission:
    """Submit one task per shard that has videos not done; shards still queued are left alone.

    What is done is read from the cache before submitting (no model is loaded here), so a
    rerun of the same command submits only the shards a killed or failed task left undone.
    """
    from vadpipe.data_manifests import load_manifest
    from vadpipe.encoders.spec import canonical_key

    if num_shards < 1:
        raise VadpipeError(f"--shards must be >= 1, got {num_shards}")
    manifest_path, cache_path = Path(manifest_path).resolve(), Path(cache_path).resolve()
    folder = Path(options.slurm.folder or default_folder(cache_path)).resolve()
    executor = make_executor(options, folder, "vadpipe-featurize")
    manifest = load_manifest(manifest_path)
    key = canonical_key(config.encoder)
    sub = FeaturizeSubmission(key, num_shards, folder=folder if executor.name == "slurm" else None)
    if executor.name == "slurm":  # first: a running task's HDF5 shard file is locked for reading
        sub.running = _still_running(folder, num_shards)
    done = _done_videos(cache_path, key, num_shards, skip_shards=set(sub.running))
    for shard in range(num_shards):
        missing = [e.video_id for e in manifest.shard(shard, num_shards) if e.video_id not in done]
        if missing:
            sub.todo[shard] = missing
    sub.shards = [s for s in sub.todo if s not in sub.running]
    tasks = [
        Task(f"shard {s}", FeaturizeShard(echo=executor.name == "slurm"),
             (str(manifest_path), str(cache_path), replace(config, shard=s, num_shards=num_shards)))
        for s in sub.shards
    ]
    if tasks:
        sub.handles = executor.submit(tasks)
        if executor.name == "slurm":
            _record(folder, num_shards, {h.job_id: s for h, s in zip(sub.handles, sub.shards)})
    return sub


def _done_videos(cache_path: Path, key: str, num_shards: int, skip_shards: set[int] = frozenset()) -> set[str]:
    """Video ids done under ``key``: in the cache, or for HDF5 in any per-shard file too
    (except the files of ``skip_shards``, whose tasks are still writing them)."""
    from vadpipe.cache import FeatureCache, is_hdf5, shard_cache_path

    paths = [cache_path]
    if is_hdf5(cache_path):  # one file per shard, merged later
        paths += [shard_cache_path(cache_path, s, num_shards) for s in range(num_shards) if s not in skip_shards]
    done: set[str] = set()
    for path in paths:
        if not path.exists():
            continue
        with FeatureCache(path) as cache:
            if key in cache.encoders():
                done.update(cache.video_ids(key))
    return done


def _record(folder: Path, num_shards: int, tasks: dict[str, int]) -> None:
    with open(folder / _SUBMISSIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"num_shards": num_shards, "tasks": tasks, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def _still_running(folder: Path, num_shards: int) -> dict[int, str]:
    """Shards whose earlier task is still queued or running (resubmitting them would put two
    writers on one video). An active task of a different sharding is an error."""
    path = folder / _SUBMISSIONS
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    task_ids = [t for r in records for t in r["tasks"]]
    queue = slurm_queue(task_ids)
    if queue is None:
        raise VadpipeError("squeue failed: cannot tell which earlier tasks still run; try again")
    running = {}
    for record in records:
        for task_id, shard in record["tasks"].items():
            state = queue.get(task_id)
            if state is None or state.split()[0] in ENDED:
                continue
            if record["num_shards"] != num_shards:
                raise VadpipeError(
                    f"task {task_id} ({record['num_shards']} shards) still runs on this cache; wait for it "
                    f"or scancel it before submitting {num_shards} shards"
                )
            running[shard] = task_id
    return running
