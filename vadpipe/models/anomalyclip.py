"""``anomalyclip``: weakly-supervised detection and recognition (Zanella et al. 2024).

1. Recentring (eq. 1): m = mean CLIP feature over every sampled frame of the normal training
   videos; each frame becomes x = f - m.
2. Directions (eq. 2): per anomaly class, CoOp context vectors (8, class-specific,
   N(0, 0.02)) are prepended to the class text's token embeddings and run through the frozen
   text tower of the cache's own open_clip model; d_c = E_T([ctx, class]) - m. The final
   text projection is fine-tuned too (the paper's best row, Table 7).
3. Selector (eqs. 3-5): S(x)_c = BN(x . d_c / ||d_c||), batch norm without affine
   parameters; a segment's likelihood is the sum over its frames.
4. Temporal model (eq. 6): an axial transformer over (segments x frames) of the recentred
   features (optionally concatenated with S(x)), embedding 256, 1 layer, sigmoid output p_A.
5. Aggregation: p_N = 1 - p_A, p(c|A) = softmax(S(x)), p_{A,c} = p_A p(c|A).
6. Training (eqs. 7-14): clips of S = 32 segments x F = 16 consecutive sampled frames,
   balanced batches of 64 (32 anomalous + 32 normal videos), MIL top-K / bottom-K (K = 3) by
   the selector on the labelled class after masking 70% of the segments, AdamW
   (0.9, 0.98, eps 1e-8, weight decay 0.2), linear warm-up for 10% of the steps then cosine
   decay to zero. Defaults are the paper's UCF-Crime values: lr 1e-5, 50 epochs, embedding
   256, 1 layer (ShanghaiTech: lr 5e-4, 100 epochs, 2 layers, ``concat_selector=True``;
   XD-Violence: lr 5e-6, 50 epochs, embedding 128).
7. Inference over a whole video of T sampled frames: loop-pad it to J*S*F frames,
   J = ceil(T / (S*F)), split it into S blocks of J*F consecutive frames; pass j feeds the
   j-th run of F frames of every block, so the J passes cover every frame once.

Choices where the paper leaves room (and why):

* Frames are the cache's *sampled* frames: a segment is F consecutive samples.
* Text features are L2-normalised before recentring, d_c = E_T/||E_T|| - m, because the
  cache holds L2-normalised image embeddings: text and frames then live on the same sphere
  (the authors' code recentres raw features of both towers).
* Training clips: a video of T frames (loop-padded to L = max(T, S*F)) is cut into S blocks
  of L // S frames; each segment starts at a uniform random offset within its block. Indices
  wrap around the video (loop padding).
* An epoch is ceil(max(#anomalous, #normal) / (B/2)) steps; each step draws B/2 anomalous and
  B/2 normal videos from per-epoch shuffles (the smaller set cycles). ``steps`` overrides the
  total. The schedule is per step.
* Masking keeps each segment with probability 0.3 but always keeps at least K of them; one
  mask serves top-K and bottom-K. Normal clips rank segments by the selector summed over
  classes (eq. 11 names no class; as in the authors' code).
* L_N^DIR averages over classes as printed (eq. 10); smoothness squares the differences
  (eq. 13, see :mod:`vadpipe.models.anomalyclip_losses`). Per-clip terms are averaged over the
  clips of the batch. Weight decay applies to every trained tensor, as the paper states.
* The axial transformer follows the implementation the authors used (lucidrains'
  ``AxialImageTransformer``; ~10.4 M trainable parameters with the prompts at embedding 256,
  as the paper counts): learned axial position embeddings; per layer pre-norm multi-head
  attention along segments and along frames, then two feed-forward blocks of 3x3
  convolutions over the (segment x frame) grid (4x expansion, LeakyReLU), coupled as a
  two-stream reversible network (y1 = x1 + f(x2), y2 = x2 + g(y1); output the mean of the
  streams); the classifier is LayerNorm + Linear. It runs with ordinary autograd (the
  reversible memory saving is not reproduced). The position embeddings start at
  N(0, 0.02), not lucidrains' N(0, 1), which drowns the projected unit-norm features: in
  vadpipe's planted tests that left the temporal model stuck on video-level cues.
* Training holds the training videos' features in memory (float16).

Saved: prototype, directions (so scoring needs no text model), context vectors, text
projection, the selector's batch-norm running statistics and the temporal model's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.errors import VadpipeError
from vadpipe.models.anomalyclip_losses import anomalyclip_loss, keep_mask
from vadpipe.models.base import Head, Scores, register_head


@dataclass
class AnomalyClipConfig:
    # clips and MIL (paper Sec. 4.1, App. A)
    num_segments: int = 32  # S
    frames_per_segment: int = 16  # F
    top_k: int = 3  # K
    mask_ratio: float = 0.7  # fraction of segments masked before MIL selection
    # directions (CoOp, Table 8; Table 7 best row fine-tunes the text projection)
    n_ctx: int = 8
    shared_context: bool = False
    ctx_init_std: float = 0.02
    finetune_text_projection: bool = True
    class_descriptions: dict[str, str] = field(default_factory=dict)  # class name -> text
    bn_momentum: float = 0.1
    # temporal model (Table 11, App. A)
    embed_dim: int = 256
    depth: int = 1
    heads: int = 8
    concat_selector: bool = False  # feed S(x) to the temporal model too (ShanghaiTech)
    # optimisation (App. B, UCF-Crime)
    batch_size: int = 64  # B: B/2 anomalous + B/2 normal clips
    epochs: int = 50
    steps: int | None = None  # total optimiser steps; overrides epochs when set
    lr: float = 1e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    lambda_sparsity: float = 8e-3  # lambda_1
    lambda_smoothness: float = 8e-4  # lambda_2
    seed: int = 0
    device: str = "auto"  # training and scoring; "auto" = cuda when present
    score_batch_size: int = 16  # inference passes (S x F clips) per forward

    def __post_init__(self):
        positive = ("num_segments", "frames_per_segment", "top_k", "n_ctx", "embed_dim", "depth", "heads",
                    "epochs", "score_batch_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise VadpipeError(f"anomalyclip: {name} must be >= 1, got {getattr(self, name)}")
        if self.top_k > self.num_segments:
            raise VadpipeError(f"anomalyclip: top_k ({self.top_k}) exceeds num_segments ({self.num_segments})")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise VadpipeError(f"anomalyclip: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise VadpipeError(f"anomalyclip: batch_size must be even and >= 2, got {self.batch_size}")
        if self.embed_dim % self.heads:
            raise VadpipeError(f"anomalyclip: embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.steps is not None and self.steps < 1:
            raise VadpipeError(f"anomalyclip: steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise VadpipeError(f"anomalyclip: warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


# ====================================================================== the network
class Selector(nn.Module):
    """Eqs. 3-4: S(x)_c = BN(x . d_c / ||d_c||), batch norm without affine parameters."""

    def __init__(self, num_classes: int, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_classes, affine=False, momentum=momentum)

    def forward(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        unit = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (C D)
        proj = x @ unit.t()  # (... C)
        return self.bn(proj.reshape(-1, proj.shape[-1])).reshape(proj.shape)  # (... C)


class AxialAttention(nn.Module):
    """Pre-norm multi-head self-attention along one axis of a (B S F E) grid:
    ``axis=1`` along segments, ``axis=2`` along the frames of a segment."""

    def __init__(self, dim: int, heads: int, axis: int):
        super().__init__()
        self.heads, self.axis = heads, axis
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis == 1:
            x = x.transpose(1, 2)  # (B F S E)
        b, a, n, e = x.shape
        h = self.norm(x).reshape(b * a, n, e)  # (B' N E)
        q, k, v = (self.to_q(h), *self.to_kv(h).chunk(2, dim=-1))  # (B' N E) each
        q, k, v = (t.reshape(b * a, n, self.heads, e // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B' H N E/H)
        out = self.to_out(out.transpose(1, 2).reshape(b, a, n, e))  # (B A N E)
        return out.transpose(1, 2) if self.axis == 1 else out  # (B S F E)


class ConvFeedForward(nn.Module):
    """Channel LayerNorm, 3x3 conv (4x expansion), LeakyReLU, 3x3 conv over the grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv_in = nn.Conv2d(dim, 4 * dim, 3, padding=1)
        self.conv_out = nn.Conv2d(4 * dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).permute(0, 3, 1, 2)  # (B E S F)
        h = self.conv_out(F.leaky_relu(self.conv_in(h)))  # (B E S F)
        return h.permute(0, 2, 3, 1)  # (B S F E)


class AxialTemporalModel(nn.Module):
    """Eq. 6: features (B S F D_in) -> anomaly logits (B S F); p_A = sigmoid(logit)."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, num_segments: int, frames: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.pos_segment = nn.Parameter(0.02 * torch.randn(1, num_segments, 1, dim))
        self.pos_frame = nn.Parameter(0.02 * torch.randn(1, 1, frames, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([
                AxialAttention(dim, heads, axis=1), AxialAttention(dim, heads, axis=2),
                ConvFeedForward(dim), ConvFeedForward(dim),
            ])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.pos_segment + self.pos_frame  # (B S F E)
        x1 = x2 = x
        for attn_segments, attn_frames, ff1, ff2 in self.layers:  # two-stream reversible coupling
            x1 = x1 + attn_segments(x2)  # (B S F E)
            x2 = x2 + attn_frames(x1)
            x1 = x1 + ff1(x2)
            x2 = x2 + ff2(x1)
        x = (x1 + x2) / 2  # (B S F E)
        return self.classifier(self.norm(x)).squeeze(-1)  # (B S F)


class AnomalyClipNet(nn.Module):
    """Selector + temporal model on raw CLIP features ``(B S F D)``.

    ``directions`` default to the stored ones (scoring); training passes the prompt
    learner's fresh directions each step. Returns (S(x) (B S F C), logits (B S F)).
    """

    def __init__(self, dim: int, num_classes: int, cfg: AnomalyClipConfig):
        super().__init__()
        self.concat_selector = cfg.concat_selector
        self.register_buffer("prototype", torch.zeros(dim))  # m, (D)
        self.register_buffer("directions", torch.zeros(num_classes, dim))  # d_c, (C D)
        self.selector = Selector(num_classes, cfg.bn_momentum)
        in_dim = dim + (num_classes if cfg.concat_selector else 0)
        self.temporal = AxialTemporalModel(
            in_dim, cfg.embed_dim, cfg.depth, cfg.heads, cfg.num_segments, cfg.frames_per_segment
        )

    def forward(self, f: torch.Tensor, directions: torch.Tensor | None = None):
        d = self.directions if directions is None else directions  # (C D)
        x = f - self.prototype  # recentred, (B S F D)
        sel = self.selector(x, d)  # (B S F C)
        inp = torch.cat([x, sel], dim=-1) if self.concat_selector else x  # (B S F D')
        return sel, self.temporal(inp)


# ====================================================================== clip layouts
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
    warmup = int(round(warmup_fraction * total))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# ====================================================================== training
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
    params = [p for p in list(net.parameters()) + list(prompts.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    S, Fr = cfg.num_segments, cfg.frames_per_segment
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
        clips = np.stack([v[training_clip_indices(len(v), S, Fr, rng)] for v in videos])  # (B S F D)
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


# ====================================================================== the head
@register_head("anomalyclip")
class AnomalyClipHead(Head):
    Config = AnomalyClipConfig

    def _fit(self, cache, manifest) -> None:
        from vadpipe.featurize.encoders import resolve_device
        from vadpipe.models.prompt_learner import PromptLearner
        from vadpipe.models.text import text_encoder_for
        from vadpipe.models.zeroshot import class_prompt

        cfg = self.config
        if manifest is None:
            raise VadpipeError("anomalyclip: training needs a manifest with video labels")
        normal = manifest.select(split="train", normal=True)
        anomalous = manifest.select(split="train", normal=False)
        if not normal or not anomalous:
            raise VadpipeError(
                f"anomalyclip: weak supervision needs normal and anomalous training videos; the manifest "
                f"has {len(normal)} normal and {len(anomalous)} anomalous (split=train)"
            )
        self.class_names_ = tuple(manifest.anomaly_classes)
        unknown = sorted(set(cfg.class_descriptions) - set(self.class_names_))
        if unknown:
            raise VadpipeError(
                f"anomalyclip: class_descriptions names unknown class(es) {', '.join(unknown)} "
                f"(the manifest's: {', '.join(self.class_names_)})"
            )
        self.class_texts_ = [cfg.class_descriptions.get(c, class_prompt(c)) for c in self.class_names_]
        class_index = {c: i for i, c in enumerate(self.class_names_)}

        cache.require_videos(self.encoder, [e.video_id for e in normal + anomalous])
        normal_feats = [cache.read(self.encoder, e.video_id).emb for e in normal]  # float16 (T D) each
        anomalous_feats = [cache.read(self.encoder, e.video_id).emb for e in anomalous]
        if any(len(f) == 0 for f in normal_feats + anomalous_feats):
            raise VadpipeError("anomalyclip: a training video has no sampled frames in the cache")
        total = sum(len(f) for f in normal_feats)
        prototype = sum(f.astype(np.float64).sum(axis=0) for f in normal_feats) / total  # eq. 1, (D)

        encoder = text_encoder_for(cache, self.encoder)
        if encoder.dim != prototype.shape[0]:
            raise VadpipeError(
                f"anomalyclip: the text tower of {self.encoder} gives {encoder.dim}-d features, "
                f"the cache holds {prototype.shape[0]}-d ones"
            )
        device = resolve_device(cfg.device)
        rng = np.random.default_rng(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            prompts = PromptLearner(
                encoder.model, encoder.tokenizer, self.class_texts_, n_ctx=cfg.n_ctx,
                shared_context=cfg.shared_context, init_std=cfg.ctx_init_std,
                train_projection=cfg.finetune_text_projection,
            ).to(device)
            net = AnomalyClipNet(prototype.shape[0], len(self.class_names_), cfg)
            net.prototype.copy_(torch.from_numpy(prototype.astype(np.float32)))
            net.to(device)
            history = train_anomalyclip(
                net, prompts, anomalous_feats, [class_index[e.label] for e in anomalous], normal_feats,
                cfg, device, rng,
            )
        self.net_ = net
        self.prompt_state_ = {k: v.cpu().numpy() for k, v in prompts.learned_state().items()}
        self.history_ = history

    # ------------------------------------------------------------------ scoring
    def score_frames(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p_A ``float32[T]`` and p_{A,c} ``float32[T, C]`` of one video's features ``(T D)``."""
        self._check_fitted()
        cfg = self.config
        T = len(emb)
        if T == 0:
            return np.zeros(0, np.float32), np.zeros((0, len(self.class_names_)), np.float32)
        device = next(self.net_.parameters()).device
        idx = inference_clip_indices(T, cfg.num_segments, cfg.frames_per_segment)  # (J S F)
        feats = torch.from_numpy(np.asarray(emb, dtype=np.float32))  # (T D)
        p_a, p_ac = [], []
        self.net_.eval()
        with torch.inference_mode():
            for start in range(0, len(idx), cfg.score_batch_size):
                chunk = torch.from_numpy(idx[start : start + cfg.score_batch_size])  # (j S F)
                sel, logit = self.net_(feats[chunk].to(device))  # (j S F C), (j S F)
                p = torch.sigmoid(logit)  # (j S F)
                p_a.append(p.cpu())
                p_ac.append((p.unsqueeze(-1) * torch.softmax(sel, dim=-1)).cpu())  # (j S F C)
        # back to frame order: (J S F) -> (S J F) -> flat, the first T entries are frames 0..T-1
        p_a = torch.cat(p_a).transpose(0, 1).reshape(-1)[:T]  # (T)
        p_ac = torch.cat(p_ac).transpose(0, 1).reshape(-1, len(self.class_names_))[:T]  # (T C)
        return p_a.numpy().astype(np.float32), p_ac.numpy().astype(np.float32)

    def _score_video(self, features) -> Scores:
        p_a, p_ac = self.score_frames(features.emb)
        return Scores(
            features.frame_index, p_a, features.num_frames, class_probs=p_ac, class_names=self.class_names_
        )

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, np.ndarray]:
        net = self.net_
        state = {
            "prototype": net.prototype,
            "directions": net.directions,
            "selector.bn.running_mean": net.selector.bn.running_mean,
            "selector.bn.running_var": net.selector.bn.running_var,
        }
        state.update({f"temporal.{k}": v for k, v in net.temporal.state_dict().items()})
        out = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
        out.update({f"prompt.{k}": np.asarray(v, np.float32) for k, v in self.prompt_state_.items()})
        return out

    def _extra_config(self) -> dict:
        if not self.history_:  # a loaded head keeps the summary it was saved with
            return dict(self.train_summary_)
        return {"class_texts": list(self.class_texts_), "training_steps": len(self.history_),
                "final_losses": self.history_[-1]}

    def _load_state(self, state, extra) -> None:
        from vadpipe.featurize.encoders import resolve_device

        dim, num_classes = state["prototype"].shape[0], state["directions"].shape[0]
        net = AnomalyClipNet(dim, num_classes, self.config)
        with torch.no_grad():
            net.prototype.copy_(torch.from_numpy(state["prototype"]))
            net.directions.copy_(torch.from_numpy(state["directions"]))
            net.selector.bn.running_mean.copy_(torch.from_numpy(state["selector.bn.running_mean"]))
            net.selector.bn.running_var.copy_(torch.from_numpy(state["selector.bn.running_var"]))
        temporal = {k[len("temporal."):]: torch.from_numpy(v) for k, v in state.items() if k.startswith("temporal.")}
        net.temporal.load_state_dict(temporal)
        self.net_ = net.to(resolve_device(self.config.device)).eval()
        self.prompt_state_ = {k[len("prompt."):]: v for k, v in state.items() if k.startswith("prompt.")}
        self.class_texts_ = list(extra.get("class_texts", []))
        self.history_ = []
        self.train_summary_ = dict(extra)
