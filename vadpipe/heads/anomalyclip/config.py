"""The hyper-parameters of ``anomalyclip`` (paper defaults: UCF-Crime, App. A-B, Table 11)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vadpipe.errors import VadpipeError


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

    def __post_init__(self):
        positive = ("num_segments", "frames_per_segment", "top_k", "n_ctx", "embed_dim", "depth", "heads", "epochs")
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
