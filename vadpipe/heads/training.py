"""The small training toolkit every head's loop uses (nanoGPT-sized pieces).

* :func:`seeded` -- a seeded torch RNG for a head's initialisation and loop, forked so the
  caller's RNG state is untouched;
* :func:`warmup_cosine` -- linear warm-up, then cosine decay to zero (nanoGPT's ``get_lr``);
* :func:`check_schedule` -- refuse a schedule too short to train (Adam moves a weight by
  about the learning rate per step, so the sum of a schedule's rates bounds how far any
  weight can travel);
* :func:`decay_groups` -- AdamW parameter groups: weight decay on matrices only (nanoGPT),
  or on every tensor where a paper says so, with named groups of their own (S4D's step and
  decay parameters);
* :func:`backward_in_chunks` (with :func:`detached_rows`, :func:`backward_rows`) -- a loss
  over a batch of independent rows (prompts, clips) and its backward, holding the graph of a
  few rows at a time: a CPU trades one more forward for activations it has no room for;
* :func:`l2_normalize` -- rows to unit length (:mod:`vadpipe.vectors`, which stage 1 uses too);
* :func:`module_state` / :func:`load_module_state` -- a module's ``state_dict`` as the
  arrays a run folder saves, and back (strict: a missing or extra tensor is an error).

Each loop stays visible in its head; these make the differences between loops deliberate.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import numpy as np

from vadpipe.vectors import l2_normalize  # noqa: F401  (part of the toolkit)


@contextmanager
def seeded(seed: int):
    """Run the block with torch's CPU RNG seeded to ``seed``, restoring the caller's state after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def warmup_cosine(step: int, total: int, warmup: int, base: float = 1.0) -> float:
    """The learning rate at ``step`` of ``total``: ``base * (step + 1) / warmup`` over the first
    ``warmup`` steps, then a cosine from ``base`` down to 0 over the rest (``base=1``: the factor)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


MIN_LR_SUM = 1e-3  # the least total Adam travel per weight a schedule must allow (see check_schedule)


def check_schedule(head: str, lrs, what: str, hint: str) -> None:
    """Refuse to return an untrained model: with Adam(W) a weight moves by about the
    learning rate per step, so ``sum(lrs)`` bounds how far any weight can travel. Below
    :data:`MIN_LR_SUM` (1e-3; the authors' UCF-Crime schedule of AnomalyCLIP allows 6.5e-3)
    the result would be little more than the initialisation, so this raises with ``what``
    (the schedule in words) and ``hint`` (what to change)."""
    total = float(sum(lrs))
    if total < MIN_LR_SUM:
        from vadpipe.errors import VadpipeError

        raise VadpipeError(
            f"{head}: {what} lets a weight move by at most {total:.1e} (sum of the learning rates; "
            f"at least {MIN_LR_SUM:g} is needed to train): {hint}"
        )


def decay_groups(named_parameters, lr: float, weight_decay: float, decay_all: bool = False,
                 own: tuple[tuple[Callable[[str], bool], dict], ...] = ()) -> list[dict]:
    """AdamW groups of the trainable parameters.

    ``own``: ``(takes(name), settings)`` pairs; a parameter whose name ``takes`` goes to a
    group of its own with ``settings`` (e.g. ``{"lr": 1e-3, "weight_decay": 0.0}``), first.
    The rest: one group decayed by ``weight_decay`` -- matrices only (``dim >= 2``, nanoGPT's
    rule: no decay on biases, norms and scales), or every tensor with ``decay_all`` -- and
    one undecayed group.
    """
    special: list[list] = [[] for _ in own]
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        for i, (takes, _) in enumerate(own):
            if takes(name):
                special[i].append(p)
                break
        else:
            (decay if decay_all or p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": params, **settings} for params, (_, settings) in zip(special, own)]
    groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay})
    if not decay_all:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


def row_chunks(n: int, chunk: int, device=None):
    """Index tensors of the rows ``0..n-1`` in runs of ``chunk``."""
    import torch

    return [torch.arange(i, min(i + chunk, n), device=device) for i in range(0, n, chunk)]


def detached_rows(forward: Callable, n: int, chunk: int):
    """``forward``'s rows computed ``chunk`` at a time without a graph, as a leaf that requires
    grad: what a loss backpropagates to before :func:`backward_rows` takes it through ``forward``."""
    import torch

    with torch.no_grad():
        out = torch.cat([forward(rows) for rows in row_chunks(n, chunk)])
    return out.requires_grad_(True)


def backward_rows(forward: Callable, n: int, grad, chunk: int) -> None:
    """Backpropagate ``grad`` (the gradient of a loss with respect to ``forward``'s ``n`` rows)
    through ``forward``, ``chunk`` rows at a time: each run recomputed with a graph."""
    for rows in row_chunks(n, chunk, grad.device):
        forward(rows).backward(grad[rows])


def backward_in_chunks(forward: Callable, n: int, loss_of: Callable, chunk: int | None):
    """``loss_of(forward(None))`` and its backward, holding ``forward``'s graph for ``chunk``
    of its ``n`` rows at a time (``None``: all at once). Returns the (detached) loss.

    ``forward(rows)`` computes the rows ``rows`` (an index tensor; ``None``: all of them), each
    row independent of the others (a prompt's sequence, a clip). The rows are computed first
    without a graph; the loss backpropagates to them (and to whatever else it reads), then each
    chunk runs again with a graph and takes its rows of that gradient: the gradients are the
    whole batch's to float rounding, for one more forward, while the activations held at once
    are a chunk's."""
    if chunk is None or chunk >= n:
        loss = loss_of(forward(None))
        loss.backward()
        return loss.detach()
    out = detached_rows(forward, n, chunk)
    loss = loss_of(out)
    loss.backward()
    if out.grad is not None:
        backward_rows(forward, n, out.grad, chunk)
    return loss.detach()


def module_state(module) -> dict[str, np.ndarray]:
    """A module's ``state_dict`` as CPU numpy arrays, under the module's own names."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_module_state(module, state: dict[str, np.ndarray]):
    """Load arrays saved by :func:`module_state` into ``module`` (strict); returns the module."""
    import torch

    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return module
