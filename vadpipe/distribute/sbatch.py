"""A job array as a plain sbatch script, for clusters where submitting from Python is not wanted.

The command each task runs comes from the caller (the CLI builds it from its own options);
:data:`TASK_INDEX` in it becomes the array task's index (``$SLURM_ARRAY_TASK_ID``).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from vadpipe.distribute.executors import SlurmOptions

TASK_INDEX = "{array-task-index}"


def write_sbatch_array(path: str | Path, command: list[str], num_tasks: int, slurm: SlurmOptions, folder: Path,
                       description: str = "") -> Path:
    """Write an sbatch script whose array task i runs ``command`` with :data:`TASK_INDEX`
    replaced by i. Paths in ``command`` are read from the current directory (``--chdir``)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)  # sbatch does not create the log folder
    parallel = f"%{slurm.array_parallelism}" if slurm.array_parallelism else ""
    directives = {
        "job-name": slurm.job_name or "vadpipe",
        "array": f"0-{num_tasks - 1}{parallel}",
        "output": str(folder / "%A_%a.out"),
        "error": str(folder / "%A_%a.err"),
        "chdir": str(Path.cwd().resolve()),
        **slurm.directives(),
    }
    line = " ".join('"$SLURM_ARRAY_TASK_ID"' if part == TASK_INDEX else shlex.quote(part) for part in command)
    lines = ["#!/bin/bash"] + [f"# {text}" for text in description.splitlines()]
    lines += [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={shlex.quote(str(v))}" for k, v in directives.items()]
    lines += ["", "set -euo pipefail", line, ""]
    out = Path(path)
    out.write_text("\n".join(lines))
    out.chmod(0o755)
    return out
