"""``zeroshot``: CLIP prompts, no training (Ueki 2024).

Each sampled frame's embedding is compared (cosine) with the embeddings of *normal* and
*anomaly* prompts; a softmax with temperature over all prompts gives a distribution, and the
anomaly score is the probability mass on the anomaly prompts. Each prompt is ensembled over
templates (mean of the normalised text embeddings, renormalised). With anomaly classes (the
manifest's, when ``classes`` is true), per-class probabilities are p(A) * p(c | A), with
p(c | A) a softmax over one ensembled embedding per class, as in AnomalyCLIP's
p_{A,c} = p_A p(c|A). The explanation of each frame is its best-matching prompt.

Prompts come from a *prompt file* (``prompts=``: a shipped set's name or a JSON path; see
:func:`vadpipe.heads.prompts.load_prompt_set` for the schema). Shipped sets:

* ``ueki-generic`` (default): the paper's three anomaly prompts ('anomaly behavior',
  'dangerous activity', 'dangerous behavior');
* ``ucf-crime``, ``xd-violence``: per-class prompts for the 13 UCF-Crime and 6 XD-Violence
  classes, spelled as vadpipe's manifest builders spell them;
* ``dong-categories``: category-level descriptions (Dong 2024 Table 1 and the same style
  for the other classes); ``dong-situations``: normal / abnormal situations (Table 2).

Defaults and choices: the paper scores with one anomaly prompt and gives no normal
counterpart, so ``ueki-generic`` pairs its three with three neutral normal prompts, and the
temperature is CLIP's own 0.01 (logit scale 100). Templates: the bare prompt and
"a video from a CCTV camera of a {}". A file with per-class prompts and no ``anomaly`` list
uses its class prompts as the anomaly prompts. A manifest class finds its prompts in
``class_prompts`` (overrides), then the prompt file, then each of ``class_sets``, else its
name with CamelCase split ("RoadAccidents" -> "road accidents"). Text embeddings are
computed at fit time with the cache's own open_clip model (CLIP or CoCa) and stored with
the head; scoring needs no text model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, Scores
from vadpipe.heads.prompts import DEFAULT_CLASS_SETS, class_texts, load_prompt_set
from vadpipe.heads.training import l2_normalize
from vadpipe.texts import check_template

DEFAULT_PROMPT_SET = "ueki-generic"
DEFAULT_TEMPLATES = ("{}", "a video from a CCTV camera of a {}")


@dataclass
class ZeroshotConfig:
    prompts: str = DEFAULT_PROMPT_SET  # shipped prompt set name or a JSON file
    normal_prompts: list[str] | None = None  # overrides the file's
    anomaly_prompts: list[str] | None = None  # overrides the file's
    templates: list[str] | None = None  # None: the file's, else DEFAULT_TEMPLATES
    temperature: float = 0.01
    classes: bool = True  # per-class probabilities for the manifest's anomaly classes
    class_prompts: dict[str, str | list[str]] = field(default_factory=dict)  # class -> prompt(s)
    class_sets: list[str] = field(default_factory=lambda: list(DEFAULT_CLASS_SETS))

    def __post_init__(self):
        for key in ("normal_prompts", "anomaly_prompts"):
            value = getattr(self, key)
            if value is not None and (not value or not all(isinstance(p, str) and p.strip() for p in value)):
                raise VadpipeError(f"zeroshot: {key} must be a non-empty list of non-empty strings")
        for t in self.templates or ():
            check_template(t, where="zeroshot: ")
        if self.temperature <= 0:
            raise VadpipeError(f"zeroshot: temperature must be > 0, got {self.temperature}")


class ZeroshotHead(Head):
    name = "zeroshot"
    Config = ZeroshotConfig

    def _fit(self, cache, manifest) -> None:
        from vadpipe.heads.text import embed_groups, embed_prompts, text_encoder_for

        cfg = self.config
        pset = load_prompt_set(cfg.prompts)
        normal = list(cfg.normal_prompts or pset.normal)
        anomaly = list(cfg.anomaly_prompts or pset.anomaly_prompts())
        for kind, texts in (("normal", normal), ("anomaly", anomaly)):
            if not texts:
                raise VadpipeError(f"{pset.path}: no {kind} prompts (add some, or pass {kind}_prompts)")
        self.templates_ = list(cfg.templates or pset.templates or DEFAULT_TEMPLATES)
        encoder = text_encoder_for(cache, self.encoder)
        self.prompts_ = normal + anomaly
        self.is_anomaly_ = np.array([0] * len(normal) + [1] * len(anomaly), dtype=np.uint8)
        self.prompt_emb_ = embed_prompts(encoder, self.prompts_, tuple(self.templates_))  # (P D)
        self.class_names_ = tuple(manifest.anomaly_classes) if (cfg.classes and manifest is not None) else ()
        self.class_texts_ = class_texts(self.class_names_, cfg.class_prompts, pset, cfg.class_sets)
        self.class_emb_ = embed_groups(encoder, self.class_texts_, self.templates_) if self.class_names_ else None

    def _score_video(self, video) -> Scores:
        f = l2_normalize(video.emb.astype(np.float32))  # (T D)
        probs = softmax(f @ self.prompt_emb_.T / self.config.temperature)  # (T P)
        p_anomaly = probs[:, self.is_anomaly_ == 1].sum(axis=1)  # (T)
        explanation = np.array(self.prompts_, dtype=object)[probs.argmax(axis=1)]
        class_probs = None
        if self.class_emb_ is not None:
            p_class = softmax(f @ self.class_emb_.T / self.config.temperature)  # (T C)
            class_probs = (p_anomaly[:, None] * p_class).astype(np.float32)
        return Scores(
            video.frame_index,
            p_anomaly.astype(np.float32),
            video.num_frames,
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
        return {"prompts": self.prompts_, "templates": self.templates_, "class_texts": [list(t) for t in self.class_texts_]}

    def _load_state(self, state, extra) -> None:
        self.prompt_emb_ = state["prompt_emb"]
        self.is_anomaly_ = state["is_anomaly"]
        self.class_emb_ = state.get("class_emb")
        self.prompts_ = list(extra["prompts"])
        self.templates_ = extra.get("templates")
        self.class_texts_ = [tuple(t) for t in extra.get("class_texts", [])]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
