"""``zeroshot``: CLIP prompts, no training (Ueki 2024), and vadpipe's prompt files.

Each sampled frame's embedding is compared (cosine) with the embeddings of *normal* and
*anomaly* prompts; a softmax with temperature over all prompts gives a distribution, and the
anomaly score is the probability mass on the anomaly prompts. Each prompt is ensembled over
templates (mean of the normalised text embeddings, renormalised). With anomaly classes (the
manifest's, when ``classes`` is true), per-class probabilities are p(A) * p(c | A), with
p(c | A) a softmax over one ensembled embedding per class, as in AnomalyCLIP's
p_{A,c} = p_A p(c|A). The explanation of each frame is its best-matching prompt.

Prompts come from a *prompt file* (``prompts=``: a shipped set's name or a JSON path; see
:func:`load_prompt_set` for the schema). Shipped sets (``vadpipe/prompts/*.json``):

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

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.models.base import Head, Scores, register_head

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPT_SET = "ueki-generic"
UEKI_ANOMALY_PROMPTS = ("anomaly behavior", "dangerous activity", "dangerous behavior")
DEFAULT_NORMAL_PROMPTS = ("normal behavior", "ordinary activity", "safe behavior")
DEFAULT_TEMPLATES = ("{}", "a video from a CCTV camera of a {}")
DEFAULT_CLASS_SETS = ("ucf-crime", "xd-violence")
_FILE_KEYS = ("description", "source", "templates", "normal", "anomaly", "classes")


# ---------------------------------------------------------------- prompt files
@dataclass(frozen=True)
class PromptSet:
    """A validated prompt file."""

    name: str
    path: str
    normal: tuple[str, ...] = ()
    anomaly: tuple[str, ...] = ()
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    templates: tuple[str, ...] | None = None
    description: str = ""

    def anomaly_prompts(self) -> tuple[str, ...]:
        """The ``anomaly`` list, or, when there is none, every class prompt (in file order)."""
        if self.anomaly:
            return self.anomaly
        return tuple(dict.fromkeys(p for texts in self.classes.values() for p in texts))


def list_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with vadpipe."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.json"))


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A shipped set by name (``"ucf-crime"``) or a user JSON file, validated.

    Schema (every key optional, at least one of ``normal``, ``anomaly``, ``classes``)::

        {
          "description": "free text",
          "source": "where the prompts come from",
          "templates": ["{}", "a video from a CCTV camera of a {}"],
          "normal":  ["people walking", "..."],
          "anomaly": ["a fire", "..."],
          "classes": {"Fighting": ["people fighting", "a brawl"], "Arson": "fire setting"}
        }

    Prompts are non-empty strings; a class maps to a string or a list of strings; each
    template contains ``{}`` exactly once. A bad file is a one-line :class:`VadpipeError`
    that names the file and the problem.
    """
    path = _prompt_path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VadpipeError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VadpipeError(f"{path}: cannot read prompt file ({exc})") from None
    if not isinstance(data, dict):
        raise VadpipeError(f"{path}: a prompt file must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise VadpipeError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_FILE_KEYS)})")
    for key in ("description", "source"):
        if not isinstance(data.get(key, ""), str):
            raise VadpipeError(f"{path}: {key!r} must be a string")
    classes_raw = data.get("classes", {})
    if not isinstance(classes_raw, dict):
        raise VadpipeError(f"{path}: 'classes' must be an object mapping class name -> prompt(s)")
    classes = {}
    for cls, texts in classes_raw.items():
        if not cls.strip():
            raise VadpipeError(f"{path}: 'classes' has an empty class name")
        classes[cls] = _strings(path, f"classes.{cls}", [texts] if isinstance(texts, str) else texts)
    templates = data.get("templates")
    if templates is not None:
        templates = _strings(path, "templates", templates)
        check_templates(templates, where=f"{path}: ")
    prompts = PromptSet(
        name=path.stem,
        path=str(path),
        normal=_strings(path, "normal", data.get("normal", [])),
        anomaly=_strings(path, "anomaly", data.get("anomaly", [])),
        classes=classes,
        templates=templates,
        description=data.get("description", ""),
    )
    if not (prompts.normal or prompts.anomaly or prompts.classes):
        raise VadpipeError(f"{path}: no prompts (give at least one of 'normal', 'anomaly', 'classes')")
    return prompts


def _prompt_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text) and not text.endswith(".json"):
        path = PROMPTS_DIR / f"{text}.json"
        if not path.is_file():
            raise VadpipeError(
                f"unknown prompt set {text!r} (shipped: {', '.join(list_prompt_sets())}; or a path to a .json file)"
            )
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise VadpipeError(f"{path}: prompt file not found")
    return path


def _strings(path: Path, key: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise VadpipeError(f"{path}: {key!r} must be a list of non-empty strings")
    return tuple(" ".join(v.split()) for v in value)


def check_templates(templates, where: str = "") -> None:
    """Each template has exactly one ``{}`` placeholder (one-line error otherwise)."""
    for t in templates:
        if t.count("{}") != 1:
            raise VadpipeError(f"{where}template {t!r} must contain '{{}}' exactly once")


def class_prompt(name: str) -> str:
    """'RoadAccidents' -> 'road accidents'; 'car_accident' -> 'car accident'."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def class_texts(
    class_names, overrides: dict, prompt_set: PromptSet | None, class_sets=DEFAULT_CLASS_SETS
) -> list[tuple[str, ...]]:
    """Prompts of each class: ``overrides``, then ``prompt_set``, then ``class_sets``, then its name."""
    lookups = [prompt_set.classes] if prompt_set is not None else []
    lookups += [load_prompt_set(s).classes for s in class_sets]
    out = []
    unknown = sorted(set(overrides) - set(class_names))
    if unknown:
        raise VadpipeError(f"class prompts given for {', '.join(unknown)}, not classes of the manifest "
                           f"({', '.join(class_names) or 'none'})")
    for name in class_names:
        if name in overrides:
            texts = overrides[name]
            texts = (texts,) if isinstance(texts, str) else tuple(texts) if isinstance(texts, list) else ()
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise VadpipeError(f"class prompts of {name!r} must be a non-empty string or list of them, "
                                   f"got {overrides[name]!r}")
            out.append(texts)
            continue
        out.append(next((lk[name] for lk in lookups if name in lk), (class_prompt(name),)))
    return out


def embed_groups(encoder, groups, templates) -> np.ndarray:
    """One ensembled embedding per group of prompts (all prompts x templates): ``float32[G, D]``."""
    from vadpipe.models.text import embed_prompts

    flat = [p for g in groups for p in g]
    emb = embed_prompts(encoder, flat, tuple(templates))  # (P D)
    starts = np.cumsum([0] + [len(g) for g in groups])
    out = np.stack([emb[a:b].mean(axis=0) for a, b in zip(starts[:-1], starts[1:])])  # (G D)
    return (out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


# ---------------------------------------------------------------- the head
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
        if self.templates is not None:
            check_templates(self.templates, where="zeroshot: ")
        if self.temperature <= 0:
            raise VadpipeError(f"zeroshot: temperature must be > 0, got {self.temperature}")


@register_head("zeroshot")
class ZeroshotHead(Head):
    Config = ZeroshotConfig

    def _fit(self, cache, manifest) -> None:
        from vadpipe.models.text import embed_prompts, text_encoder_for

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

    def _score_video(self, features) -> Scores:
        f = features.emb.astype(np.float32)  # (T D)
        f /= np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)
        probs = softmax(f @ self.prompt_emb_.T / self.config.temperature)  # (T P)
        p_anomaly = probs[:, self.is_anomaly_ == 1].sum(axis=1)  # (T)
        explanation = np.array(self.prompts_, dtype=object)[probs.argmax(axis=1)]
        class_probs = None
        if self.class_emb_ is not None:
            p_class = softmax(f @ self.class_emb_.T / self.config.temperature)  # (T C)
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
        return {
            "prompts": self.prompts_,
            "templates": getattr(self, "templates_", None),
            "class_texts": [list(t) for t in getattr(self, "class_texts_", [])],
        }

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
