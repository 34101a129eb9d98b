"""AnomalyCLIP's training: clip layouts, the learning-rate schedule, eq. 2 and the loop (eq. 14)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vadpipe.errors import VadpipeError
from vadpipe.heads.anomalyclip.config import AnomalyClipConfig
from vadpipe.heads.anomalyclip.losses import anomalyclip_loss, keep_mask
from vadpipe.heads.training import decay_groups, warmup_cosine


def training_clip_indices(num_frames: int, num_segments: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices ``int64[S, F]`` of one training clip: S blocks, a random start in each,
    F consecutive frames from it; indices wrap around (loop padding for short videos)."""
    if num_frames < 1:
        raise VadpipeError("anomalyclip: a training video has no sampled frames")
    length = max(num_frames, num_segments * frames)
    block = length // num_segments  # >= frames
    starts = np.arange(num_segments) * block + rng.integers(0, block - frames + 1, size=num_segments)
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
    """Linear warm-up over the first ``warmup_fraction`` of the steps, then cosine to zero."""
    return warmup_cosine(step, total, int(round(warmup_fraction * total)), base_lr)


def directions_from_text(text_features: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
    """Eq. 2 on L2-normalised text features: d_c = E_T / ||E_T|| - m. (C E), (E) -> (C E)."""
    return F.normalize(text_features, dim=-1) - prototype


def train_anomalyclip(net, prompts, anomalous: list, labels: list[int], normal: list,
                      cfg: AnomalyClipConfig, device: str, rng: np.random.Generator) -> list[dict]:
    """Optimise ``net`` and the prompt learner ``prompts`` in place (eq. 14).

    ``anomalous`` / ``normal``: per-video float16 arrays (T D); ``labels``: class index of
    each anomalous video. Returns the loss terms of every step (floats).
    """
    half = cfg.batch_size // 2
    steps_per_epoch = math.ceil(max(len(anomalous), len(normal)) / half)
    total = cfg.steps or cfg.epochs * steps_per_epoch
    # weight decay on every trained tensor, as the paper states (App. B), not matrices only
    named = [*net.named_parameters(), *(("prompt." + n, p) for n, p in prompts.named_parameters())]
    opt = torch.optim.AdamW(
        decay_groups(named, cfg.lr, cfg.weight_decay, decay_all=True), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
    )
    S, F_ = cfg.num_segments, cfg.frames_per_segment
    labels_arr = np.asarray(labels, dtype=np.int64)
    net.train()
    prompts.train()
    history: list[dict] = []
    order_a = order_n = None
    for step in range(total):
        pos = step % steps_per_epoch
        if pos == 0:  # a new epoch: reshuffle both sets
            order_a, order_n = rng.permutation(len(anomalous)), rng.permutation(len(normal))
        a_idx = order_a[(pos * half + np.arange(half)) % len(anomalous)]
        n_idx = order_n[(pos * half + np.arange(half)) % len(normal)]
        videos = [anomalous[i] for i in a_idx] + [normal[i] for i in n_idx]
        clips = np.stack([v[training_clip_indices(len(v), S, F_, rng)] for v in videos])  # (B S F D)
        feats = torch.from_numpy(clips).to(device=device, dtype=torch.float32)  # (B S F D)
        batch_labels = torch.from_numpy(np.concatenate([labels_arr[a_idx], np.full(half, -1)])).to(device)  # (B)
        keep = keep_mask(torch.from_numpy(rng.random((2 * half, S))), cfg.mask_ratio, cfg.top_k).to(device)  # (B S)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_fraction)
        directions = directions_from_text(prompts(), net.prototype)  # (C D)
        sel, logit = net(feats, directions)  # (B S F C), (B S F)
        terms = anomalyclip_loss(sel, logit, batch_labels, keep, cfg.top_k, cfg.lambda_sparsity, cfg.lambda_smoothness)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    net.eval()
    prompts.eval()
    with torch.no_grad():
        net.directions.copy_(directions_from_text(prompts(), net.prototype))
    return history
