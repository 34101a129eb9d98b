"""The networks and losses of Dong 2024 ("CLIP-assisted"), as plain functions and modules.

Video mode (Sec. 3.2): the local transformer (eq. 5) and the global temporal adapter, a
lightweight GCN (eqs. 7-9), the alignment map and the top-k video loss (eqs. 10-12).
Frame mode (Sec. 3.3): the per-description diagonal similarity (eq. 13), InfoNCE (eq. 15)
and the majority vote. The heads are :mod:`.video` (``clipassist``) and :mod:`.frame`
(``clipassist-frame``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- video mode
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
    """Local transformer, then (optionally) the global temporal adapter: ``(B T D) -> (B T D)``.
    ``local=False`` (and ``gcn=False``): no temporal module, the frames as they are (Table 10)."""

    def __init__(self, dim: int, window: int = 16, layers: int = 1, sigma: float = 1.0,
                 dropout: float = 0.0, gcn: bool = True, local: bool = True):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.local = LocalTransformer(dim, window, layers, dropout) if local else None
        self.gcn = GlobalTemporalAdapter(dim, sigma) if gcn else None

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.local(x * self.scale, valid) if self.local is not None else x  # (B T D)
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


def classifier_loss(logits: torch.Tensor, valid: torch.Tensor, anomalous: torch.Tensor, topk: int | None) -> torch.Tensor:
    """The "CLIP + Classifier" baselines (Tables 4-5): binary cross entropy of each video's
    top-k mean frame logit against its video label (MIL, as the alignment's top-k).
    ``(B T)`` logits, ``(B T)`` valid, ``(B)`` bool."""
    s = video_class_similarity(logits[..., None], valid, topk)[:, 0]  # (B)
    return F.binary_cross_entropy_with_logits(s, anomalous.float())


# ---------------------------------------------------------------- frame mode
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
