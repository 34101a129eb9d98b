"""AnomalyCLIP's network (Zanella et al. 2024): selector (eqs. 3-4) and axial temporal model (eq. 6).

The math only, as plain ``nn.Module`` s (the training loop is :mod:`.train`, the head
:mod:`.head`); fitted statistics -- the normality prototype m, the directions d_c, the
selector's batch-norm statistics -- are buffers, so :class:`AnomalyClipNet`'s
``state_dict`` is the whole fitted model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.heads.anomalyclip.config import AnomalyClipConfig


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
    """Channel LayerNorm, 3x3 conv (4x expansion), LeakyReLU, 3x3 conv over the grid.
    (lucidrains' ``ChanLayerNorm`` adds its eps to the std, ``nn.LayerNorm`` to the variance:
    outputs differ by ~1e-5 relative.)"""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv_in = nn.Conv2d(dim, 4 * dim, 3, padding=1)
        self.conv_out = nn.Conv2d(4 * dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).permute(0, 3, 1, 2)  # (B E S F)
        h = self.conv_out(F.leaky_relu(self.conv_in(h), inplace=True))  # (B E S F)
        return h.permute(0, 2, 3, 1)  # (B S F E)


class AxialTemporalModel(nn.Module):
    """Eq. 6: features (B S F D_in) -> anomaly logits (B S F); p_A = sigmoid(logit)."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, num_segments: int, frames: int,
                 pos_init_std: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.pos_segment = nn.Parameter(pos_init_std * torch.randn(1, num_segments, 1, dim))
        self.pos_frame = nn.Parameter(pos_init_std * torch.randn(1, 1, frames, dim))
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
    """Selector + temporal model on CLIP features ``(B S F D)`` (recentred here).

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
            in_dim, cfg.embed_dim, cfg.depth, cfg.heads, cfg.num_segments, cfg.frames_per_segment, cfg.pos_init_std
        )

    def forward(self, f: torch.Tensor, directions: torch.Tensor | None = None):
        sel, inp = self.select(f, directions)
        return sel, self.temporal(inp)

    def select(self, f: torch.Tensor, directions: torch.Tensor | None = None, centred: bool = False):
        """The selector's S(x) ``(B S F C)`` and the temporal model's input ``(B S F D')``. The
        selector's batch norm couples the clips of a batch; the temporal model reads each clip
        alone (what lets training backpropagate it a few clips at a time). ``centred``: ``f`` is
        already x = f - m (training recentres its batch in place: one copy of it less)."""
        d = self.directions if directions is None else directions  # (C D)
        x = f if centred else f - self.prototype  # recentred, (B S F D)
        sel = self.selector(x, d)  # (B S F C)
        return sel, (torch.cat([x, sel], dim=-1) if self.concat_selector else x)  # (B S F D')
