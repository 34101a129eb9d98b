"""Handing freed memory back to the system, shared by featurize and the heads."""

from __future__ import annotations

import os


def _libc_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _libc_malloc_trim() if os.name == "posix" else None


def release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    glibc serves allocations below its adaptive mmap threshold (raised up to 32 MiB once a
    larger block is freed) from the heap, and keeps what is freed there: a model's weights, a
    step's activations, the few-MB tensors of each batch. Later large arrays are mapped afresh
    beside it, so the freed heap stays in the process's RSS. Trimming releases those pages; it
    changes no allocator setting (a fixed ``M_MMAP_THRESHOLD`` does that, process-wide, and
    costs 30-60% throughput in page faults, measured in featurize and in prompt learning).

    Called by featurize after every batch, and by the heads once they let a text model or a
    prompt learner go (and clipassist after every step): ``kmeans`` with learned prompts at
    UCF-Crime size peaked at 1,915 MiB without it, 1,529 with it (docs/benchmarks.md).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
