"""The hyper-parameters of ``anomalyclip``.

Defaults are what the authors' code runs for UCF-Crime (lucazanella/AnomalyCLIP @ 6e58b6e,
``configs/model/anomaly_clip_ucfcrime.yaml``, ``configs/experiment/ucfcrime.yaml``); where
the paper's text says otherwise, the text is an option (``losses="paper"``, ``beta2=0.98``,
``schedule="step"``), because the code produced the published numbers. ``preset`` loads
the per-dataset values of the authors' configs (:data:`PRESETS`); parameters given beside a
preset win over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from vadpipe.errors import VadpipeError

GEOMETRIES = ("raw", "unit")
LOSSES = ("code", "paper")
SCHEDULES = ("epoch", "step")
CLASS_TEXTS = ("name", "words")

# data/{ucf,sht,xd}_labels.csv of the authors' repository: class names in id order (Normal included)
AUTHORS_CLASSES: dict[str, tuple[str, ...]] = {
    "ucf_crime": ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "Normal",
                  "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"),
    "shanghaitech": ("car", "chasing", "circuit", "fall", "fighting", "hurdle", "jumping", "monocycle", "normal",
                     "push", "robbery", "running", "skateboard", "step", "stoop", "throwing object", "vaudeville",
                     "vehicle"),
    "xd_violence": ("Abuse", "Car_accident", "Explosion", "Fighting", "Normal", "Riot", "Shooting"),
}

# configs/model/anomaly_clip_{ucfcrime,shanghaitech,xdviolence}.yaml and configs/experiment/*.yaml
PRESETS: dict[str, dict] = {
    "ucf_crime": dict(lr=1e-5, epochs=50, warmup_epochs=5, embed_dim=256, depth=1, concat_selector=False),
    "shanghaitech": dict(lr=5e-4, epochs=100, warmup_epochs=10, embed_dim=256, depth=2, concat_selector=True),
    "xd_violence": dict(lr=5e-6, epochs=50, warmup_epochs=5, embed_dim=128, depth=1, concat_selector=False),
}


@dataclass
class AnomalyClipConfig:
    PRESETS: ClassVar[dict[str, dict]] = PRESETS

    preset: str | None = None  # ucf_crime, shanghaitech, xd_violence: the authors' per-dataset config
    # features and directions
    geometry: str = "raw"  # raw: x = f - m, d_c = E_T - m (authors' code); unit: vadpipe 0.2's unit sphere
    class_text: str = "name"  # name: the class name, '_' -> ' ' (authors' code); words: CamelCase split
    class_descriptions: dict[str, str] = field(default_factory=dict)  # class name -> text (overrides)
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
    bn_momentum: float = 0.1
    # temporal model (Table 11, App. A)
    embed_dim: int = 256
    depth: int = 1
    heads: int = 8
    concat_selector: bool = False  # feed S(x) to the temporal model too (ShanghaiTech)
    pos_init_std: float | None = None  # axial position embeddings; None: 1.0 (lucidrains') raw, 0.02 unit
    # losses (eq. 14)
    losses: str = "code"  # code: the authors' loss.py; paper: eqs. 10 and 13 as printed
    lambda_sparsity: float = 8e-3  # lambda_1
    lambda_smoothness: float = 8e-4  # lambda_2
    # optimisation (App. B; the code's values)
    batch_size: int = 64  # B: B/2 anomalous + B/2 normal clips
    epochs: int = 50
    steps: int | None = None  # total optimiser steps; overrides epochs when set
    lr: float = 1e-5
    schedule: str = "epoch"  # epoch: the authors' per-epoch warm-up + cosine; step: per step
    warmup_epochs: int = 5  # schedule="epoch"
    warmup_fraction: float = 0.1  # schedule="step": the paper's "10% warm-up"
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.999  # torch's default, which the authors' code runs (the paper prints 0.98)
    eps: float = 1e-8
    seed: int = 0
    # memory, not the method: clips whose temporal-model activations a training step holds at
    # once ("auto": 8 on a CPU, the whole batch on a GPU; 0: the whole batch). Same gradients to
    # float rounding (train.training_step); on 2 CPU cores at batch 64, 8 clips hold 0.45 GB
    # instead of 1.3 GB for a 17% longer step (the authors' reversible network recomputes too)
    clip_chunk: int | str = "auto"

    def __post_init__(self):
        positive = ("num_segments", "frames_per_segment", "top_k", "n_ctx", "embed_dim", "depth", "heads", "epochs")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise VadpipeError(f"anomalyclip: {name} must be >= 1, got {getattr(self, name)}")
        for name, allowed in (("geometry", GEOMETRIES), ("losses", LOSSES), ("schedule", SCHEDULES),
                              ("class_text", CLASS_TEXTS)):
            if getattr(self, name) not in allowed:
                raise VadpipeError(f"anomalyclip: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
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
        if self.warmup_epochs < 0:
            raise VadpipeError(f"anomalyclip: warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise VadpipeError(f"anomalyclip: warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.clip_chunk != "auto" and (isinstance(self.clip_chunk, str) or int(self.clip_chunk) < 0):
            raise VadpipeError(f"anomalyclip: clip_chunk must be 'auto' or an integer >= 0, got {self.clip_chunk!r}")
        if self.pos_init_std is None:
            # N(0, 1), lucidrains' init, suits raw features; on unit rows (projections ~0.05) it
            # drowns the content: vadpipe 0.2's planted tests stayed on video-level cues with it
            self.pos_init_std = 1.0 if self.geometry == "raw" else 0.02
        if self.pos_init_std < 0:
            raise VadpipeError(f"anomalyclip: pos_init_std must be >= 0, got {self.pos_init_std}")
