"""``zeroshot``: CLIP prompts, no training (Ueki 2024).

Two scoring modes (``mode``):

* ``cosine`` (default) -- Ueki's setting (Sec. III, Table I): each sampled frame's score is
  the cosine similarity of its image embedding to the anomaly prompt's text embedding, or
  the largest over a list of prompts. No normal prompts (giving ``normal_prompts`` is an
  error), no template unless asked (``templates``, or a prompt file's ``templates``), no
  temperature. Table I's rows are one prompt each: ``anomaly_prompts=["dangerous
  behavior"]`` (the ``ueki-table1-*`` recipes). The paper is silent on how a frame is
  compared with a text; the cosine is the literal reading and what CLIP's logits are before
  their scale. With anomaly classes, each class's score is the frame's cosine to that
  class's text -- what Ueki's Table II ranks ("inputting specific text to define the
  anomalies of interest"); ``vadpipe evaluate`` reports its per-class AUC on that class's
  videos plus the normal ones (:mod:`vadpipe.evaluate.recognition`).
* ``softmax`` -- vadpipe's own variant, not Ueki's: a softmax at ``temperature`` (CLIP's own
  0.01) over normal *and* anomaly prompts, anomaly score = the probability mass on the
  anomaly prompts; per-class probabilities p(A) * p(c | A), with p(c | A) a softmax over the
  classes (AnomalyCLIP's p_{A,c} = p_A p(c|A)). Needs normal prompts (the prompt file's or
  ``normal_prompts``); ``ueki-generic`` carries three neutral ones for it ('normal
  behavior', 'ordinary activity', 'safe behavior': vadpipe's, the paper gives none).
  Templates default to "{}" and "a video from a CCTV camera of a {}" (vadpipe's).

A prompt is ensembled over its templates (mean of the normalised text embeddings,
renormalised; one template = the normalised embedding itself). The explanation of each
frame is its best-matching prompt.

Prompts come from a *prompt file* (``prompts=``: a shipped set's name or a JSON path; see
:func:`vadpipe.heads.prompts.load_prompt_set` for the schema). Shipped sets:

* ``ueki-generic`` (default): the paper's three anomaly prompts ('anomaly behavior',
  'dangerous activity', 'dangerous behavior'), scored as their maximum in cosine mode;
* ``ucf-crime``, ``xd-violence``: per-class prompts for the 13 UCF-Crime and 6 XD-Violence
  classes, spelled as vadpipe's manifest builders spell them (vadpipe's texts);
* ``dong-categories``: category-level descriptions (Dong 2024 Table 1 and the same style
  for the other classes); ``dong-situations``: normal / abnormal situations (Table 2).

A file with per-class prompts and no ``anomaly`` list uses its class prompts as the anomaly
prompts. A manifest class finds its prompts in ``class_prompts`` (overrides), then the
prompt file, then each of ``class_sets``, else its name with CamelCase split
("RoadAccidents" -> "road accidents"; ``class_sets=[]`` gives Ueki's plain class names).
Text embeddings are computed at fit time with the cache's own open_clip model (CLIP or
CoCa) and stored with the head; scoring needs no text model. Frames are read as unit rows
(the head's ``geometry``), so raw and normalised caches give the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, ObjectUnits, Scores
from vadpipe.heads.prompts import DEFAULT_CLASS_SETS, class_texts, load_prompt_set
from vadpipe.heads.training import l2_normalize
from vadpipe.texts import check_template

DEFAULT_PROMPT_SET = "ueki-generic"
DEFAULT_TEMPLATES = ("{}", "a video from a CCTV camera of a {}")  # softmax mode's (vadpipe's)
MODES = ("cosine", "softmax")


@dataclass
class ZeroshotConfig(ObjectUnits):
    mode: str = "cosine"  # cosine: Ueki's score; softmax: vadpipe's normal-vs-anomaly variant
    prompts: str = DEFAULT_PROMPT_SET  # shipped prompt set name or a JSON file
    normal_prompts: list[str] | None = None  # overrides the file's
    anomaly_prompts: list[str] | None = None  # overrides the file's
    templates: list[str] | None = None  # None: the file's, else none (cosine) / DEFAULT_TEMPLATES (softmax)
    temperature: float = 0.01  # softmax mode only
    classes: bool = True  # per-class probabilities for the manifest's anomaly classes
    class_prompts: dict[str, str | list[str]] = field(default_factory=dict)  # class -> prompt(s)
    class_sets: list[str] = field(default_factory=lambda: list(DEFAULT_CLASS_SETS))

    def __post_init__(self):
        if self.mode not in MODES:
            raise VadpipeError(f"zeroshot: unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.mode == "cosine" and self.normal_prompts is not None:
            raise VadpipeError("zeroshot: mode=cosine scores by the anomaly prompts alone; normal_prompts go "
                               "with mode=softmax")
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
    object_mode = "rows"  # unit=object: each object's crop against the prompts

    def _object_floor(self, cache, manifest) -> float:
        """A frame with no object: the lowest score of the scale (cosine -1, probability 0);
        zero-shot has no training videos to take it from."""
        return -1.0 if self.config.mode == "cosine" else 0.0

    def _fit(self, cache, manifest) -> None:
        from vadpipe.heads.text import embed_groups, embed_prompts, text_encoder_for

        cfg = self.config
        pset = load_prompt_set(cfg.prompts)
        softmax_mode = cfg.mode == "softmax"
        normal = list(cfg.normal_prompts or pset.normal) if softmax_mode else []
        anomaly = list(cfg.anomaly_prompts or pset.anomaly_prompts())
        for kind, texts in (("normal", normal), ("anomaly", anomaly)):
            if not texts and (kind == "anomaly" or softmax_mode):
                raise VadpipeError(f"{pset.path}: no {kind} prompts (add some, or pass {kind}_prompts)")
        fallback = DEFAULT_TEMPLATES if softmax_mode else ("{}",)
        self.templates_ = list(cfg.templates or pset.templates or fallback)
        encoder = text_encoder_for(cache, self.encoder)
        self.prompts_ = normal + anomaly
        self.is_anomaly_ = np.array([0] * len(normal) + [1] * len(anomaly), dtype=np.uint8)
        self.prompt_emb_ = embed_prompts(encoder, self.prompts_, tuple(self.templates_))  # (P D)
        self.class_names_ = tuple(manifest.anomaly_classes) if (cfg.classes and manifest is not None) else ()
        self.class_texts_ = class_texts(self.class_names_, cfg.class_prompts, pset, cfg.class_sets)
        self.class_emb_ = embed_groups(encoder, self.class_texts_, self.templates_) if self.class_names_ else None

    def _score_video(self, video) -> Scores:
        f = l2_normalize(video.emb.astype(np.float32))  # (T D) unit rows, renormalised in float32
        cosine = f @ self.prompt_emb_.T  # (T P)
        class_probs = None
        if self.config.mode == "cosine":  # Ueki: the best anomaly prompt's cosine; classes: their cosines
            anomaly = np.flatnonzero(self.is_anomaly_ == 1)
            score = cosine[:, anomaly].max(axis=1)
            best = anomaly[cosine[:, anomaly].argmax(axis=1)]
            if self.class_emb_ is not None:
                class_probs = (f @ self.class_emb_.T).astype(np.float32)  # (T C)
        else:
            probs = softmax(cosine / self.config.temperature)  # (T P)
            score = probs[:, self.is_anomaly_ == 1].sum(axis=1)  # (T)
            best = probs.argmax(axis=1)
            if self.class_emb_ is not None:
                p_class = softmax(f @ self.class_emb_.T / self.config.temperature)  # (T C)
                class_probs = (score[:, None] * p_class).astype(np.float32)
        explanation = np.array(self.prompts_, dtype=object)[best]
        return Scores(
            video.frame_index,
            score.astype(np.float32),
            video.num_frames,
            class_probs=class_probs,
            class_names=self.class_names_,
            explanation=explanation,
        )

    @classmethod
    def _upgrade_v03(cls, meta):
        """Before 0.4 there was only the softmax mode."""
        meta = super()._upgrade_v03(meta)
        return {**meta, "config": {"mode": "softmax", **meta.get("config", {})}}

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
