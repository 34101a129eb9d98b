"""``clipassist``: CLIP-assisted anomaly detection with descriptions (Dong 2024), weak supervision.

Trained from video-level labels (``normal`` or an anomaly class) of the manifest's ``train``
videos. Two modes (``mode=``):

**video** (Sec. 3.2). Each class (``normal`` first, then the anomaly classes) has a
description (``dong-categories``: Table 1 style) preceded by 16 class-specific learnable
context vectors, through the frozen text encoder (CoOp; :class:`PromptLearner`), giving
class embeddings t_k (eq. 4). Frames go through a *local transformer* (windows of
``window`` = 16 frames, ``layers`` = 1, a learnable class token and position embeddings,
eq. 5) and a *global temporal adapter*, a lightweight GCN (eqs. 7-9)::

    f_g = ReLU([softmax(M_sim) f_l W_sim ; softmax(M_dis) f_l W_dis]),
    M_sim(i, j) = cos(f_l_i, f_l_j),  softmax(M_dis)(i, j) ∝ exp(-|i - j| / sigma)

The alignment map M(t, k) = cos(f_t, t_k); a class's similarity to the video is the mean
of its top-k frames; p = softmax(s / tau), tau = 0.07 (eq. 10); the loss is the cross
entropy of p with the video label plus lambda * sum_k max(0, cos(t_normal, t_k)) (eqs.
11-12). Frame scores come from the same map: p_t = softmax(M_t / tau), anomaly score
1 - p_t(normal), class probabilities p_t(k).

**frame** (Sec. 3.3). Normal and abnormal descriptions (``dong-situations``: Table 2, plus
one description per manifest class) are embedded once by the frozen text encoder. Each
description k has a diagonal A_k (init identity) and a bias b_k (init 0):
W(f, t_k) = f^T A_k t_k / m + b_k, m = 0.01 (eq. 13); p = softmax over all descriptions;
anomaly score = the sum over anomaly descriptions (eq. 14); class probability = the sum
over a class's descriptions. Trained with InfoNCE (eq. 15); an optional majority vote over
``vote_window`` neighbouring frames.

Paper defaults: context 16, window 16, 1 layer (Table 8), sigma 1, tau 0.07,
lambda 0.1 (printed "1 x 10 1", read as 1e-1 like the learning rate's "1 x 10 5" = 1e-5),
Adam, batch 64, lr 1e-5, m 0.01. Choices where the paper is silent or ambiguous:

* eq. 7 ``[softmax(M_sim); softmax(M_dis)] f W`` is read as Wu et al. 2020's two graph
  convolutions concatenated along features (W_sim, W_dis: D -> D/2 each), followed by an
  output projection and a residual, f = f_l + W_out f_g, so the adapter returns D dims;
* eq. 9 prints M_dis = -|i - j| / sigma inside the softmax of eq. 7, which is exactly the
  row-normalised exp(-|i - j| / sigma) of Wu et al.; padded frames are masked out;
* the transformer's attention/MLP output projections and W_out start at zero, so the
  temporal module starts as the identity and training starts from CLIP's zero-shot
  alignment; frames enter the transformer scaled by sqrt(D) (unit scale per dimension);
  the class token takes part in each window's attention, its output is not used;
* top-k: k = T // 16 + 1 frames of a T-frame video (VadCLIP's rule), unless ``topk``;
* a class with several descriptions gets one text: them joined with ", " (video mode);
* frame-mode weak supervision (the paper does not say how frames of anomalous training
  videos are labelled): every frame of a normal video is normal; the top-k frames of an
  anomalous video by the current anomaly score (MIL) are anomalous. In eq. 15 the
  positive set of a normal frame is the normal descriptions, of an anomalous frame its
  class's descriptions plus the unclassed abnormal ones; the rest are negatives. Loss
  weights lambda_j = 1 / (frames counted in that video), so each video weighs the same;
* majority vote: the score of frame t becomes the fraction of frames in the centred window
  whose score exceeds ``vote_threshold`` (its majority decision is that fraction > 0.5);
* training videos longer than ``max_frames`` (256) are uniformly subsampled; at scoring
  a long video is cut into chunks of ``max_frames``, each its own graph (as VadCLIP);
* with no anomalous training videos the head still trains (normal videos only), and
  with no anomaly class anywhere in the manifest one class ``anomaly`` is used.

Video mode needs a CLIP-style text tower (CoOp); frame mode works with any open_clip
model, CoCa included. Training is seeded (``seed``) and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.errors import VadpipeError
from vadpipe.models.base import Head, Scores, register_head
from vadpipe.models.zeroshot import (
    DEFAULT_CLASS_SETS,
    check_templates,
    class_texts,
    load_prompt_set,
)

log = logging.getLogger(__name__)
MODES = ("video", "frame")
NORMAL_CLASS = "normal"
DEFAULT_DESCRIPTIONS = {"video": "dong-categories", "frame": "dong-situations"}


@dataclass
class ClipAssistConfig:
    mode: str = "video"  # "video" | "frame"
    descriptions: str | None = None  # prompt file; None: dong-categories (video), dong-situations (frame)
    class_descriptions: dict[str, str | list[str]] = field(default_factory=dict)  # class -> description(s)
    class_sets: list[str] = field(default_factory=lambda: ["dong-categories", *DEFAULT_CLASS_SETS])
    # video mode
    n_ctx: int = 16
    window: int = 16
    layers: int = 1
    dropout: float = 0.0
    sigma: float = 1.0
    tau: float = 0.07
    lam: float = 0.1
    gcn: bool = True
    # frame mode
    templates: list[str] = field(default_factory=lambda: ["{}"])
    m: float = 0.01
    vote_window: int = 0  # 0 or 1: no vote; else an odd number of frames
    vote_threshold: float = 0.5
    # both
    topk: int | None = None  # None: T // 16 + 1
    max_frames: int = 256
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.mode not in MODES:
            raise VadpipeError(f"clipassist: unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        positive = ("sigma", "tau", "m", "lr")
        at_least_one = ("n_ctx", "window", "layers", "max_frames", "batch_size")
        for name in positive:
            if not getattr(self, name) > 0:
                raise VadpipeError(f"clipassist: {name} must be > 0, got {getattr(self, name)}")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise VadpipeError(f"clipassist: {name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0 or self.lam < 0 or not 0 <= self.dropout < 1:
            raise VadpipeError("clipassist: epochs and lam must be >= 0, dropout in [0, 1)")
        if self.topk is not None and self.topk < 1:
            raise VadpipeError(f"clipassist: topk must be >= 1 or null, got {self.topk}")
        if self.vote_window < 0 or (self.vote_window > 1 and self.vote_window % 2 == 0):
            raise VadpipeError(f"clipassist: vote_window must be 0, 1 or odd, got {self.vote_window}")
        check_templates(self.templates, where="clipassist: ")


# ---------------------------------------------------------------- video mode: the math
def similarity_adjacency(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(M_sim), eq. 8: row softmax of the frames' cosine similarities. (B T D) -> (B T T)."""
    xn = F.normalize(x, dim=-1)  # (B T D)
    sim = xn @ xn.transpose(1, 2)  # (B T T)
    if valid is not None:
        sim = sim.masked_fill(~valid[:, None, :], float("-inf"))
    return sim.softmax(dim=-1)


def distance_adjacency(num_frames: int, sigma: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(M_dis), eq. 9: row-normalised exp(-|i - j| / sigma). -> (T T), or (B T T) with ``valid``."""
    idx = torch.arange(num_frames, dtype=torch.float32)
    logits = -(idx[:, None] - idx[None, :]).abs() / sigma  # (T T)
    if valid is not None:
        logits = logits[None].masked_fill(~valid[:, None, :], float("-inf"))  # (B T T)
    return logits.softmax(dim=-1)


class LocalTransformer(nn.Module):
    """Eq. 5: self-attention within windows of ``window`` frames, with a class token and positions."""

    def __init__(self, dim: int, window: int = 16, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        heads = max(1, dim // 64)
        while dim % heads:
            heads -= 1
        self.window = window
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # (1 1 D)
        self.pos_emb = nn.Parameter(torch.randn(1, window + 1, dim) * 0.02)  # (1 W+1 D)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        for layer in self.layers:  # start as the identity (residual branches at zero)
            nn.init.zeros_(layer.self_attn.out_proj.weight)
            nn.init.zeros_(layer.self_attn.out_proj.bias)
            nn.init.zeros_(layer.linear2.weight)
            nn.init.zeros_(layer.linear2.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        W = self.window
        n = -(-T // W)
        x = F.pad(x, (0, 0, 0, n * W - T)).reshape(B * n, W, D)  # (B*n W D)
        keep = F.pad(valid, (0, n * W - T), value=False).reshape(B * n, W)  # (B*n W)
        x = torch.cat([self.cls_token.expand(B * n, 1, D), x], dim=1) + self.pos_emb  # (B*n W+1 D)
        pad = ~torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # (B*n W+1), True = ignore
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)  # (B*n W+1 D)
        return x[:, 1:].reshape(B, n * W, D)[:, :T]  # (B T D)


class GlobalTemporalAdapter(nn.Module):
    """Eq. 7: two graph convolutions (feature similarity, temporal distance), ReLU, residual."""

    def __init__(self, dim: int, sigma: float = 1.0):
        super().__init__()
        self.sigma = sigma
        self.w_sim = nn.Linear(dim, dim // 2, bias=False)
        self.w_dis = nn.Linear(dim, dim - dim // 2, bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def adjacency(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return similarity_adjacency(x, valid), distance_adjacency(x.shape[1], self.sigma, valid).to(x)

    def graph_features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """f_g of eq. 7, ``(B T D)``."""
        a_sim, a_dis = self.adjacency(x, valid)  # (B T T) each
        return F.relu(torch.cat([a_sim @ self.w_sim(x), a_dis @ self.w_dis(x)], dim=-1))  # (B T D)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.graph_features(x, valid))  # (B T D)


class TemporalModule(nn.Module):
    """Local transformer, then (optionally) the global temporal adapter: ``(B T D) -> (B T D)``."""

    def __init__(self, dim: int, window: int = 16, layers: int = 1, sigma: float = 1.0,
                 dropout: float = 0.0, gcn: bool = True):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.local = LocalTransformer(dim, window, layers, dropout)
        self.gcn = GlobalTemporalAdapter(dim, sigma) if gcn else None

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.local(x * self.scale, valid)  # (B T D)
        return self.gcn(h, valid) if self.gcn is not None else h


def alignment_map(frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """M(t, k) = cos(frame t, class k): ``(B T D), (C D) -> (B T C)``."""
    return F.normalize(frames, dim=-1) @ F.normalize(text, dim=-1).T


def topk_counts(valid: torch.Tensor, topk: int | None) -> torch.Tensor:
    """k per video: ``topk`` or T // 16 + 1 of its T valid frames, at most T. ``(B T) -> (B)``."""
    t = valid.sum(dim=1)  # (B)
    k = torch.full_like(t, topk) if topk is not None else t // 16 + 1
    return torch.minimum(k, t).clamp(min=1)


def video_class_similarity(align: torch.Tensor, valid: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """s_k: mean of the top-k frames of each class column. ``(B T C) -> (B C)``."""
    k = topk_counts(valid, topk)  # (B)
    ranked = align.masked_fill(~valid[..., None], float("-inf")).sort(dim=1, descending=True).values  # (B T C)
    take = torch.arange(align.shape[1], device=align.device)[None, :] < k[:, None]  # (B T)
    return torch.where(take[..., None], ranked, 0.0).sum(dim=1) / k[:, None]  # (B C)


def video_loss(align, valid, labels, text, tau: float, lam: float, topk: int | None) -> torch.Tensor:
    """Eq. 12: cross entropy of softmax(s / tau) (eq. 10) + lambda * eq. 11 (class 0 = normal)."""
    s = video_class_similarity(align, valid, topk)  # (B C)
    t = F.normalize(text, dim=-1)  # (C D)
    contrast = F.relu(t[1:] @ t[0]).sum()  # eq. 11
    return F.cross_entropy(s / tau, labels) + lam * contrast


# ---------------------------------------------------------------- frame mode: the math
class DiagonalSimilarity(nn.Module):
    """Eq. 13: W(f, t_k) = f^T A_k t_k / m + b_k with diagonal A_k (init I) and b_k (init 0)."""

    def __init__(self, text: torch.Tensor, m: float = 0.01):
        super().__init__()
        self.m = m
        self.register_buffer("text", F.normalize(text.float(), dim=-1))  # (N D)
        self.a = nn.Parameter(torch.ones_like(self.text))  # (N D): diagonals of A_k
        self.b = nn.Parameter(torch.zeros(self.text.shape[0]))  # (N)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f, dim=-1) @ (self.a * self.text).T / self.m + self.b  # (F N)


def info_nce(logits: torch.Tensor, positive: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 15: -sum_j lambda_j log(p(pos | x_j) / (p(pos | x_j) + p(neg | x_j))).

    ``positive`` (F N) marks each frame's positive descriptions; every other description is
    a negative, so the ratio is log-sum-exp over positives minus over all.
    """
    pos = logits.masked_fill(~positive, float("-inf")).logsumexp(dim=-1)  # (F)
    return -(weight * (pos - logits.logsumexp(dim=-1))).sum()


def majority_vote(score: np.ndarray, window: int, threshold: float = 0.5) -> np.ndarray:
    """Fraction of frames in the centred ``window`` whose score exceeds ``threshold``."""
    if window <= 1:
        return score
    votes = (score > threshold).astype(np.float64)
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(votes)])
    idx = np.arange(len(score))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(score))
    return ((csum[hi] - csum[lo]) / (hi - lo)).astype(np.float32)


# ---------------------------------------------------------------- training data
def pad_batch(videos: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos of different lengths -> ``x (B T D)`` zero-padded, ``valid (B T)``."""
    T = max(len(v) for v in videos)
    x = torch.zeros(len(videos), T, videos[0].shape[1])
    valid = torch.zeros(len(videos), T, dtype=torch.bool)
    for i, v in enumerate(videos):
        x[i, : len(v)] = torch.from_numpy(v)
        valid[i, : len(v)] = True
    return x.to(device), valid.to(device)


def subsample(emb: np.ndarray, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` uniformly spaced frames (kept in the cache's float16)."""
    if len(emb) > max_frames:
        emb = emb[np.linspace(0, len(emb) - 1, max_frames).round().astype(int)]
    return np.ascontiguousarray(emb)


def train(params, batch_loss, num_videos: int, cfg: ClipAssistConfig, generator: torch.Generator):
    """Adam over ``cfg.epochs`` passes of shuffled video batches; ``batch_loss(indices)`` gives
    the loss of one batch. Returns the last batch's loss (None without any step)."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    loss = None
    for _ in range(cfg.epochs):
        for idx in torch.randperm(num_videos, generator=generator).split(cfg.batch_size):
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return None if loss is None else loss.item()


# ---------------------------------------------------------------- the head
@register_head("clipassist")
class ClipAssistHead(Head):
    Config = ClipAssistConfig

    # ------------------------------------------------------------ fit
    def _fit(self, cache, manifest) -> None:
        from vadpipe.featurize.encoders import resolve_device
        from vadpipe.models.text import text_encoder_for

        cfg = self.config
        entries = manifest.select(split="train")
        if not entries:
            raise VadpipeError("clipassist: no training videos (split 'train') in the manifest")
        self.class_names_ = tuple(manifest.anomaly_classes) or ("anomaly",)
        if all(e.is_normal for e in entries):
            log.warning("clipassist: no anomalous training videos; training on normal videos only")
        index = {c: i + 1 for i, c in enumerate(self.class_names_)}
        labels = torch.tensor([0 if e.is_normal else index[e.label] for e in entries])
        ids = [e.video_id for e in entries]
        cache.require_videos(self.encoder, ids)
        videos = [subsample(f.emb, cfg.max_frames) for f in cache.iter_videos(self.encoder, ids)]
        encoder = text_encoder_for(cache, self.encoder)
        pset = load_prompt_set(cfg.descriptions or DEFAULT_DESCRIPTIONS[cfg.mode])
        per_class = class_texts(self.class_names_, cfg.class_descriptions, pset, cfg.class_sets)
        device = resolve_device(cfg.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            generator = torch.Generator().manual_seed(cfg.seed)
            if cfg.mode == "video":
                if not pset.normal:
                    raise VadpipeError(f"{pset.path}: video mode needs a 'normal' description")
                self.texts_ = [", ".join(pset.normal)] + [", ".join(t) for t in per_class]
                self._fit_video(encoder, videos, labels, device, generator)
            else:
                self._fit_frame(encoder, pset, per_class, videos, labels, device, generator)

    def _fit_video(self, encoder, videos, labels, device, generator) -> None:
        from vadpipe.models.prompt_learner import PromptLearner

        cfg = self.config
        prompts = PromptLearner(encoder.model, encoder.tokenizer, self.texts_, n_ctx=cfg.n_ctx).to(device)
        net = TemporalModule(encoder.dim, cfg.window, cfg.layers, cfg.sigma, cfg.dropout, cfg.gcn).to(device)
        net.train()
        prompts.train()

        def batch_loss(idx):
            x, valid = pad_batch([videos[i] for i in idx], device)  # (B T D), (B T)
            text = prompts()  # (C D)
            align = alignment_map(net(x, valid), text)  # (B T C)
            return video_loss(align, valid, labels[idx].to(device), text, cfg.tau, cfg.lam, cfg.topk)

        params = [p for p in [*net.parameters(), *prompts.parameters()] if p.requires_grad]
        self.final_loss_ = train(params, batch_loss, len(videos), cfg, generator)
        net.eval()
        with torch.no_grad():
            self.text_emb_ = F.normalize(prompts(), dim=-1).cpu()  # (C D)
        self.ctx_ = prompts.ctx.detach().cpu()
        self.net_ = net.cpu()

    def _fit_frame(self, encoder, pset, per_class, videos, labels, device, generator) -> None:
        from vadpipe.models.text import embed_prompts

        cfg = self.config
        # descriptions: normal, unclassed abnormal, then each class's; one entry per (text, owner),
        # so two classes sharing a description (RoadAccidents / CarAccident) each keep it
        entries = dict.fromkeys((t, -1) for t in pset.normal)  # -1 normal, 0 unclassed abnormal, c >= 1 class c
        entries.update(dict.fromkeys((t, 0) for t in pset.anomaly if (t, -1) not in entries))
        for c, texts in enumerate(per_class, start=1):
            if not texts:
                raise VadpipeError(f"clipassist: class {self.class_names_[c - 1]!r} has no description")
            entries.update(dict.fromkeys((t, c) for t in texts))
        if not any(o == -1 for _, o in entries):
            raise VadpipeError(f"{pset.path}: frame mode needs 'normal' descriptions")
        self.texts_ = [t for t, _ in entries]
        self.desc_owner_ = np.array([o for _, o in entries], dtype=np.int64)  # (N)
        text = torch.from_numpy(embed_prompts(encoder, self.texts_, tuple(cfg.templates)))  # (N D)
        sim = DiagonalSimilarity(text, cfg.m).to(device)
        owner_t = torch.from_numpy(self.desc_owner_).to(device)

        def batch_loss(idx):
            loss = 0.0
            for i in idx.tolist():
                logits = sim(torch.from_numpy(videos[i]).to(device, torch.float32))  # (T N)
                loss = loss + self._frame_video_loss(logits, int(labels[i]), owner_t)
            return loss / len(idx)

        self.final_loss_ = train(list(sim.parameters()), batch_loss, len(videos), cfg, generator)
        self.sim_ = sim.cpu()

    def _frame_video_loss(self, logits: torch.Tensor, label: int, owner: torch.Tensor) -> torch.Tensor:
        """Eq. 15 on one weakly labelled video: all its frames if normal, its top-k if anomalous."""
        T = logits.shape[0]
        if label == 0:
            positive = (owner == -1)[None].expand(T, -1)  # (T N)
            return info_nce(logits, positive, torch.full((T,), 1.0 / T, device=logits.device))
        with torch.no_grad():
            score = logits.softmax(dim=-1)[:, owner >= 0].sum(dim=-1)  # (T)
        k = int(topk_counts(torch.ones(1, T, dtype=torch.bool), self.config.topk)[0])
        top = score.topk(k).indices  # (k)
        positive = ((owner == 0) | (owner == label))[None].expand(k, -1)  # (k N)
        return info_nce(logits[top], positive, torch.full((k,), 1.0 / k, device=logits.device))

    # ------------------------------------------------------------ score
    def _score_video(self, features) -> Scores:
        f = features.emb.astype(np.float32)  # (T D)
        if self.config.mode == "video":
            probs = self._class_probs_video(f)  # (T C+1), column 0 = normal, one column per text
            score, class_probs = 1.0 - probs[:, 0], probs[:, 1:]
        else:
            with torch.no_grad():
                probs = self.sim_(torch.from_numpy(f)).softmax(dim=-1).numpy()  # (T N), one column per text
            owner = self.desc_owner_
            score = majority_vote(probs[:, owner >= 0].sum(axis=1), self.config.vote_window, self.config.vote_threshold)
            class_probs = np.stack([probs[:, owner == c].sum(axis=1) for c in range(1, len(self.class_names_) + 1)], 1)
        return Scores(
            features.frame_index,
            score.astype(np.float32),
            features.num_frames,
            class_probs=class_probs.astype(np.float32),
            class_names=self.class_names_,
            explanation=np.array(self.texts_, dtype=object)[probs.argmax(axis=1)],
        )

    def _class_probs_video(self, f: np.ndarray) -> np.ndarray:
        """softmax(M_t / tau) per frame, the video cut into chunks of ``max_frames``."""
        out = []
        self.net_.eval()
        with torch.no_grad():
            for start in range(0, len(f), self.config.max_frames):
                x = torch.from_numpy(f[start : start + self.config.max_frames])[None]  # (1 T D)
                valid = torch.ones(x.shape[:2], dtype=torch.bool)  # (1 T)
                align = alignment_map(self.net_(x, valid), self.text_emb_)[0]  # (T C)
                out.append((align / self.config.tau).softmax(dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.texts_)), np.float32)

    # ------------------------------------------------------------ save / load
    def _state(self) -> dict[str, np.ndarray]:
        if self.config.mode == "video":
            state = {f"net.{k}": v.numpy() for k, v in self.net_.state_dict().items()}
            return {**state, "text_emb": self.text_emb_.numpy(), "ctx": self.ctx_.numpy()}
        return {
            "text_emb": self.sim_.text.numpy(),
            "a": self.sim_.a.detach().numpy(),
            "b": self.sim_.b.detach().numpy(),
            "desc_owner": self.desc_owner_,
        }

    def _extra_config(self) -> dict:
        return {"texts": list(self.texts_), "final_loss": self.final_loss_}

    def _load_state(self, state, extra) -> None:
        cfg = self.config
        self.texts_ = list(extra["texts"])
        self.final_loss_ = extra.get("final_loss")
        text = torch.from_numpy(np.asarray(state["text_emb"], np.float32))
        if cfg.mode == "video":
            self.net_ = TemporalModule(text.shape[1], cfg.window, cfg.layers, cfg.sigma, cfg.dropout, cfg.gcn)
            net_state = {k[4:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("net.")}
            self.net_.load_state_dict(net_state)
            self.net_.eval()
            self.text_emb_, self.ctx_ = text, torch.from_numpy(state["ctx"])
        else:
            self.sim_ = DiagonalSimilarity(text, cfg.m)
            learned = {k: torch.from_numpy(np.asarray(state[k], np.float32)) for k in ("a", "b")}
            self.sim_.load_state_dict({"text": text, **learned})  # the saved, already normalised texts
            self.desc_owner_ = np.asarray(state["desc_owner"], np.int64)
