"""``--executor``, ``--wait`` and the ``--slurm-*`` options, declared once for every command
that can run on a cluster, and the command line of a run rebuilt from what the user gave."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import List, Optional

import typer

EXECUTOR_OPTIONS = {  # parameter name: (type, option)
    "executor": (str, typer.Option("local", "--executor", help="local: run here; slurm: submit to Slurm (submitit).")),
    "wait": (bool, typer.Option(True, "--wait/--no-wait", help="slurm: wait, reporting tasks as they end; or return once submitted.")),
    "slurm_partition": (Optional[str], typer.Option(None, "--slurm-partition", help="Slurm partition.")),
    "slurm_gpus": (int, typer.Option(0, "--slurm-gpus", help="GPUs per task.")),
    "slurm_cpus": (Optional[int], typer.Option(None, "--slurm-cpus", help="CPUs per task (decode workers + model).")),
    "slurm_mem": (Optional[float], typer.Option(None, "--slurm-mem", help="Memory per task, GB.")),
    "slurm_time": (int, typer.Option(120, "--slurm-time", help="Time limit per task, minutes.")),
    "slurm_parallel": (Optional[int], typer.Option(None, "--slurm-parallel", help="Most array tasks running at once (%N).")),
    "slurm_account": (Optional[str], typer.Option(None, "--slurm-account")),
    "slurm_qos": (Optional[str], typer.Option(None, "--slurm-qos")),
    "slurm_extra": (Optional[List[str]], typer.Option(None, "--slurm-extra", help="Another sbatch option KEY=VALUE (e.g. constraint=a100); repeatable.")),
    "slurm_dir": (Optional[Path], typer.Option(None, "--slurm-dir", help="Logs and submitit files (default: OUTPUT.slurm next to the cache / run folder).")),
    "slurm_job_name": (Optional[str], typer.Option(None, "--slurm-job-name")),
}


def executor_options(fn):
    """Give a command the options above; it receives them as one ``executor_options`` argument
    (a :class:`vadpipe.distribute.executors.ExecutorOptions`).

    Typer reads a command's options from its signature, so the wrapper's signature is the
    command's own plus these (``inspect.Signature``), and the wrapper folds them back into one
    object before calling the command.
    """
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "executor_options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, (kind, option) in EXECUTOR_OPTIONS.items()]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vadpipe.distribute.executors import ExecutorOptions, SlurmOptions

        given = {name: kwargs.pop(name) for name in EXECUTOR_OPTIONS}
        slurm = SlurmOptions(
            partition=given["slurm_partition"], gpus=given["slurm_gpus"], cpus=given["slurm_cpus"],
            mem_gb=given["slurm_mem"], time_min=given["slurm_time"], array_parallelism=given["slurm_parallel"],
            account=given["slurm_account"], qos=given["slurm_qos"], extra=tuple(given["slurm_extra"] or ()),
            folder=given["slurm_dir"], job_name=given["slurm_job_name"],
        )
        return fn(*args, executor_options=ExecutorOptions(given["executor"], given["wait"], slurm), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + added)
    wrapper.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "executor_options"}
    return wrapper


def given_options(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The command's arguments and the options the user gave, as a command line (for a
    script that reruns it elsewhere); ``drop`` names parameters to leave out."""
    args, opts = [], []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in drop or source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False):
            opts += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            for v in value if getattr(param, "multiple", False) else [value]:
                opts += [param.opts[0], str(getattr(v, "value", v))]
    return args + opts


def wait_and_report(handles, folder, describe) -> list:
    """Wait for the tasks, one line as each ends; then the failed ones with their log files."""
    from vadpipe.distribute.executors import wait_for

    def report(outcome, ended, total):
        where = f" ({outcome.job_id})" if outcome.job_id else ""
        what = describe(outcome.result) if outcome.ok else f"FAILED: {outcome.error}"
        typer.echo(f"[{ended}/{total}] {outcome.label}{where}: {what}")

    try:
        outcomes = wait_for(handles, report)
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; the tasks keep running (squeue; logs in {folder})", err=True)
        raise typer.Exit(130) from None
    failed = [o for o in outcomes if not o.ok]
    if failed:
        typer.echo(f"{len(failed)} task(s) failed:", err=True)
        for o in failed:
            typer.echo(f"  {o.label}{f' ({o.job_id})' if o.job_id else ''}: {o.error}", err=True)
            for log in o.logs:
                typer.echo(f"    {log}", err=True)
    return outcomes
