"""Where the work runs: in this process, or on a Slurm cluster through submitit.

Two back-ends behind one interface (the distributors of video2dataset, as plain objects):

- :class:`LocalExecutor` runs each task here, one after another (the default);
- :class:`SlurmExecutor` submits the tasks as one Slurm job array with submitit; array task
  ``i`` runs ``tasks[i]`` on a compute node, with this same Python by default.

``executor.submit(tasks)`` returns one handle per task; :func:`wait_for` follows them and
reports each as it ends. On top of that:

- :func:`submit_featurize`: one task per shard of the manifest that still has videos not
  done in the cache (computed before submitting), all writing into one cache, so rerunning
  the same command resubmits only what a killed, preempted or failed task left undone;
- :func:`write_sbatch_array`: the same array as a plain sbatch script, for hand submission;
- :func:`submit_training`: ``train_head`` as one job.

Task states come from ``squeue`` (a task has ended once it leaves the queue's active states)
and submitit's result files, not from ``sacct``: submitit's own ``job.state`` / ``job.done()``
read ``sacct`` only, which needs Slurm accounting (slurmdbd + a database); without it they
say UNKNOWN forever for a task that was killed before writing its result.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from vadpipe.errors import VadpipeError

EXECUTORS = ("local", "slurm")
# States of a task that will not run again; anything else (PENDING, RUNNING, REQUEUED,
# COMPLETING, SUSPENDED, ...) is still active. A task gone from squeue has ended too.
_ENDED = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
}
_SUBMISSIONS = "submissions.jsonl"


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class SlurmOptions:
    """What each Slurm task asks for; ``None`` leaves a setting to the cluster's default."""

    partition: str | None = None
    gpus: int = 0  # per task (an array task is one process on one node)
    cpus: int | None = None  # per task
    mem_gb: float | None = None
    time_min: int = 120
    array_parallelism: int | None = None  # most array tasks running at once (None: no limit)
    account: str | None = None
    qos: str | None = None
    extra: tuple[str, ...] = ()  # more sbatch options: "KEY=VALUE" or a bare "FLAG"
    folder: Path | None = None  # logs + submitit's files (default: next to the output)
    job_name: str | None = None
    python: str | None = None  # interpreter on the compute nodes (default: this one)

    def directives(self) -> dict[str, Any]:
        """The sbatch options (long names) these settings ask for, extras last.

        The one translation: submitit gets it as ``additional_parameters`` and the emitted
        script as ``#SBATCH`` lines, so both ask the scheduler for the same thing.
        """
        d: dict[str, Any] = {"time": self.time_min}
        for key, value in (
            ("partition", self.partition),
            ("gpus-per-node", self.gpus or None),
            ("cpus-per-task", self.cpus),
            ("mem", _mem(self.mem_gb) if self.mem_gb else None),
            ("account", self.account),
            ("qos", self.qos),
        ):
            if value is not None:
                d[key] = value
        for item in self.extra:
            key, sep, value = item.strip().lstrip("-").partition("=")
            if not key or key in ("array", "output", "error"):
                raise VadpipeError(f"--slurm-extra {item!r}: expected an sbatch option KEY=VALUE (not array/output/error)")
            d[key] = value if sep else True
        return d


@dataclass(frozen=True)
class ExecutorOptions:
    """The shared ``--executor`` / ``--wait`` / ``--slurm-*`` choices of a command."""

    executor: str = "local"
    wait: bool = True
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise VadpipeError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")


def _mem(gb: float) -> str:
    return f"{int(gb)}G" if gb == int(gb) else f"{int(gb * 1024)}M"


# ---------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)``, called ``label`` in messages ("shard 3")."""

    label: str
    fn: Callable
    args: tuple = ()


@dataclass
class TaskOutcome:
    label: str
    ok: bool
    result: Any = None
    error: str | None = None  # one line: the exception, or the Slurm state of a killed task
    job_id: str | None = None  # Slurm: "<array job>_<index>"
    logs: tuple[str, ...] = ()  # Slurm: the task's stdout and stderr files


class _LocalHandle:
    job_id = None

    def __init__(self, outcome: TaskOutcome):
        self._outcome = outcome

    def ended(self, queue: dict[str, str]) -> bool:
        return True

    def outcome(self, queue: dict[str, str]) -> TaskOutcome:
        return self._outcome


class LocalExecutor:
    """Runs the tasks in this process, one after another; ``submit`` returns when all ended."""

    name = "local"

    def submit(self, tasks: list[Task]) -> list[_LocalHandle]:
        handles = []
        for task in tasks:
            try:
                outcome = TaskOutcome(task.label, True, result=task.fn(*task.args))
            except VadpipeError as exc:
                outcome = TaskOutcome(task.label, False, error=str(exc))
            handles.append(_LocalHandle(outcome))
        return handles


class _SlurmHandle:
    def __init__(self, label: str, job):
        self.label = label
        self.job = job  # a submitit Job
        self.job_id = str(job.job_id)

    def ended(self, queue: dict[str, str]) -> bool:
        state = queue.get(self.job_id)
        return state is None or state.split()[0] in _ENDED

    def outcome(self, queue: dict[str, str]) -> TaskOutcome:
        """Call only once :meth:`ended`: the result file is written before the task leaves the queue."""
        logs = (str(self.job.paths.stdout), str(self.job.paths.stderr))
        if not self.job.paths.result_pickle.exists():
            state = f"Slurm state {queue[self.job_id]}" if self.job_id in queue else "gone from the queue"
            return TaskOutcome(self.label, False, error=f"{state}, no result (killed before the end?)",
                               job_id=self.job_id, logs=logs)
        try:
            result = self.job.result()
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the task's error with its trace
            return TaskOutcome(self.label, False, error=_last_line(str(exc)), job_id=self.job_id, logs=logs)
        return TaskOutcome(self.label, True, result=result, job_id=self.job_id, logs=logs)


class SlurmExecutor:
    """Submits the tasks as one Slurm job array (one task: one job) through submitit."""

    name = "slurm"

    def __init__(self, options: SlurmOptions, folder: Path, job_name: str):
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._ex = submitit.SlurmExecutor(folder=folder, python=options.python)
        except RuntimeError:
            raise VadpipeError("--executor slurm: no Slurm here (srun not found on PATH)") from None
        params: dict[str, Any] = {
            "job_name": options.job_name or job_name,
            "additional_parameters": options.directives(),
        }
        if options.array_parallelism:
            params["array_parallelism"] = options.array_parallelism
        if options.cpus:  # since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task
            params["srun_args"] = [f"--cpus-per-task={options.cpus}"]
        self._ex.update_parameters(**params)
        self.folder = folder

    def submit(self, tasks: list[Task]) -> list[_SlurmHandle]:
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        try:
            with self._ex.batch():
                jobs = [self._ex.submit(task.fn, *task.args) for task in tasks]
        except (FailedJobError, FailedSubmissionError) as exc:
            raise VadpipeError(f"sbatch refused the job: {_last_line(str(exc))}") from None
        return [_SlurmHandle(task.label, job) for task, job in zip(tasks, jobs)]


def make_executor(options: ExecutorOptions, folder: Path, job_name: str):
    if options.executor == "slurm":
        return SlurmExecutor(options.slurm, folder, job_name)
    return LocalExecutor()


def slurm_queue(job_ids) -> dict[str, str] | None:
    """``{"<job>_<task>": state}`` for the tasks of these jobs that Slurm still lists.

    Array tasks are listed one per line (``-r``), ended ones too while slurmctld remembers
    them (MinJobAge); ``None`` when squeue cannot be asked (controller down).
    """
    jobs = sorted({str(j).split("_")[0] for j in job_ids})
    if not jobs:
        return {}
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(jobs)}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # every id purged from slurmctld's memory: all of them ended long ago
        return {} if "Invalid job id" in out.stderr else None
    queue = {}
    for line in out.stdout.split():
        task, _, state = line.partition("|")
        queue[task] = state
    return queue


def wait_for(handles: list, on_end: Callable[[TaskOutcome, int, int], None] | None = None,
             max_poll_s: float = 30.0) -> list[TaskOutcome]:
    """Follow the tasks until all have ended; ``on_end(outcome, n_ended, n_total)`` for each.

    Polls ``squeue`` once per round, every second at first and more slowly as time goes by.
    """
    outcomes: list[TaskOutcome | None] = [None] * len(handles)
    start = time.monotonic()
    ended = 0
    while ended < len(handles):
        job_ids = [h.job_id for h, o in zip(handles, outcomes) if o is None and h.job_id]
        queue = slurm_queue(job_ids) if job_ids else {}
        if queue is not None:  # squeue first, result files second (see _SlurmHandle.outcome)
            for i, handle in enumerate(handles):
                if outcomes[i] is None and handle.ended(queue):
                    outcomes[i] = handle.outcome(queue)
                    ended += 1
                    if on_end:
                        on_end(outcomes[i], ended, len(handles))
        if ended < len(handles):
            time.sleep(min(max_poll_s, 1.0 + (time.monotonic() - start) / 20))
    return outcomes  # type: ignore[return-value]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    # submitit's message ends with the log paths; the exception is the last line of the trace
    for line in reversed(lines):
        if not line.startswith(("You can check", "or at paths", "- /")) and ":" in line:
            return line
    return lines[-1] if lines else text


# ---------------------------------------------------------------------------- featurize
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


def default_folder(output: str | Path) -> Path:
    """Where Slurm logs and submitit's files go: ``<output>.slurm`` next to the output."""
    p = Path(output).resolve()
    return p.with_name(p.name + ".slurm")


def submit_featurize(manifest_path: str | Path, cache_path: str | Path, config, num_shards: int,
                     options: ExecutorOptions) -> FeaturizeSubmission:
    """Submit one task per shard that has videos not done; shards still queued are left alone.

    What is done is read from the cache before submitting (no model is loaded here), so a
    rerun of the same command submits only the shards a killed or failed task left undone.
    """
    from vadpipe.data_manifests import load_manifest
    from vadpipe.featurize.encoders import canonical_key
    from vadpipe.featurize.pipeline import shard_entries

    if num_shards < 1:
        raise VadpipeError(f"--shards must be >= 1, got {num_shards}")
    manifest_path, cache_path = Path(manifest_path).resolve(), Path(cache_path).resolve()
    folder = Path(options.slurm.folder or default_folder(cache_path)).resolve()
    executor = make_executor(options, folder, "vadpipe-featurize")
    entries = list(load_manifest(manifest_path))
    key = canonical_key(config.encoder)
    sub = FeaturizeSubmission(key, num_shards, folder=folder if executor.name == "slurm" else None)
    if executor.name == "slurm":  # first: a running task's HDF5 shard file is locked for reading
        sub.running = _still_running(folder, num_shards)
    done = _done_videos(cache_path, key, num_shards, skip_shards=set(sub.running))
    for shard in range(num_shards):
        missing = [e.video_id for e in shard_entries(entries, shard, num_shards) if e.video_id not in done]
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
    from vadpipe import cache as cache_mod

    paths = [cache_path]
    if cache_path.suffix.lower() in (".h5", ".hdf5"):  # one file per shard, merged later
        paths += [cache_mod.shard_cache_path(cache_path, s, num_shards) for s in range(num_shards)
                  if s not in skip_shards]
    done: set[str] = set()
    for path in paths:
        if not path.exists():
            continue
        with cache_mod.FeatureCache(path) as cache:
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
            if state is None or state.split()[0] in _ENDED:
                continue
            if record["num_shards"] != num_shards:
                raise VadpipeError(
                    f"task {task_id} ({record['num_shards']} shards) still runs on this cache; wait for it "
                    f"or scancel it before submitting {num_shards} shards"
                )
            running[shard] = task_id
    return running


def featurize_command(argv: list[str], num_shards: int) -> list[str]:
    """The featurize command one array task runs in a hand-submitted script."""
    exe = Path(sys.executable).with_name("vadpipe")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "vadpipe.cli"]
    return head + ["featurize", *argv, "--num-shards", str(num_shards), "--no-progress"]


def write_sbatch_array(path: str | Path, argv: list[str], num_shards: int, slurm: SlurmOptions,
                       folder: Path, workdir: Path | None = None) -> Path:
    """Write a plain sbatch script: array task i runs ``vadpipe featurize ARGV`` on shard i.

    ``argv`` is the featurize command line without the cluster options; paths in it are read
    from ``workdir`` (``--chdir``, default: the current directory).
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)  # sbatch does not create the log folder
    parallel = f"%{slurm.array_parallelism}" if slurm.array_parallelism else ""
    directives = {
        "job-name": slurm.job_name or "vadpipe-featurize",
        "array": f"0-{num_shards - 1}{parallel}",
        "output": str(folder / "%A_%a.out"),
        "error": str(folder / "%A_%a.err"),
        "chdir": str(Path(workdir or Path.cwd()).resolve()),
        **slurm.directives(),
    }
    command = shlex.join(featurize_command(argv, num_shards)) + ' --shard "$SLURM_ARRAY_TASK_ID"'
    lines = [
        "#!/bin/bash",
        f"# vadpipe featurize as a Slurm job array: task i featurizes shard i of {num_shards} into one cache.",
        "# Submit with `sbatch THIS_FILE`; resubmitting redoes only the videos not done.",
    ]
    lines += [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={shlex.quote(str(v))}" for k, v in directives.items()]
    lines += ["", "set -euo pipefail", command, ""]
    out = Path(path)
    out.write_text("\n".join(lines))
    out.chmod(0o755)
    return out


# ---------------------------------------------------------------------------- training
def _train(head: str, cache_path: str, manifest_path: str, out_dir: str, encoder: str | None, params: dict) -> dict:
    from vadpipe.data_manifests import load_manifest
    from vadpipe.models.runs import train_head

    model = train_head(head, cache_path, load_manifest(manifest_path), out_dir, encoder=encoder, params=params)
    return {"head": repr(model), "encoder": model.encoder, "output": out_dir}


def submit_training(head: str, cache_path: str | Path, manifest_path: str | Path, out_dir: str | Path,
                    encoder: str | None, params: dict, options: ExecutorOptions):
    """``train_head`` as one job; returns its handle (``wait_for([handle])`` to follow it)."""
    out_dir = Path(out_dir).resolve()
    folder = Path(options.slurm.folder or default_folder(out_dir)).resolve()
    executor = make_executor(options, folder, f"vadpipe-train-{head}")
    task = Task(f"train {head}", _train, (head, str(Path(cache_path).resolve()),
                                          str(Path(manifest_path).resolve()), str(out_dir), encoder, params))
    return executor.submit([task])[0]
