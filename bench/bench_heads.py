"""Benchmark: fit time, scoring time and peak memory of every head on benchmark-sized caches.

Caches (:mod:`synthetic_cache`, built once per dataset and scale under ``--dir``, reused):
``ucf`` -- UCF-Crime-sized, 1610 training videos (800 normal + 810 anomalous in 13 classes,
video labels only), 290 test videos, ~440 sampled frames each, 512-d (``ViT-B-32:random``);
``sht`` -- ShanghaiTech one-class-sized, 330 normal training videos (~832 samples: every
frame) and 107 test videos (~401). No captioner group: caption heads run without captions.

Each head run -- ``get_head(name, device=..., **params).fit(cache, manifest)`` on the training
split, then ``score_videos`` on every test video -- is a child process of its own (a hidden
``_child`` sub-command), so its peak RSS (``ru_maxrss``) is that head's alone; ``--timeout``
stops a child that runs past it (reported as "> N s"). The child times, inside ``fit``:

* ``text``: the text tower's work that does not depend on the data -- building the cache's
  open_clip model (``text_encoder_for``), embedding prompts (``embed_prompts`` /
  ``embed_groups``), building a CoOp prompt learner;
* ``train``: the head's optimisation loop (``learn_prompt_context`` of kmeans, ``train_s3m``,
  clipassist's ``fit_adam``, ``train_anomalyclip``), with its number of steps (and for
  clipassist the duration and batch size of each step);
* ``data``: the rest of ``fit`` (reading the cache, pooling, prototypes, k-means, ...).

Variants: every registered head with its default parameters, plus ``kmeans-learned``
(``learn_prompts=True``: Gao's learned prompt context; ``kmeans`` is the default, fixed
prompts). ``s3m`` has no captions here, so ``input="auto"`` reads the image embeddings
(S3M's temporal score only; SPA's static score is 0). ``anomalyclip`` needs anomalous
training videos: it is skipped on the one-class cache. A head that fails is reported with
its error, not a crash.

**Capped schedules.** Heads whose step costs seconds on a CPU run at most ``--max-steps``
optimiser steps (default 3; 0 = the head's own schedule) and are extrapolated per step:
``kmeans-learned`` (``prompt_steps``), ``clipassist`` and ``clipassist-frame`` (``steps``,
lr 1e-3 so the refusal of a schedule too short to train lets them run -- a step costs the
same at any lr), ``anomalyclip`` (``steps``, ``warmup_epochs=0``, lr 1e-3); ``s3m`` runs its own
schedule (20 epochs cut at ``max_steps`` = 1000 steps of 64 windows).

**Extrapolation to full size** (``r`` = full-size / measured training frames the head
reads -- normal videos only for one-class heads --, per head):

* fit = text + data * r + s_step * steps_full, with
  - ``prototype``: no text, no loop: one streamed pass over the normal frames (eq. 1);
  - ``zeroshot``: text only (reads no training data; scoring is all that grows);
  - ``kmeans``: text (400 Kinetics prompts) + data (pooling, 400 responses a frame, 5 seeded
    spherical k-means runs: linear in the frames at a fixed number of iterations);
  - ``kmeans-learned``: + ``prompt_steps`` = 200 steps, each 400 prompts forward and backward
    through the text tower on a batch of 128 samples: a cost that does not depend on the data;
  - ``s3m``: 20 epochs of ceil(W / 64) steps, W = normal frames - normal videos (one window per
    sample s >= 1), cut at ``max_steps`` (1000), each step a fixed cost (batch 64 windows);
    s_step = train / steps measured (its own schedule runs: already at the cut from scale ~0.01);
  - ``clipassist``, ``clipassist-frame``: ``steps`` = 520 optimiser steps whatever the data
    (epochs = ceil(520 / ceil(videos / 64)): 20 epochs of 26 on UCF-Crime, 87 of 6 on
    ShanghaiTech); s_step = the mean duration of the measured steps with a full batch of 64
    videos, or, where none was full, the mean per video times 64 (an upper bound: the text
    tower's share of a step does not grow with the batch);
  - ``anomalyclip``: the paper's schedule, 50 epochs of max(#anomalous, #normal) // 32 steps
    (25 on UCF-Crime: 1250 steps), each a fixed cost (64 clips of 32 x 16 frames);
* score = measured * full-size / measured test frames (every head scores per frame);
* peak RSS = measured + k * (full-size - measured feature bytes); feature bytes = the float16
  embeddings of the training and test videos. k = what the head holds at its peak per feature
  byte, read from its code (``Variant.held``: copies of the normal / all training features):
  prototype, zeroshot 0 (a streamed mean; scoring holds one video); kmeans 1.6 x the normal
  frames (the float32 400 responses, built video by video and normalised in place; 0.4 held
  5.6 x), kmeans-learned the same (0.5.1: the prompt learning holds only the <= 25.6k
  drawn samples, and the responses are streamed after it; 0.5.0 held 3.6 x);
  s3m 2.2 x (the float16 sequences, their float16 concatenation, window indices; 0.5.1 lets
  each sequence go as it is stacked);
  clipassist 1 x its subsampled training videos (<= 256 frames each, float16 as stored since
  0.5.2; 0.5.1 held them in float32, 2 x); anomalyclip 1 x every
  training video on a GPU, none on a CPU (0.5.3: each batch's videos are read from the cache). ``--slope`` measures k instead, from a second child on half the
  videos (every other video of each kind, train and test; shortest schedule): two identical
  runs differ by ~20 MiB here, so that needs a scale where half the features are well above
  that (>= 0.25). The rule reads the head's arrays, not the allocator: at scale 0.05 it put
  0.5.0's kmeans at 2.0 GB, and full size measured 2.7 GB (small freed parts kept as heap,
  a temporary of ``np.linalg.norm``). Where a target is close, measure at ``--scale 1.0``
  (UCF-Crime: the cache takes ~2 min to build and 0.86 GB of disk).

Targets (the issue, UCF-Crime size, 2 CPU cores): prototype, zeroshot, kmeans (fixed
prompts), s3m fit <= 2 min; kmeans-learned, clipassist (and clipassist-frame) fit <= 15
min; every head scores the 290 test videos in <= 10 s; peak RSS <= 2x the feature bytes.
``anomalyclip`` has no fit target: its step is broken down (data, text tower, temporal
model, losses; forward and backward) over ``--anatomy-steps`` extra steps, and a CPU epoch
and the paper's 50 epochs are extrapolated from it.

    python bench/bench_heads.py [--dataset ucf|sht|both] [--scale 0.05] [--heads a,b,c]
        [--device cpu] [--threads N] [--dir DIR] [--max-steps 3] [--timeout 900]
        [--slope] [--profile DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from synthetic_cache import DIM, KEY, SHAPES, ensure_cache, full_size

MIB = 2**20
CAP_LR = 1e-3  # capped schedules: enough for the refusal of too-short schedules; a step costs the same


@dataclass
class Variant:
    name: str
    head: str
    params: dict = field(default_factory=dict)
    reads: str = "all"  # training frames the head reads: "normal" (one-class) or "all" (weak labels)
    loop: str | None = None  # the optimisation loop: kmeans | s3m | clipassist | anomalyclip
    target_fit_s: float | None = None  # the issue's target at UCF-Crime size
    needs_anomalous: bool = False
    note: str = ""
    held: tuple[float, float] = (0.0, 0.0)  # copies of the normal / all training features (float16) held at the peak
    held_cpu: tuple[float, float] | None = None  # the same where a head holds otherwise on a CPU


MAX_FRAMES = 256  # clipassist's max_frames: training videos are subsampled to it


# ``held``: what each head keeps at its peak, read from its code (module docstring, "peak RSS")
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("prototype", "prototype", reads="normal", target_fit_s=120),
    Variant("zeroshot", "zeroshot", reads="none", target_fit_s=120),
    Variant("kmeans", "kmeans", reads="normal", target_fit_s=120, note="fixed prompts (default)", held=(1.6, 0)),
    Variant("kmeans-learned", "kmeans", {"learn_prompts": True}, reads="normal", loop="kmeans",
            target_fit_s=900, note="learn_prompts=True", held=(1.6, 0)),
    Variant("s3m", "s3m", reads="normal", loop="s3m", target_fit_s=120,
            note="no captions: input=auto reads image embeddings (A_s = 0)", held=(2.2, 0)),
    Variant("clipassist", "clipassist", loop="clipassist", target_fit_s=900, held=(0, -1)),
    Variant("clipassist-frame", "clipassist-frame", loop="clipassist", target_fit_s=900, held=(0, -1)),
    Variant("anomalyclip", "anomalyclip", loop="anomalyclip", needs_anomalous=True,
            note="target: per-step breakdown, CPU epoch", held=(0, 1), held_cpu=(0, 0)),
]}


def memory_slope(v: Variant, dataset: str, device: str = "cpu") -> float:
    """k: bytes a head holds at its peak per byte of the dataset's features (training + test,
    float16), from ``held`` (``held_cpu`` on a CPU, where given) and the full-size shares of
    normal and all training frames; clipassist's ``-1`` is its subsampled copy: E[min(T, 256)] /
    E[T] of the training videos."""
    from synthetic_cache import frame_range

    full = full_size(dataset)
    a, b = v.held_cpu if (v.held_cpu is not None and device.startswith("cpu")) else v.held
    if b < 0:
        lo, hi = frame_range(SHAPES[dataset]["frames"][0])
        b = sum(min(t, MAX_FRAMES) for t in range(lo, hi + 1)) / sum(range(lo, hi + 1))
    return (a * full["train_normal_frames"] + b * full["train_frames"]) / (full["train_frames"] + full["test_frames"])


def variants() -> dict[str, Variant]:
    """The table above plus any other registered head (default parameters, fit assumed linear in
    the training frames)."""
    from vadpipe.heads.registry import list_heads

    out = dict(VARIANTS)
    for name in list_heads():
        if not any(v.head == name for v in out.values()):
            out[name] = Variant(name, name, held=(0, 1),
                                note="not in the bench's table: fit linear in training frames, features held once")
    return out


def capped_params(v: Variant, max_steps: int) -> dict:
    """The variant's parameters, with its schedule capped at ``max_steps`` optimiser steps."""
    params = dict(v.params)
    if not max_steps:
        return params
    if v.loop == "kmeans":
        params["prompt_steps"] = max_steps
    elif v.loop == "clipassist":
        params.update(steps=max_steps, lr=CAP_LR)
    elif v.loop == "anomalyclip":
        params.update(steps=max_steps, warmup_epochs=0, lr=CAP_LR)
    return params  # s3m: its own schedule, whose cut (max_steps) bounds it at any size


def full_steps(v: Variant, dataset: str) -> int | None:
    """Optimiser steps of the variant's own schedule on the full-size dataset."""
    from vadpipe.heads import get_head

    full = full_size(dataset)
    cfg = get_head(v.head, **v.params).config
    if v.loop == "kmeans":
        return cfg.prompt_steps
    if v.loop == "s3m":
        windows = full["train_normal_frames"] - full["train_normal_videos"]
        steps = cfg.epochs * math.ceil(windows / cfg.batch_size)
        return steps if cfg.max_steps is None else min(steps, cfg.max_steps)
    if v.loop == "clipassist":
        from vadpipe.heads.clipassist.common import schedule

        epochs, per_epoch = schedule(cfg, full["train_videos"])
        return epochs * per_epoch
    if v.loop == "anomalyclip":
        from vadpipe.heads.anomalyclip.train import steps_per_epoch

        per_epoch = steps_per_epoch(full["anomalous_videos"], full["train_normal_videos"], cfg.batch_size)
        return cfg.steps or cfg.epochs * per_epoch
    return None


def counting(loop, steps: dict):
    """``loop`` (a training function returning one record per optimiser step) that also adds
    its number of steps to ``steps["n"]``."""

    def counted(*a, **k):
        history = loop(*a, **k)
        steps["n"] += len(history)
        return history

    return counted


# ---------------------------------------------------------------------------------- child
class Sections:
    """Exclusive timers: time inside a nested section counts for the inner one only."""

    def __init__(self, sync=None):
        self.total: dict[str, float] = {}
        self.stack: list[list] = []
        self.sync = sync or (lambda: None)

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            self.sync()
            self.stack.append([time.perf_counter(), 0.0])
            try:
                return fn(*a, **k)
            finally:
                self.sync()
                t0, inner = self.stack.pop()
                elapsed = time.perf_counter() - t0
                self.total[name] = self.total.get(name, 0.0) + elapsed - inner
                if self.stack:
                    self.stack[-1][1] += elapsed

        timed.__wrapped__ = fn
        return timed


def peak_rss_mib() -> float:
    """Peak RSS of this process's address space (``VmHWM``). Not ``ru_maxrss``: Linux keeps that
    across ``execve``, so a child started by a parent holding torch would start at the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(spec: dict) -> dict:
    """One head: fit on the training split, score every test video; the measurements."""
    import logging

    cuda = spec["device"].startswith("cuda")
    if cuda:  # heads that never touch torch (prototype) are not charged for importing it
        import torch

        sync = torch.cuda.synchronize
    else:
        sync = None
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(f"{record.name}: {record.getMessage()}")

    logging.getLogger().addHandler(Collect())

    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import Manifest, load_manifest
    from vadpipe.heads import get_head
    from vadpipe.heads.registry import get_head_class

    root = Path(spec["root"])
    cache, manifest = FeatureCache(root / "cache.zarr"), load_manifest(root / "manifest.csv")
    if spec.get("half"):  # every other video of each (split, normal) group: the memory slope's second point
        seen: dict = {}
        keep = []
        for e in manifest:
            group = (e.split, e.is_normal)
            seen[group] = seen.get(group, 0) + 1
            if seen[group] % 2 == 1:
                keep.append(e)
        manifest = Manifest(keep, meta=manifest.meta)
    frames = {e.video_id: cache.array_info(KEY, e.video_id)["emb"][0][0] for e in manifest}  # metadata only
    train = manifest.select(split="train")
    test_ids = manifest.ids("test")
    counts = {
        "train_videos": len(train),
        "train_frames": sum(frames[e.video_id] for e in train),
        "train_normal_frames": sum(frames[e.video_id] for e in train if e.is_normal),
        "test_videos": len(test_ids),
        "test_frames": sum(frames[v] for v in test_ids),
    }
    counts["feature_bytes"] = (counts["train_frames"] + counts["test_frames"]) * DIM * 2

    sec = Sections(sync)
    head_cls = get_head_class(spec["head"])  # imports the head's module (and torch if it uses it)
    import vadpipe.heads.text as text_mod  # imports no torch

    for name in ("text_encoder_for", "embed_prompts", "embed_groups"):
        setattr(text_mod, name, sec.wrap("text", getattr(text_mod, name)))
    if spec["loop"] or "torch" in sys.modules:  # the prompt learner imports torch: a head without it never pays
        from vadpipe.heads.prompt_learner import PromptLearner

        PromptLearner.__init__ = sec.wrap("text", PromptLearner.__init__)
    steps = {"n": 0, "durations": [], "batches": []}
    loop = spec["loop"]
    if loop == "kmeans":
        import vadpipe.heads.kmeans as mod

        original = mod.learn_prompt_context

        def learn_prompt_context(learner, feats, pseudo, batches, cfg, device="cpu"):
            steps["n"] += len(batches)
            return original(learner, feats, pseudo, batches, cfg, device)

        mod.learn_prompt_context = sec.wrap("train", learn_prompt_context)
    elif loop == "s3m":
        import vadpipe.heads.s3m as mod

        mod.train_s3m = sec.wrap("train", counting(mod.train_s3m, steps))  # one loss per step
    elif loop == "clipassist":
        import vadpipe.heads.clipassist.frame as frame_mod
        import vadpipe.heads.clipassist.video as video_mod

        original = video_mod.fit_adam

        def fit_adam(params, batch_loss, num_videos, cfg, generator):
            marks = []

            def timed_batch(idx):  # a step runs from one batch_loss call to the next
                if sync:
                    sync()
                marks.append((time.perf_counter(), len(idx)))
                return batch_loss(idx)

            out = original(params, timed_batch, num_videos, cfg, generator)
            if sync:
                sync()
            end = time.perf_counter()
            for (t, b), t_next in zip(marks, [m[0] for m in marks[1:]] + [end]):
                steps["durations"].append(t_next - t)
                steps["batches"].append(b)
            steps["n"] += len(marks)
            return out

        video_mod.fit_adam = frame_mod.fit_adam = sec.wrap("train", fit_adam)
    elif loop == "anomalyclip":
        import vadpipe.heads.anomalyclip.head as mod

        mod.train_anomalyclip = sec.wrap("train", counting(mod.train_anomalyclip, steps))  # one entry per step

    rss_start = peak_rss_mib()
    head = head_cls(device=spec["device"], **spec["params"])
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    head.fit(cache, manifest)
    if sync:
        sync()
    fit_s = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    rss_fit = peak_rss_mib()
    t0 = time.perf_counter()
    scores = head.score_videos(cache, test_ids)
    score_s = time.perf_counter() - t0
    assert sum(len(s.score) for s in scores.values()) == counts["test_frames"]
    del scores
    rss = peak_rss_mib()
    text_s, train_s = sec.total.get("text", 0.0), sec.total.get("train", 0.0)
    out = {
        **counts,
        "fit_s": fit_s, "score_s": score_s, "text_s": text_s, "train_s": train_s,
        "data_s": fit_s - text_s - train_s, "steps": steps["n"],
        "step_durations": steps["durations"], "step_batches": steps["batches"],
        "peak_rss_mib": rss, "peak_rss_fit_mib": rss_fit, "rss_before_fit_mib": rss_start,
        "threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
        "torch_imported": "torch" in sys.modules, "warnings": warnings[:10], "device": spec["device"],
    }
    if cuda:
        out["cuda_peak_mib"] = sys.modules["torch"].cuda.max_memory_allocated() / MIB
    if spec["head"] == "s3m":
        out["input"] = getattr(head, "input_", None)
    if spec["head"] == "anomalyclip" and spec.get("anatomy_steps"):
        out["anatomy"] = anomalyclip_anatomy(head, cache, manifest, spec["anatomy_steps"], sync)
    return out


def anomalyclip_anatomy(head, cache, manifest, n_steps: int, sync=None) -> dict:
    """Mean seconds of each part of an ``anomalyclip`` training step, over ``n_steps`` steps of
    the library's own pieces, cut where the autograd graph joins the parts: data (clip gather,
    to tensor, mask), text tower forward (CoOp prompts -> directions) and backward, temporal
    model forward (selector + axial transformer) and backward, losses forward and backward, the
    optimizer step. The first step warms up and is not counted. The temporal model runs the
    whole batch at once (``clip_chunk=0``); the CPU default (8 clips at a time) adds one more
    forward of it to a step."""
    import numpy as np
    import torch

    from vadpipe.heads.anomalyclip.losses import anomalyclip_loss, keep_mask
    from vadpipe.heads.anomalyclip.train import directions_from_text, training_clip_indices
    from vadpipe.heads.prompt_learner import PromptLearner
    from vadpipe.heads.text import text_encoder_for
    from vadpipe.heads.training import decay_groups

    sync = sync or (lambda: None)
    cfg, net = head.config, head.net_
    device = next(net.parameters()).device
    data = head.training_set(cache, manifest)
    index = {c: i for i, c in enumerate(head.class_names_)}
    normal = [v.emb for e, v in zip(data.entries, data.videos) if e.is_normal]
    anomalous = [(v.emb, index[e.label]) for e, v in zip(data.entries, data.videos) if not e.is_normal]
    encoder = text_encoder_for(cache, head.encoder)
    prompts = PromptLearner(encoder.model, encoder.tokenizer, head.class_texts_, n_ctx=cfg.n_ctx,
                            shared_context=cfg.shared_context, init_std=cfg.ctx_init_std,
                            train_projection=cfg.finetune_text_projection).to(device).train()
    net.train()
    named = [*net.named_parameters(), *(("prompt." + n, p) for n, p in prompts.named_parameters())]
    opt = torch.optim.AdamW(decay_groups(named, 1e-6, cfg.weight_decay, decay_all=True))
    rng = np.random.default_rng(0)
    half, S, F_ = cfg.batch_size // 2, cfg.num_segments, cfg.frames_per_segment
    parts = ["data", "text_fwd", "temporal_fwd", "losses_fwd", "losses_bwd", "temporal_bwd", "text_bwd", "optimizer"]
    total = dict.fromkeys(parts, 0.0)
    for step in range(n_steps + 1):
        marks = []

        def mark():
            sync()
            marks.append(time.perf_counter())

        mark()
        a_idx = rng.integers(len(anomalous), size=half)
        n_idx = rng.integers(len(normal), size=half)
        videos = [anomalous[i][0] for i in a_idx] + [normal[i] for i in n_idx]
        clips = np.stack([v[training_clip_indices(len(v), S, F_, rng)] for v in videos])  # (B S F D)
        feats = torch.from_numpy(clips).to(device=device, dtype=torch.float32)
        labels = torch.from_numpy(np.concatenate([[anomalous[i][1] for i in a_idx], np.full(half, -1)])).to(device)
        keep = keep_mask(torch.from_numpy(rng.random((2 * half, S))), cfg.mask_ratio, cfg.top_k).to(device)
        mark()
        directions = directions_from_text(prompts(), net.prototype, cfg.geometry)  # (C D)
        d_leaf = directions.detach().requires_grad_()
        mark()
        sel, logit = net(feats, d_leaf)
        sel_leaf, logit_leaf = sel.detach().requires_grad_(), logit.detach().requires_grad_()
        mark()
        terms = anomalyclip_loss(sel_leaf, logit_leaf, labels, keep, cfg.top_k, cfg.lambda_sparsity,
                                 cfg.lambda_smoothness, cfg.losses)
        mark()
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        mark()
        torch.autograd.backward([sel, logit], [sel_leaf.grad, logit_leaf.grad])
        mark()
        directions.backward(d_leaf.grad)
        mark()
        opt.step()
        mark()
        if step:  # the first step warms up
            for name, a, b in zip(parts, marks, marks[1:]):
                total[name] += b - a
    net.eval()
    mean = {k: v / n_steps for k, v in total.items()}
    return {"steps": n_steps, "seconds": mean, "step_s": sum(mean.values()),
            "batch": f"{cfg.batch_size} clips x {S} segments x {F_} frames x {DIM}-d, {len(head.class_texts_)} classes"}


# ---------------------------------------------------------------------------------- parent
def run_child(spec: dict, timeout: float) -> dict:
    """Run ``spec`` in a child process; its result, or ``{"error": ...}`` / ``{"timeout": s}``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path)}))
        t0, load = time.perf_counter(), os.getloadavg()[0]
        try:
            n = str(spec["threads"])  # torch's intra-op threads (read at its import) and numpy's BLAS
            env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_child", str(spec_path)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out_path.exists():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"error": lines[-1] if lines else f"exit status {proc.returncode}", "stderr_tail": lines[-15:]}
        # the 1-minute load average before and after: other work on the machine slows a head down
        return {**json.loads(out_path.read_text()), "wall_s": wall, "load": [load, os.getloadavg()[0]]}


def step_seconds(v: Variant, r: dict) -> tuple[float | None, str]:
    """Seconds of one full-size step of the variant's loop, and how it was obtained."""
    if not r.get("steps"):
        return None, ""
    if v.loop == "clipassist":
        from vadpipe.heads import get_head

        batch = get_head(v.head).config.batch_size
        full = [d for d, b in zip(r["step_durations"], r["step_batches"]) if b == batch]
        if full:
            return sum(full) / len(full), f"mean of {len(full)} full-batch steps"
        per_video = sum(r["step_durations"]) / sum(r["step_batches"])
        return per_video * batch, f"no full batch measured: per video x {batch} (upper bound)"
    return r["train_s"] / r["steps"], f"mean of {r['steps']} steps"


def extrapolate(v: Variant, dataset: str, r: dict, slope: float | None) -> dict:
    """Full-size fit, score and peak RSS from one child's measurements (module docstring)."""
    full = full_size(dataset)
    ratio = {"normal": full["train_normal_frames"] / max(r["train_normal_frames"], 1),
             "all": full["train_frames"] / max(r["train_frames"], 1), "none": 1.0}[v.reads]
    s_step, how = step_seconds(v, r)
    n_full = full_steps(v, dataset) if v.loop else None
    train_full = s_step * n_full if (s_step is not None and n_full is not None) else 0.0
    fit = r["text_s"] + r["data_s"] * ratio + train_full
    k = memory_slope(v, dataset, r.get("device", "cpu")) if slope is None else max(slope, 0.0)
    rss = r["peak_rss_mib"] + k * (full["feature_bytes"] - r["feature_bytes"]) / MIB
    return {
        "fit_s": fit, "score_s": r["score_s"] * full["test_frames"] / max(r["test_frames"], 1),
        "peak_rss_mib": rss, "feature_mib": full["feature_bytes"] / MIB, "rss_ratio": rss * MIB / full["feature_bytes"],
        "frames_ratio": ratio, "step_s": s_step, "step_rule": how, "steps_full": n_full, "train_full_s": train_full,
        "rss_slope": slope, "test_videos": full["test_videos"], "text_s": r["text_s"],
    }


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 3600:
        return f"{x:,.0f} ({x / 3600:.1f} h)"
    if x >= 120:
        return f"{x:,.0f} ({x / 60:.1f} min)"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def prose_s(x: float) -> str:
    return f"{x / 3600:.1f} h" if x >= 3600 else f"{x / 60:.1f} min" if x >= 120 else f"{x:.0f} s"


def verdict(v: Variant, e: dict, dataset: str) -> str:
    if dataset != "ucf":
        return "–"
    checks = []
    if v.target_fit_s is not None:
        checks.append(("fit", e["fit_s"] <= v.target_fit_s))
    checks.append(("score", e["score_s"] <= 10))
    checks.append(("RSS", e["rss_ratio"] <= 2))
    failed = [name for name, ok in checks if not ok]
    return "yes" if not failed else "no (" + ", ".join(failed) + ")"


def report(dataset: str, info: dict, rows: list[tuple[Variant, dict, dict | None]], args) -> str:
    name = SHAPES[dataset]["name"]
    lines = [f"### {name}, scale {args.scale:g}: {info['train_videos']} training videos "
             f"({info['train_frames']:,} samples), {info['test_videos']} test videos "
             f"({info['test_frames']:,} samples), "
             f"{info['feature_bytes'] / MIB:.1f} MiB of features; {args.device}, {args.threads} threads",
             "",
             "Measured:",
             "",
             "| head | fit s | of which text / data / train s | steps | score s "
             f"({info['test_videos']} test videos) | peak RSS MiB | feature MiB | RSS / feature | load | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v, r, _ in rows:
        if "skipped" in r:
            lines.append(f"| {v.name} | skipped | | | | | | | | {r['skipped']} |")
        elif "timeout" in r:
            lines.append(f"| {v.name} | > {r['timeout']:.0f} s (fit + score) | | | | | | | | timed out |")
        elif "error" in r:
            lines.append(f"| {v.name} | error | | | | | | | | {r['error'][:200]} |")
        else:
            note = "; ".join(x for x in [v.note, *(w[:120] for w in r.get("warnings", [])[:1])] if x)
            lines.append(
                f"| {v.name} | {fmt_s(r['fit_s'])} | {r['text_s']:.1f} / {r['data_s']:.1f} / {r['train_s']:.1f} | "
                f"{r['steps'] or '–'} | {fmt_s(r['score_s'])} | {r['peak_rss_mib']:,.0f} | "
                f"{r['feature_bytes'] / MIB:.1f} | {r['peak_rss_mib'] * MIB / r['feature_bytes']:.1f} | "
                f"{r['load'][0]:.1f}–{r['load'][1]:.1f} | {note} |")
    full = full_size(dataset)
    lines += ["", f"Extrapolated to full size ({full['train_videos']} training videos, {full['test_videos']} test "
                  f"videos, {full['feature_bytes'] / MIB:,.0f} MiB of features; rules in the module docstring):", "",
              f"| head | fit s | score s ({full['test_videos']} test videos) | peak RSS MiB | feature MiB | "
              "RSS / feature | memory slope k | s / step x steps | meets the targets |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v, r, e in rows:
        if e is None:
            why = "–" if "skipped" in r else "not measured"
            lines.append(f"| {v.name} | – | – | – | – | – | – | – | {why} |")
            continue
        steps = (f"{e['step_s']:.3g} x {e['steps_full']:,}" if e["step_s"] is not None else "–")
        k = (f"{memory_slope(v, dataset, r.get('device', 'cpu')):.2f} (code)" if e["rss_slope"] is None
             else f"{e['rss_slope']:.2f} (measured{', < 0: 0 used' if e['rss_slope'] < 0 else ''})")
        lines.append(f"| {v.name} | {fmt_s(e['fit_s'])} | {fmt_s(e['score_s'])} | {e['peak_rss_mib']:,.0f} | "
                     f"{e['feature_mib']:,.0f} | {e['rss_ratio']:.2f} | {k} | {steps} | {verdict(v, e, dataset)} |")
    for v, r, _ in rows:
        a = r.get("anatomy")
        if not a:
            continue
        e = next(x for w, _, x in rows if w is v)
        s = a["seconds"]
        lines += ["", f"{v.name}: one training step ({a['batch']}), mean of {a['steps']} steps after a warm-up one:",
                  "",
                  "| part | forward s | backward s |", "|---|---|---|",
                  f"| data (clip gather, to tensor, mask) | {s['data']:.2f} | |",
                  f"| text tower (CoOp prompts -> directions) | {s['text_fwd']:.2f} | {s['text_bwd']:.2f} |",
                  f"| temporal model (selector + axial transformer) | {s['temporal_fwd']:.2f} | "
                  f"{s['temporal_bwd']:.2f} |",
                  f"| losses | {s['losses_fwd']:.3f} | {s['losses_bwd']:.3f} |",
                  f"| optimizer step | {s['optimizer']:.3f} | |",
                  f"| **step** | **{a['step_s']:.2f}** | |"]
        if e is not None and e["steps_full"]:
            from vadpipe.heads import get_head
            from vadpipe.heads.anomalyclip.train import steps_per_epoch

            full = full_size(dataset)
            cfg = get_head(v.head, **v.params).config
            per_epoch = steps_per_epoch(full["anomalous_videos"], full["train_normal_videos"], cfg.batch_size)
            lines += ["", f"In fit: {e['step_s']:.2f} s a step ({args.threads} threads). The paper's schedule at full "
                      f"size is {cfg.epochs} epochs of {per_epoch} steps ({e['steps_full']:,} steps): a CPU epoch "
                      f"~{prose_s(e['step_s'] * per_epoch)}, the whole schedule "
                      f"~{prose_s(e['step_s'] * e['steps_full'])} "
                      f"(+ text {e['text_s']:.0f} s and reading the features)."]
    return "\n".join(lines)


def print_profile(path: str, top: int = 15) -> str:
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(path, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        spec = json.loads(Path(sys.argv[2]).read_text())
        Path(spec["out"]).write_text(json.dumps(child(spec)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("ucf", "sht", "both"), default="both")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the datasets' video counts")
    ap.add_argument("--heads", default="", help="comma-separated heads / variants (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads in each child")
    ap.add_argument("--dir", default="/tmp/vadpipe-bench-heads", help="where the synthetic caches are built and kept")
    ap.add_argument("--max-steps", type=int, default=3,
                    help="cap on the optimiser steps of the heads with costly steps (0: their own schedule)")
    ap.add_argument("--anatomy-steps", type=int, default=2, help="anomalyclip: extra steps broken down (0: none)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a head (fit + score) may take")
    ap.add_argument("--slope", action="store_true",
                    help="measure each memory slope on a second run on half the videos (noisy below scale ~0.25)")
    ap.add_argument("--profile", help="folder: cProfile each fit into DATASET-HEAD.prof and print the top 15")
    ap.add_argument("--json", help="write every measurement and extrapolation here")
    args = ap.parse_args()

    table = variants()
    names = [h.strip() for h in args.heads.split(",") if h.strip()] or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown head(s) {', '.join(unknown)} (known: {', '.join(table)})")
    datasets = ["ucf", "sht"] if args.dataset == "both" else [args.dataset]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    results, reports = {}, []
    print(f"load average {os.getloadavg()[0]:.1f}; {args.threads} threads; device {args.device}", file=sys.stderr)
    for dataset in datasets:
        root, info = ensure_cache(args.dir, dataset, args.scale)
        rows = []
        for name in names:
            v = table[name]
            if v.needs_anomalous and not info["anomalous_videos"]:
                r = {"skipped": "needs anomalous training videos (weak supervision); this one-class cache has none"}
                print(f"[{dataset}] {name}: skipped: {r['skipped']}", file=sys.stderr, flush=True)
                rows.append((v, r, None))
                results[f"{dataset}/{name}"] = r
                continue
            spec = {"root": str(root), "head": v.head, "params": capped_params(v, args.max_steps),
                    "loop": v.loop, "device": args.device, "threads": args.threads,
                    "anatomy_steps": args.anatomy_steps if v.head == "anomalyclip" else 0}
            if args.profile:
                spec["profile"] = str(Path(args.profile) / f"{dataset}-{name}.prof")
            print(f"[{dataset}] {name} {spec['params'] or ''} ...", file=sys.stderr, flush=True)
            r = run_child(spec, args.timeout)
            slope = None
            if "fit_s" in r and args.slope:  # the memory slope: half the videos, the shortest schedule
                half = {**spec, "half": True, "anatomy_steps": 0, "profile": None,
                        "params": capped_params(v, 1)}
                h = run_child(half, args.timeout)
                if "fit_s" in h and r["feature_bytes"] > h["feature_bytes"]:
                    slope = (r["peak_rss_mib"] - h["peak_rss_mib"]) * MIB / (r["feature_bytes"] - h["feature_bytes"])
                    r["half"] = {k: h[k] for k in ("peak_rss_mib", "feature_bytes", "fit_s", "score_s")}
            e = extrapolate(v, dataset, r, slope) if "fit_s" in r else None
            rows.append((v, r, e))
            results[f"{dataset}/{name}"] = {**r, "params": spec["params"], "extrapolated": e}
            brief = (f"fit {r['fit_s']:.1f} s, score {r['score_s']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
                     if "fit_s" in r else r.get("error") or f"> {r.get('timeout')} s")
            print(f"[{dataset}] {name}: {brief}", file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        reports.append(report(dataset, info, rows, args))
    print(f"python bench/bench_heads.py {' '.join(sys.argv[1:])}\n")
    print("\n\n".join(reports))
    if args.profile:
        for dataset in datasets:
            for name in names:
                path = Path(args.profile) / f"{dataset}-{name}.prof"
                if path.exists():
                    print(f"\n#### cProfile of {name}.fit on {dataset} (top 15, cumulative)\n")
                    print(print_profile(str(path)))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
