"""AnomalyCLIP's training: clip layouts, the learning-rate schedule, eq. 2 and the loop (eq. 14)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vadpipe.errors import VadpipeError
from vadpipe.heads.anomalyclip.config import AnomalyClipConfig
from vadpipe.heads.anomalyclip.losses import anomalyclip_loss, keep_mask
from vadpipe.heads.training import backward_in_chunks, check_schedule, decay_groups, warmup_cosine

CPU_CLIP_CHUNK = 8  # clip_chunk='auto' on a CPU (config.py)


def training_clip_indices(num_frames: int, num_segments: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices ``int64[S, F]`` of one training clip, as the authors' dataset draws them
    (``feature_dataset.py``): the video, loop-padded to L = max(T, S*F) frames, gives S
    blocks of ``dist = (L - F + 1) // S`` frames; segment i starts at ``i * dist`` plus a
    uniform offset in ``[0, dist - F + 1]`` and takes F consecutive frames; indices wrap
    around the video."""
    if num_frames < 1:
        raise VadpipeError("anomalyclip: a training video has no sampled frames")
    length = max(num_frames, num_segments * frames)
    dist = (length - frames + 1) // num_segments
    starts = np.arange(num_segments) * dist + rng.integers(0, max(dist - frames + 2, 1), size=num_segments)
    return (starts[:, None] + np.arange(frames)[None, :]) % num_frames


def inference_clip_indices(num_frames: int, num_segments: int, frames: int) -> np.ndarray:
    """Frame indices ``int64[J, S, F]`` of the J inference passes over a whole video.

    The video is loop-padded to J*S*F frames and cut into S blocks of J*F frames; pass j
    takes the j-th run of F frames of each block. Flattening ``indices.transpose(1, 0, 2)``
    gives 0, 1, ..., J*S*F - 1 (mod T): every frame in order, the padding after it.
    """
    passes = max(1, math.ceil(num_frames / (num_segments * frames)))
    idx = np.arange(passes * num_segments * frames) % max(num_frames, 1)
    return idx.reshape(num_segments, passes, frames).transpose(1, 0, 2)


def lr_at(step: int, total: int, base_lr: float, warmup_fraction: float) -> float:
    """``schedule="step"``: linear warm-up over the first ``warmup_fraction`` of the steps,
    then cosine to zero, per optimiser step."""
    return warmup_cosine(step, total, int(round(warmup_fraction * total)), base_lr)


def epoch_lr(epoch: int, epochs: int, warmup_epochs: int, base_lr: float) -> float:
    """``schedule="epoch"``: the authors' ``WarmupCosineAnnealingLR`` (warm-up from 0, no
    final factor) as Lightning steps it, once per epoch: epoch ``e`` trains at ``b * e / W``
    while ``e < W`` (so epoch 0 at lr 0), then at ``b * (cos(pi * (e - W) / (T - W)) + 1) / 2``."""
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    progress = min((epoch - warmup_epochs) / max(1, epochs - warmup_epochs), 1.0)
    return base_lr * (math.cos(math.pi * progress) + 1) / 2


def steps_per_epoch(num_anomalous: int, num_normal: int, batch_size: int) -> int:
    """Two loaders of B/2 videos with ``drop_last`` and Lightning's max-size cycle, as the
    authors' datamodule: ``max(#A, #N) // (B/2)`` steps (at least one: a set smaller than B/2
    fills its half of the batch by cycling)."""
    return max(1, max(num_anomalous, num_normal) // (batch_size // 2))


def learning_rates(cfg: AnomalyClipConfig, per_epoch: int) -> list[float]:
    """The learning rate of every optimiser step."""
    total = cfg.steps or cfg.epochs * per_epoch
    if cfg.schedule == "step":
        return [lr_at(step, total, cfg.lr, cfg.warmup_fraction) for step in range(total)]
    epochs = math.ceil(total / per_epoch)
    return [epoch_lr(step // per_epoch, epochs, cfg.warmup_epochs, cfg.lr) for step in range(total)]


def directions_from_text(text_features: torch.Tensor, prototype: torch.Tensor, geometry: str = "raw") -> torch.Tensor:
    """Eq. 2: d_c = E_T - m on the text tower's raw output (``raw``, the authors' code), or
    d_c = E_T / ||E_T|| - m (``unit``: frames and text on the unit sphere, vadpipe 0.2).
    (C E), (E) -> (C E); the selector uses d_c / ||d_c||."""
    text = text_features if geometry == "raw" else F.normalize(text_features, dim=-1)
    return text - prototype


def clip_chunk(cfg: AnomalyClipConfig, device: str) -> int | None:
    """The clips a training step backpropagates at once (``None``: the whole batch)."""
    if cfg.clip_chunk == "auto":
        return CPU_CLIP_CHUNK if torch.device(device).type == "cpu" else None
    return int(cfg.clip_chunk) or None


def training_step(net, prompts, feats, labels, keep, cfg: AnomalyClipConfig, chunk: int | None) -> dict:
    """Eq. 14 on one batch and its backward (gradients accumulated, no optimiser step); returns
    the loss terms. ``feats`` ``(B S F D)`` is recentred in place (x = f - m). The selector (its
    batch norm couples the batch) runs once on the whole batch; the temporal model
    backpropagates ``chunk`` clips at a time (``None``: at once;
    :func:`~vadpipe.heads.training.backward_in_chunks`). Both then take their gradient
    through one backward of the selector and the prompts."""
    directions = directions_from_text(prompts(), net.prototype, cfg.geometry)  # (C D)
    sel, inp = net.select(feats.sub_(net.prototype), directions, centred=True)  # (B S F C), (B S F D')
    sel_leaf = sel.detach().requires_grad_(sel.requires_grad)
    inp_leaf = inp.detach().requires_grad_(inp.requires_grad)  # concat_selector: the input holds S(x)
    terms = {}

    def temporal(rows):  # (b S F) logits of the clips ``rows`` (None: all)
        return net.temporal(inp_leaf if rows is None else inp_leaf[rows])

    def loss_of(logit):
        terms.update(anomalyclip_loss(sel_leaf, logit, labels, keep, cfg.top_k, cfg.lambda_sparsity,
                                      cfg.lambda_smoothness, cfg.losses))
        return terms["total"]

    backward_in_chunks(temporal, len(feats), loss_of, chunk)
    pairs = [(t, leaf.grad) for t, leaf in ((sel, sel_leaf), (inp, inp_leaf)) if leaf.grad is not None]
    if pairs:
        torch.autograd.backward(*zip(*pairs))
    return terms


def train_anomalyclip(net, prompts, anomalous: list, labels: list[int], normal: list,
                      cfg: AnomalyClipConfig, device: str, rng: np.random.Generator) -> list[dict]:
    """Optimise ``net`` and the prompt learner ``prompts`` in place (eq. 14).

    ``anomalous`` / ``normal``: per-video arrays (T D); ``labels``: class index of each
    anomalous video. Refuses a schedule too short to train (:func:`check_schedule`). Returns
    the loss terms of every step (floats).
    """
    half = cfg.batch_size // 2
    per_epoch = steps_per_epoch(len(anomalous), len(normal), cfg.batch_size)
    lrs = learning_rates(cfg, per_epoch)
    check_schedule(
        "anomalyclip", lrs,
        f"{len(lrs)} steps ({per_epoch} per epoch: {len(anomalous)} anomalous / {len(normal)} normal videos, "
        f"batch {cfg.batch_size}) at lr <= {cfg.lr:g}",
        "the papers' schedules assume hundreds of training videos; raise lr (e.g. --param lr=1e-3) or "
        "epochs, or lower batch_size",
    )
    # weight decay on every trained tensor, as the authors' AdamW groups (no exclusions)
    named = [*net.named_parameters(), *(("prompt." + n, p) for n, p in prompts.named_parameters())]
    opt = torch.optim.AdamW(
        decay_groups(named, cfg.lr, cfg.weight_decay, decay_all=True), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
    )
    S, F_ = cfg.num_segments, cfg.frames_per_segment
    chunk = clip_chunk(cfg, device)
    labels_arr = np.asarray(labels, dtype=np.int64)
    net.train()
    prompts.train()
    history: list[dict] = []
    order_a = order_n = None
    for step, lr in enumerate(lrs):
        pos = step % per_epoch
        if pos == 0:  # a new epoch: reshuffle both sets
            order_a, order_n = rng.permutation(len(anomalous)), rng.permutation(len(normal))
        a_idx = order_a[(pos * half + np.arange(half)) % len(anomalous)]
        n_idx = order_n[(pos * half + np.arange(half)) % len(normal)]
        videos = [anomalous[i] for i in a_idx] + [normal[i] for i in n_idx]
        clips = np.stack([v[training_clip_indices(len(v), S, F_, rng)] for v in videos])  # (B S F D)
        feats = torch.from_numpy(clips).to(device=device, dtype=torch.float32)  # (B S F D), recentred in place
        del videos, clips  # (float16 rows: the float32 batch is a copy)
        batch_labels = torch.from_numpy(np.concatenate([labels_arr[a_idx], np.full(half, -1)])).to(device)  # (B)
        keep = keep_mask(torch.from_numpy(rng.random((2 * half, S))), cfg.mask_ratio, cfg.top_k).to(device)  # (B S)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        terms = training_step(net, prompts, feats, batch_labels, keep, cfg, chunk)
        opt.step()
        history.append({"lr": lr, **{k: float(v.detach()) for k, v in terms.items()}})
    net.eval()
    prompts.eval()
    with torch.no_grad():
        net.directions.copy_(directions_from_text(prompts(), net.prototype, cfg.geometry))
    return history
