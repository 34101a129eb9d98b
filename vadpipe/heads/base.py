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
* **objects** -- a head whose config has ``unit`` scores, with ``unit=object``, the objects
  of an objects group (``objects=auto|KEY|DETECTOR``) instead of whole frames: its method runs
  on each object's crop embedding -- all rows at once (``object_mode = "rows"``) or one track
  at a time as a sequence (``"tracks"``) -- and a sampled frame scores its most anomalous
  object (Dong: "a frame is abnormal if any object is"; VLAVAD's max over objects). A frame
  where nothing was detected gets the head's floor: the lowest object score of the normal
  training videos (nothing there is as normal as the most normal object seen), or a head's
  own (``_object_floor``). The scores keep every object's score, track and box, and a frame's
  explanation names its object's track. A caption head reads the answers about the objects'
  crops (a captioner group built on the objects group), not the frames'.
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from vadpipe import __version__
from vadpipe.cache import RECIPE_FIELDS, recipe_difference
from vadpipe.encoders.device import capped_threads
from vadpipe.errors import VadpipeError, one_line, output_dir, read_json
from vadpipe.params import coerce
from vadpipe.heads.data import (
    INPUTS,
    UNITS,
    TrainingSet,
    Video,
    needs_normalising,
    object_units,
    read_video,
    resolve_caption_key,
    resolve_objects_key,
)
from vadpipe.scores import ObjectScores, Scores

RUNTIME_OPTIONS = ("device", "score_batch_size")  # given at run time, never saved
GEOMETRIES = ("unit", "stored", "raw")  # how a head reads image rows (module docstring)


class NotFittedError(VadpipeError):
    pass


@dataclass
class ObjectUnits:
    """Config fields of a head that can score objects (a base of its config dataclass)."""

    unit: str = "frame"  # frame | object: score the objects in the frames (module docstring)
    objects: str = "auto"  # unit=object: the objects group -- auto (the only one), a key, or a detector name


class Head:
    """Base class. Subclasses set ``name``, ``Config`` (a dataclass with defaults), ``inputs``,
    and implement ``_fit``, ``_score_video``, ``_state`` and ``_load_state``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    inputs: ClassVar[tuple[str, ...]] = ("emb",)
    geometry: ClassVar[str] = "unit"  # one of GEOMETRIES; a head may make it a property of its config
    object_mode: ClassVar[str | None] = None  # "rows" | "tracks": how unit=object runs (module docstring)

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
        if self.unit not in UNITS:
            raise VadpipeError(f"head {self.name!r}: unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.unit == "object" and self.object_mode is None:
            raise VadpipeError(f"head {self.name!r} does not score objects (unit=object)")

    @property
    def unit(self) -> str:
        """``frame`` (sampled frames) or ``object`` (the objects in them), for heads whose config has ``unit``."""
        return getattr(self.config, "unit", "frame")

    # ------------------------------------------------------------ public API
    def fit(self, cache, manifest) -> "Head":
        """Learn from the training videos of ``manifest`` in ``cache``; returns ``self``
        (torch's threads held to the cores the job may use: :func:`capped_threads`)."""
        with capped_threads():
            return self._fit_all(cache, manifest)

    def _fit_all(self, cache, manifest) -> "Head":
        self.encoder = self._resolve_encoder(cache)
        self._check_geometry(cache)
        self.caption_key_ = None
        if "captions" in self.inputs:
            choice = getattr(self.config, "caption_encoder", "auto")
            self.caption_key_ = resolve_caption_key(cache, self.encoder, choice, self.name)
        self.objects_key_ = None
        if self.unit == "object":
            self.objects_key_ = resolve_objects_key(cache, self.encoder, getattr(self.config, "objects", "auto"),
                                                    self.name)
            if "captions" in self.inputs:  # answers about the objects' crops, if the cache has them
                choice = getattr(self.config, "caption_encoder", "auto")
                self.caption_key_ = resolve_caption_key(cache, self.objects_key_, choice, self.name)
        self.input_recipes_ = {name: _recipe_of(cache.recipe(key), name) for name, key in self.sources().items()}
        self.class_names_: tuple[str, ...] = ()
        self._fit(cache, manifest)
        if self.unit == "object":
            self.object_floor_ = float(self._object_floor(cache, manifest))
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
        score = self._score_objects if self.unit == "object" else self._score_video
        with capped_threads():
            return {vid: score(read_video(cache, sources, vid, normalise)) for vid in video_ids}

    def sources(self) -> dict[str, str]:
        """The cache key of each input the head reads: ``{"emb": key[, "captions": key][, "objects": key]}``."""
        out = {"emb": self.encoder}
        if "captions" in self.inputs and getattr(self, "caption_key_", None):
            out["captions"] = self.caption_key_
        if getattr(self, "objects_key_", None):
            out["objects"] = self.objects_key_
        return out

    def training_set(self, cache, manifest, normal: bool | None = None, stored: bool = False) -> TrainingSet:
        """The manifest's training videos with this head's inputs (see :class:`TrainingSet`);
        with ``unit=object``, their objects as the head's units (:func:`object_units`);
        ``stored``: rows as the cache holds them, the head normalising what it keeps (:class:`StoredRows`)."""
        return TrainingSet(cache, manifest, self.sources(), self.name, normal=normal,
                           normalise=needs_normalising(cache, self.encoder, self.geometry),
                           units=self.object_mode if self.unit == "object" else None, stored=stored)

    # ------------------------------------------------------------ objects
    def _object_row_scores(self, video: Video) -> Scores:
        """Every object row of ``video`` scored by the head's method, unit by unit (rows order)."""
        obj = video.objects
        n = len(obj.frame_index)
        score = np.zeros(n, dtype=np.float64)
        explanation = None
        class_probs = None
        for rows, unit in object_units(video, self.object_mode) if n else []:
            s = self._score_object_unit(unit)
            score[rows] = s.score
            if s.explanation is not None:
                explanation = np.empty(n, dtype=object) if explanation is None else explanation
                explanation[rows] = s.explanation
            if s.class_probs is not None:
                class_probs = np.zeros((n, s.class_probs.shape[1])) if class_probs is None else class_probs
                class_probs[rows] = s.class_probs
        return Scores(obj.frame_index, score, video.num_frames, class_probs, self.class_names_, explanation)

    def _score_object_unit(self, unit: Video) -> Scores:
        """One unit of objects (:func:`object_units`) scored row by row: the head's own method by
        default; a head whose frame scores pass a step along the frames (a vote, a smoothing)
        leaves it out here and applies it to the frame scores in ``_score_objects``."""
        return self._score_video(unit)

    def _score_objects(self, video: Video) -> Scores:
        """``unit=object``: each sampled frame scores its most anomalous object; a frame with
        none gets ``object_floor_``; class probabilities are the max over the frame's objects."""
        rows = self._object_row_scores(video)
        return self._objects_result(video, rows, self._max_per_frame(video, rows.score))

    def _max_per_frame(self, video: Video, values: np.ndarray) -> np.ndarray:
        """The largest of the object rows' ``values`` on each sampled frame (``object_floor_`` where none)."""
        T = len(video.frame_index)
        score = np.full((T,) + values.shape[1:], self.object_floor_, dtype=np.float64)
        np.maximum.at(score, self._object_frames(video), values)
        return score

    def _object_frames(self, video: Video) -> np.ndarray:
        """The position among the sampled frames of each object row's frame."""
        obj = video.objects
        pos = np.searchsorted(video.frame_index, obj.frame_index)
        if len(pos) and (pos.max() >= len(video.frame_index) or not np.array_equal(video.frame_index[pos],
                                                                                   obj.frame_index)):
            raise VadpipeError(f"{obj.key}: objects of {video.video_id!r} are not on the frames of {self.encoder!r}")
        return pos

    def _objects_result(self, video: Video, rows: Scores, score: np.ndarray) -> Scores:
        """The frame ``score`` with the object rows behind it: each frame's explanation names its
        best row's object, class probabilities are the max over a frame's objects."""
        obj = video.objects
        T = len(video.frame_index)
        pos = self._object_frames(video)
        order = np.lexsort((rows.score, pos))  # by frame, then score: the last row of a frame is its best
        best = np.full(T, -1)
        best[pos[order]] = order
        where = [f"track {t}" if t >= 0 else "untracked object" for t in obj.track_id.tolist()]
        if rows.explanation is not None:
            where = [f"{e} ({w})" for e, w in zip(rows.explanation, where)]
        explanation = np.array(["no object detected" if b < 0 else where[b] for b in best], dtype=object)
        class_probs = None if rows.class_probs is None else self._max_per_frame(video, rows.class_probs)
        objects = ObjectScores(obj.frame_index, obj.track_id, obj.box, rows.score,
                               None if rows.explanation is None else rows.explanation)
        return Scores(video.frame_index, score, video.num_frames, class_probs, self.class_names_, explanation,
                      objects)

    def _object_floor(self, cache, manifest) -> float:
        """The score of a frame with no object: the lowest object score over the normal
        training videos (heads without training videos override this)."""
        lowest = None
        for video in TrainingSet(cache, manifest, self.sources(), self.name, normal=True,
                                 normalise=needs_normalising(cache, self.encoder, self.geometry)).iter_videos():
            if len(video.objects.frame_index):
                low = float(self._object_row_scores(video).score.min())
                lowest = low if lowest is None else min(lowest, low)
        if lowest is None:
            raise VadpipeError(f"{self.name}: unit=object found no object in the normal training videos "
                               f"under {self.objects_key_!r}")
        return lowest

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
            "objects": None if self.unit != "object" else {
                "key": self.objects_key_, "recipe": self.input_recipes_.get("objects"), "floor": self.object_floor_},
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
    objects = meta.get("objects") or {}
    head.objects_key_ = objects.get("key")
    if head.objects_key_:
        head.input_recipes_["objects"] = objects.get("recipe")
        head.object_floor_ = float(objects["floor"])
    head._load_state(state, meta.get("extra", {}))
    head.fitted_ = True
    return head


CAPTION_RECIPE_FIELDS = ("model", "questions", "prompt_template", "generation", "clip_key", "dim", "sampling")
OBJECTS_RECIPE_FIELDS = RECIPE_FIELDS + ("clip_key",)


def _recipe_of(recipe: dict, name: str) -> dict:
    """What a run records of an input group's recipe, to recognise the same group in another cache."""
    fields = {"emb": RECIPE_FIELDS, "objects": OBJECTS_RECIPE_FIELDS}.get(name, CAPTION_RECIPE_FIELDS)
    return {k: recipe[k] for k in fields if k in recipe}


def _version(text) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0,)
