"""Where a model runs and in which precision: one rule for featurize, the captioner and heads.

``resolve_device("auto")`` is cuda when present, else cpu. ``resolve_precision("auto", device)``
is fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 / AMX: about 4x faster than
fp32 there for ViT-B/32), fp32 otherwise. :data:`PRECISIONS` and :func:`torch_dtype` are
the one map from a precision's name to its torch dtype. torch is imported only when a
function needs it. :func:`usable_cores` and :func:`capped_threads`: the cores a job may use
(a Slurm allocation, ``taskset``), not the node's, and torch's thread pool held to them.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from vadpipe.errors import VadpipeError

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(device: str | None) -> str:
    """``auto`` -> cuda when present, else cpu; an unavailable cuda is a clear error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VadpipeError(f"device {device!r} requested but CUDA is not available here")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise VadpipeError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return precision


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: fp16 on CUDA; bf16 on a CPU with native bf16, fp32 otherwise."""
    if precision != "auto":
        return check_precision(precision)
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def torch_dtype(precision: str):
    """``"fp32" | "bf16" | "fp16"`` -> the torch dtype."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[check_precision(precision)]


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def usable_cores() -> int:
    """The cores this process may run on (a Slurm allocation or ``taskset``), not the node's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 2


@contextmanager
def capped_threads():
    """Run the block with torch's intra-op threads at most :func:`usable_cores`, restored after.

    torch sizes its pool by the node's physical cores, not the job's: on a shared node a
    4-core Slurm job would run 64 threads that fight over 4 cores (small ops then spend their
    time waiting for each other). Never raises a smaller count a user has set; does nothing
    when torch is not imported (a head that does not need it stays without it)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if before is not None and before > usable_cores():
        torch.set_num_threads(usable_cores())
    try:
        yield
    finally:
        if before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)
