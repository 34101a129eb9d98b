"""The head interface: the plumbing every head shares, so a head writes only its method.

Every head follows the scikit-learn estimator contract: ``__init__`` stores keyword
hyper-parameters in a config dataclass (the paper's defaults); ``fit(cache, manifest)``
learns from the feature cache and returns ``self``; learned state lives in attributes
ending in ``_``; using an unfitted head raises :class:`NotFittedError`.
``score_videos(cache, video_ids)`` returns one anomaly score **per sampled frame** (not one
number, unlike scikit-learn's ``score``) as a :class:`Scores` per video.

What the base class owns:

* **inputs** -- a head declares what it reads (``inputs = ("emb",)`` or ``("emb",
  "captions")``); the base resolves the cache keys, checks them, and hands each video's
  inputs to ``_score_video(video)`` as a :class:`~vadpipe.heads.data.Video`. Training reads
  a :meth:`training_set` (select -> require -> read once).
* **provenance** -- ``fit`` records the recipe of every input group it read: the encoder's
  (model, weights, dim, preprocessing, sampling) and, for caption heads, the captioner's
  (model, questions, prompt, generation); scoring a cache whose group under the same key has
  another recipe is refused with a message naming the differing field (a temporal head
  scored at another stride would give silently wrong numbers).
* **geometry** -- featurize stores the model's raw image features (recipe ``normalised:
  false``); caches of vadpipe 0.2 hold unit rows (``normalised: true``). A head says how it
  reads them (``geometry``): ``"unit"`` (default) -- rows scaled to unit length on read, so a
  raw group and a 0.2 group of the same frames give the same numbers and either may be
  scored with a run trained on the other; ``"stored"`` -- as stored (the head's own choice;
  the run then scores only groups of the same geometry); ``"raw"`` -- the method needs the
  model's own norms (AnomalyCLIP's recentring), and a normalised group is refused with one
  line.
* **presets** -- a config with ``PRESETS`` takes ``preset=NAME``: a paper's per-dataset
  settings, under the parameters given beside it.
* **run-time options** -- ``device`` (``auto``: cuda when present) and ``score_batch_size``
  are given when a head is built or loaded, never saved: a run trained on a GPU scores on a
  CPU.
* **saving** -- ``config.json`` (head name, hyper-parameters, encoder key and recipe, class
  names, fitted metadata, vadpipe version) + ``weights.safetensors`` (the arrays of
  ``_state()``; for heads built on torch modules, the modules' own ``state_dict``). Nothing
  is pickled. Run folders of vadpipe 0.2 and 0.3 load too (:func:`load_head` and each head's
  ``_upgrade_v02`` / ``_upgrade_v03`` bring them to today's form).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from vadpipe import __version__
from vadpipe.cache import RECIPE_FIELDS, recipe_difference
from vadpipe.errors import VadpipeError, one_line, output_dir, read_json
from vadpipe.params import coerce
from vadpipe.heads.data import INPUTS, TrainingSet, Video, needs_normalising, read_video, resolve_caption_key
from vadpipe.scores import Scores

RUNTIME_OPTIONS = ("device", "score_batch_size")  # given at run time, never saved
GEOMETRIES = ("unit", "stored", "raw")  # how a head reads image rows (module docstring)


class NotFittedError(VadpipeError):
    pass


class Head:
    """Base class. Subclasses set ``name``, ``Config`` (a dataclass with defaults), ``inputs``,
    and implement ``_fit``, ``_score_video``, ``_state`` and ``_load_state``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    inputs: ClassVar[tuple[str, ...]] = ("emb",)
    geometry: ClassVar[str] = "unit"  # one of GEOMETRIES; a head may make it a property of its config

    def __init__(self, encoder: str | None = None, *, device: str = "auto", score_batch_size: int = 16, **params):
        names = {f.name for f in fields(self.Config)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise VadpipeError(
                f"head {self.name!r}: unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))})"
            )
        params = apply_preset(self.name, self.Config, params)
        params = {k: coerce_param(self.name, self.Config, k, v) for k, v in params.items()}
        try:
            self.config = self.Config(**params)
        except (TypeError, ValueError) as exc:
            raise VadpipeError(f"head {self.name!r}: bad parameter ({one_line(exc)})") from None
        if not isinstance(device, str) or not device:
            raise VadpipeError(f"head {self.name!r}: device must be a name (auto, cpu, cuda, cuda:1 ...)")
        if not isinstance(score_batch_size, int) or score_batch_size < 1:
            raise VadpipeError(f"head {self.name!r}: score_batch_size must be an integer >= 1")
        self.device, self.score_batch_size = device, score_batch_size
        self.encoder = encoder  # the cache encoder key the head reads; set by fit if None

    # ------------------------------------------------------------ public API
    def fit(self, cache, manifest) -> "Head":
        """Learn from the training videos of ``manifest`` in ``cache``; returns ``self``."""
        self.encoder = self._resolve_encoder(cache)
        self._check_geometry(cache)
        self.caption_key_ = None
        if "captions" in self.inputs:
            choice = getattr(self.config, "caption_encoder", "auto")
            self.caption_key_ = resolve_caption_key(cache, self.encoder, choice, self.name)
        self.input_recipes_ = {name: _recipe_of(cache.recipe(key), name) for name, key in self.sources().items()}
        self.class_names_: tuple[str, ...] = ()
        self._fit(cache, manifest)
        self.fitted_ = True
        return self

    def score_videos(self, cache, video_ids) -> dict[str, Scores]:
        """Per-sampled-frame anomaly scores of each video (a dict keyed by video id)."""
        self._check_fitted()
        if self.encoder not in cache.encoders():
            raise VadpipeError(
                f"head {self.name!r} was trained on encoder {self.encoder!r}, but cache "
                f"{cache.path} has only: {', '.join(cache.encoders()) or 'none'}"
            )
        self._check_recipe(cache)
        self._check_geometry(cache)
        sources = self.sources()
        video_ids = list(video_ids)
        for key in sources.values():
            cache.require_videos(key, video_ids)
        normalise = needs_normalising(cache, self.encoder, self.geometry, self.input_recipes_.get("emb"))
        return {vid: self._score_video(read_video(cache, sources, vid, normalise)) for vid in video_ids}

    def sources(self) -> dict[str, str]:
        """The cache key of each input the head reads: ``{"emb": key[, "captions": key]}``."""
        out = {"emb": self.encoder}
        if "captions" in self.inputs and getattr(self, "caption_key_", None):
            out["captions"] = self.caption_key_
        return out

    def training_set(self, cache, manifest, normal: bool | None = None) -> TrainingSet:
        """The manifest's training videos with this head's inputs (see :class:`TrainingSet`)."""
        return TrainingSet(cache, manifest, self.sources(), self.name, normal=normal,
                           normalise=needs_normalising(cache, self.encoder, self.geometry))

    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` into ``run_dir``."""
        from safetensors.numpy import save_file

        self._check_fitted()
        run_dir = output_dir(run_dir)
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        # each file written whole under a temporary name, then renamed (config last): a run folder
        # is never left with a half-written file, and a folder with config.json is complete
        save_file(state, str(run_dir / "weights.safetensors.tmp"))
        os.replace(run_dir / "weights.safetensors.tmp", run_dir / "weights.safetensors")
        meta = {
            "head": self.name,
            "config": asdict(self.config),
            "encoder": self.encoder,
            "encoder_recipe": self.input_recipes_["emb"],
            "caption_recipe": self.input_recipes_.get("captions"),
            "class_names": list(self.class_names_),
            "extra": self._extra_config(),
            "vadpipe_version": __version__,
        }
        (run_dir / "config.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(run_dir / "config.json.tmp", run_dir / "config.json")
        return run_dir

    # ------------------------------------------------------------ hooks
    def _fit(self, cache, manifest) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_video(self, video: Video) -> Scores:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_state(self, state: dict[str, np.ndarray], extra: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _extra_config(self) -> dict:
        """JSON-able fitted metadata that is not an array (e.g. prompt texts)."""
        return {}

    @classmethod
    def _upgrade_v02(cls, meta: dict, state: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """A vadpipe 0.2 run folder's config and weights in today's form (heads whose saved
        form changed override this)."""
        return meta, state

    @classmethod
    def _upgrade_v03(cls, meta: dict) -> dict:
        """A run folder of vadpipe < 0.4 in today's form: its encoder read unit rows through
        GELU towers (all vadpipe built then), and a head's parameters added in 0.4 take the
        values that reproduce how it was trained (heads override to fill theirs)."""
        recipe = dict(meta.get("encoder_recipe") or {})
        recipe.setdefault("normalised", True)
        recipe.setdefault("quick_gelu", False)
        return {**meta, "encoder_recipe": recipe}

    # ------------------------------------------------------------ helpers
    def _device(self) -> str:
        from vadpipe.encoders.device import resolve_device

        return resolve_device(self.device)

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"head {self.name!r} is not fitted yet: call fit() or load a run")

    def _check_geometry(self, cache) -> None:
        """A ``raw`` head refuses a group of unit rows (their norms are gone)."""
        if self.geometry == "raw" and cache.recipe(self.encoder).get("normalised", True):
            raise VadpipeError(
                f"head {self.name!r} needs the encoder's raw features, but {self.encoder!r} in {cache.path} holds "
                "L2-normalised rows (a vadpipe 0.2 cache, or cache import --normalise); featurize again, or "
                "import without --normalise" + self._geometry_hint()
            )

    def _geometry_hint(self) -> str:
        """What a ``raw`` head offers for unit rows (e.g. a parameter), appended to the refusal."""
        return ""

    def _check_recipe(self, cache) -> None:
        """Refuse a cache whose group under a trained input's key has another recipe (a ``unit``
        head reads raw and unit groups alike, so their ``normalised`` may differ)."""
        for name, key in self.sources().items():
            trained = self.input_recipes_.get(name)
            if not trained or key not in cache.encoders():  # vadpipe 0.2 runs recorded only the key
                continue
            reads_either = self.geometry == "unit" or (self.geometry == "stored" and trained.get("normalised"))
            compared = tuple(f for f in trained if not (f == "normalised" and name == "emb" and reads_either))
            difference = recipe_difference(cache.recipe(key), trained, compared)
            if difference:
                field, have, want = difference
                raise VadpipeError(
                    f"head {self.name!r} was trained on {key!r} with {field}={want!r}, but cache "
                    f"{cache.path} has {field}={have!r} under that key; build the cache with the training recipe"
                )

    def _resolve_encoder(self, cache) -> str:
        """The image-encoder key the head reads: the one given, or the cache's only one."""
        from vadpipe.encoders.spec import canonical_key

        images = cache.image_encoders()
        if self.encoder is None:
            if len(images) != 1:
                raise VadpipeError(
                    f"cache {cache.path} has {len(images)} image encoders ({', '.join(images) or 'none'}); "
                    "name one with --encoder"
                )
            return images[0]
        key = self.encoder if self.encoder in cache.encoders() else canonical_key(self.encoder)
        if key not in cache.encoders():
            raise VadpipeError(
                f"cache {cache.path} has no encoder {key!r} (it has: {', '.join(cache.encoders()) or 'none'})"
            )
        if key not in images:
            raise VadpipeError(
                f"{key!r} in {cache.path} is a captioner, not an image encoder; pass the CLIP image encoder "
                f"it was built on ({cache.recipe(key).get('clip_key')!r}) as --encoder"
            )
        return key

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = set(getattr(cls, "inputs", ())) - set(INPUTS)
        if unknown:
            raise TypeError(f"{cls.__name__}.inputs: unknown input(s) {sorted(unknown)} (known: {INPUTS})")
        if isinstance(cls.__dict__.get("geometry"), str) and cls.geometry not in GEOMETRIES:
            raise TypeError(f"{cls.__name__}.geometry: {cls.geometry!r} is not one of {GEOMETRIES}")

    def __repr__(self) -> str:
        config = getattr(self, "config", None)  # None while __init__ refuses a parameter
        params = ", ".join(f"{k}={v!r}" for k, v in asdict(config).items()) if config is not None else ""
        return f"{type(self).__name__}({params})"


def apply_preset(head: str, config_cls, params: dict) -> dict:
    """``params`` over the values of the preset they name (``preset=``, for a config with
    ``PRESETS``: a paper's per-dataset settings); what is given explicitly wins."""
    name = params.get("preset")
    presets = getattr(config_cls, "PRESETS", None)
    if name is None or presets is None:
        return params
    if name not in presets:
        raise VadpipeError(f"head {head!r}: unknown preset {name!r} (known: {', '.join(presets)})")
    return {**presets[name], **params}


def coerce_param(head: str, config_cls, name: str, value):
    """A head's hyper-parameter checked against its annotated type (:func:`vadpipe.params.coerce`)."""
    return coerce(f"head {head!r}", config_cls, name, value)


def load_head(run_dir: str | Path, device: str = "auto", score_batch_size: int | None = None) -> Head:
    """Rebuild a saved head from ``run_dir`` (no pickle: JSON + safetensors).

    ``device`` and ``score_batch_size`` (default 16, or what a 0.2 run saved) are this run's
    choice, whatever the head was trained with. A run folder of vadpipe 0.2 is upgraded on the
    way in: run-time options it saved (``device``, ``score_batch_size``) are dropped,
    ``clipassist`` with ``mode="frame"`` becomes ``clipassist-frame``, and weights are renamed
    to today's module names; one of any vadpipe < 0.4 records the unit rows and GELU towers it
    read and the settings it trained with where 0.4 changed a default (``_upgrade_v03``).
    """
    from safetensors.numpy import load_file

    from vadpipe.heads.registry import get_head_class

    run_dir = Path(run_dir)
    cfg_path, w_path = run_dir / "config.json", run_dir / "weights.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise VadpipeError(f"{p}: not found (is {run_dir} a vadpipe run folder?)")
    meta = read_json(cfg_path)
    state = load_file(str(w_path))
    if _version(meta.get("vadpipe_version")) < (0, 3):
        saved = meta.get("config", {})
        if score_batch_size is None and isinstance(saved.get("score_batch_size"), int):
            score_batch_size = saved["score_batch_size"]
        meta = {**meta, "config": {k: v for k, v in saved.items() if k not in RUNTIME_OPTIONS}}
        if meta.get("head") == "clipassist" and meta["config"].get("mode") == "frame":
            meta["head"] = "clipassist-frame"
        meta, state = get_head_class(meta.get("head", "?"))._upgrade_v02(meta, state)
    if _version(meta.get("vadpipe_version")) < (0, 4):
        meta = get_head_class(meta.get("head", "?"))._upgrade_v03(meta)
    cls = get_head_class(meta.get("head", "?"))
    head = cls(encoder=meta.get("encoder"), device=device, score_batch_size=score_batch_size or 16,
               **meta.get("config", {}))
    head.class_names_ = tuple(meta.get("class_names", ()))
    head.input_recipes_ = {"emb": meta.get("encoder_recipe"), "captions": meta.get("caption_recipe")}
    head._load_state(state, meta.get("extra", {}))
    head.fitted_ = True
    return head


CAPTION_RECIPE_FIELDS = ("model", "questions", "prompt_template", "generation", "clip_key", "dim", "sampling")


def _recipe_of(recipe: dict, name: str) -> dict:
    """What a run records of an input group's recipe, to recognise the same group in another cache."""
    fields = RECIPE_FIELDS if name == "emb" else CAPTION_RECIPE_FIELDS
    return {k: recipe[k] for k in fields if k in recipe}


def _version(text) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0,)
