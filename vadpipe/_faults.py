"""Crash-test hook of the kill-and-resume tests (``VADPIPE_FAULT_INJECT=<point>:<n>``).

Writers call :func:`fault_point` at the moments a crash would hurt most (after an array,
before the done marker, after a video); the tests set the environment variable to kill the
process the n-th time a point is reached and check that a rerun gives the same cache. A
no-op unless the variable is set.
"""

from __future__ import annotations

import os
import signal

_FAULT_ENV = "VADPIPE_FAULT_INJECT"
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process the n-th time ``name`` is reached (``VADPIPE_FAULT_INJECT=name:n``)."""
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
