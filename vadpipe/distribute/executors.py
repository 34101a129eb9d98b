"""Where the work runs: in this process, or on a Slurm cluster through submitit.

Two back-ends behind one interface (the distributors of video2dataset, as plain objects):

- :class:`LocalExecutor` runs each task here, one after another (the default);
- :class:`SlurmExecutor` submits the tasks as one Slurm job array with submitit; array task
  ``i`` runs ``tasks[i]`` on a compute node, with this same Python.

``executor.submit(tasks)`` returns one handle per task; :func:`wait_for` follows them and
reports each as it ends. What runs in the tasks is the business of
:mod:`~vadpipe.distribute.featurize_array` and :mod:`~vadpipe.distribute.train_job`.

Task states come from ``squeue`` (a task has ended once it leaves the queue's active states)
and submitit's result files, not from ``sacct``: submitit's own ``job.state`` / ``job.done()``
read ``sacct`` only, which needs Slurm accounting (slurmdbd + a database); without it they
say UNKNOWN forever for a task that was killed before writing its result.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vadpipe.errors import VadpipeError

EXECUTORS = ("local", "slurm")
# States of a task that will not run again; anything else (PENDING, RUNNING, REQUEUED,
# COMPLETING, SUSPENDED, ...) is still active. A task gone from squeue has ended too.
ENDED = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
}


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
        return state is None or state.split()[0] in ENDED

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
            self._ex = submitit.SlurmExecutor(folder=folder)
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


def default_folder(output: str | Path) -> Path:
    """Where Slurm logs and submitit's files go: ``<output>.slurm`` next to the output."""
    p = Path(output).resolve()
    return p.with_name(p.name + ".slurm")
