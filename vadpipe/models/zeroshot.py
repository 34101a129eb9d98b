"""``zeroshot``: CLIP prompts, no training (Ueki 2024).

Each sampled frame's embedding is compared (cosine) with the embeddings of *normal* and
*anomaly* prompts; a softmax with temperature over all prompts gives a distribution, and the
anomaly score is the probability mass on the anomaly prompts. Prompts are ensembled over
templates (mean of normalised text embeddings). With anomaly classes (from the manifest, or
given), per-class probabilities are p(A) * softmax over the class prompts, i.e.
p(c | A) scaled by the anomaly mass, as in AnomalyCLIP's p_{A,c} = p_A p(c|A).

Defaults and choices: the anomaly prompts are the paper's three ('anomaly behavior',
'dangerous activity', 'dangerous behavior'); the paper scores with one anomaly prompt and
gives no normal counterpart, so vadpipe pairs them with three neutral normal prompts and
uses CLIP's own temperature 0.01 (logit scale 100). Templates: the bare prompt and "a video
from a CCTV camera of {}.". Class prompts are the class names with CamelCase split
("RoadAccidents" -> "road accidents"). Text embeddings are computed at fit time from the
cache's own open_clip model and stored with the head; scoring needs no text model.
The explanation of each frame is its best-matching prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.models.base import Head, Scores, register_head

UEKI_ANOMALY_PROMPTS = ("anomaly behavior", "dangerous activity", "dangerous behavior")
DEFAULT_NORMAL_PROMPTS = ("normal behavior", "ordinary activity", "safe behavior")
DEFAULT_TEMPLATES = ("{}", "a video from a CCTV camera of {}.")


@dataclass
class ZeroshotConfig:
    normal_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_NORMAL_PROMPTS))
    anomaly_prompts: list[str] = field(default_factory=lambda: list(UEKI_ANOMALY_PROMPTS))
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    temperature: float = 0.01
    classes: bool = True  # per-class probabilities for the manifest's anomaly classes
    class_prompts: dict[str, str] = field(default_factory=dict)  # class name -> prompt override

    def __post_init__(self):
        if not self.normal_prompts or not self.anomaly_prompts:
            raise VadpipeError("zeroshot: needs at least one normal and one anomaly prompt")
        if self.temperature <= 0:
            raise VadpipeError(f"zeroshot: temperature must be > 0, got {self.temperature}")


def class_prompt(name: str) -> str:
    """'RoadAccidents' -> 'road accidents'; 'car_accident' -> 'car accident'."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


@register_head("zeroshot")
class ZeroshotHead(Head):
    Config = ZeroshotConfig

    def _fit(self, cache, manifest) -> None:
        from vadpipe.models.text import embed_prompts, text_encoder_for

        encoder = text_encoder_for(cache, self.encoder)
        cfg = self.config
        self.prompts_ = list(cfg.normal_prompts) + list(cfg.anomaly_prompts)
        self.is_anomaly_ = np.array(
            [0] * len(cfg.normal_prompts) + [1] * len(cfg.anomaly_prompts), dtype=np.uint8
        )
        self.prompt_emb_ = embed_prompts(encoder, self.prompts_, tuple(cfg.templates))  # (P D)
        self.class_names_ = tuple(manifest.anomaly_classes) if (cfg.classes and manifest is not None) else ()
        texts = [cfg.class_prompts.get(c, class_prompt(c)) for c in self.class_names_]
        self.class_emb_ = embed_prompts(encoder, texts, tuple(cfg.templates)) if texts else None

    def _score_video(self, features) -> Scores:
        f = features.emb.astype(np.float32)  # (T D)
        f /= np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)
        probs = _softmax(f @ self.prompt_emb_.T / self.config.temperature)  # (T P)
        p_anomaly = probs[:, self.is_anomaly_ == 1].sum(axis=1)  # (T)
        explanation = np.array(self.prompts_, dtype=object)[probs.argmax(axis=1)]
        class_probs = None
        if self.class_emb_ is not None:
            p_class = _softmax(f @ self.class_emb_.T / self.config.temperature)  # (T C)
            class_probs = (p_anomaly[:, None] * p_class).astype(np.float32)
        return Scores(
            features.frame_index,
            p_anomaly.astype(np.float32),
            features.num_frames,
            class_probs=class_probs,
            class_names=self.class_names_,
            explanation=explanation,
        )

    def _state(self) -> dict[str, np.ndarray]:
        state = {"prompt_emb": self.prompt_emb_.astype(np.float32), "is_anomaly": self.is_anomaly_}
        if self.class_emb_ is not None:
            state["class_emb"] = self.class_emb_.astype(np.float32)
        return state

    def _extra_config(self) -> dict:
        return {"prompts": self.prompts_}

    def _load_state(self, state, extra) -> None:
        self.prompt_emb_ = state["prompt_emb"]
        self.is_anomaly_ = state["is_anomaly"]
        self.class_emb_ = state.get("class_emb")
        self.prompts_ = list(extra["prompts"])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
