"""The head interface, its registry, and save/load.

Every head follows the scikit-learn estimator contract: ``__init__`` stores keyword
hyper-parameters in a config dataclass (the paper's defaults); ``fit(cache, manifest)``
learns from the feature cache and returns ``self``; learned state lives in attributes
ending in ``_``; using an unfitted head raises :class:`NotFittedError`.
``score_videos(cache, video_ids)`` returns one anomaly score **per sampled frame** (not one
number, unlike scikit-learn's ``score``) as a :class:`Scores` per video.

A head is saved as ``config.json`` (head name, hyper-parameters, encoder key, class names,
vadpipe version) + ``weights.safetensors`` (its fitted arrays); nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from vadpipe import __version__
from vadpipe.errors import VadpipeError, output_dir
from vadpipe.scores import Scores

_REGISTRY: dict[str, type["Head"]] = {}


class NotFittedError(VadpipeError):
    pass


def register_head(name: str):
    """Class decorator: make a head available as ``get_head(name)``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"head {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_heads() -> list[str]:
    _import_builtin_heads()
    return sorted(_REGISTRY)


def get_head_class(name: str) -> type["Head"]:
    _import_builtin_heads()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VadpipeError(f"unknown head {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def get_head(name: str, **params) -> "Head":
    return get_head_class(name)(**params)


def _import_builtin_heads() -> None:
    from vadpipe.models import anomalyclip, clipassist, kmeans, prototype, s3m, zeroshot  # noqa: F401  (registration side effect)


class Head:
    """Base class. Subclasses set ``Config`` (a dataclass with defaults) and implement
    ``_fit``, ``_score_video``, ``_state`` and ``_load_state``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]

    def __init__(self, encoder: str | None = None, **params):
        names = {f.name for f in fields(self.Config)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise VadpipeError(
                f"head {self.name!r}: unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))})"
            )
        params = {k: _coerce_param(self.name, self.Config, k, v) for k, v in params.items()}
        try:
            self.config = self.Config(**params)
        except (TypeError, ValueError) as exc:
            raise VadpipeError(f"head {self.name!r}: bad parameter ({' '.join(str(exc).split())})") from None
        self.encoder = encoder  # the cache encoder key the head reads; set by fit if None
        self.class_names_: tuple[str, ...] = ()
        self.fitted_ = False

    # ------------------------------------------------------------ public API
    def fit(self, cache, manifest) -> "Head":
        """Learn from the training videos of ``manifest`` in ``cache``; returns ``self``."""
        self.encoder = self._resolve_encoder(cache)
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
        video_ids = list(video_ids)
        cache.require_videos(self.encoder, video_ids)
        return {f.video_id: self._score_video(f) for f in cache.iter_videos(self.encoder, video_ids)}

    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` into ``run_dir``."""
        from safetensors.numpy import save_file

        self._check_fitted()
        run_dir = output_dir(run_dir)
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(state, str(run_dir / "weights.safetensors"))
        meta = {
            "head": self.name,
            "config": asdict(self.config),
            "encoder": self.encoder,
            "class_names": list(self.class_names_),
            "extra": self._extra_config(),
            "vadpipe_version": __version__,
        }
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path) -> "Head":
        return load_head(run_dir)

    # ------------------------------------------------------------ hooks
    def _fit(self, cache, manifest) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_video(self, features) -> Scores:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_state(self, state: dict[str, np.ndarray], extra: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _extra_config(self) -> dict:
        """JSON-able fitted metadata that is not an array (e.g. prompt texts)."""
        return {}

    # ------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError(f"head {self.name!r} is not fitted yet: call fit() or load a run")

    def _resolve_encoder(self, cache) -> str:
        """The image-encoder key the head reads: the one given, or the cache's only one."""
        images = cache.image_encoders()
        if self.encoder is None:
            if len(images) != 1:
                raise VadpipeError(
                    f"cache {cache.path} has {len(images)} image encoders ({', '.join(images) or 'none'}); "
                    "name one with --encoder"
                )
            return images[0]
        from vadpipe.featurize.encoders import canonical_key

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

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
        return f"{type(self).__name__}({params})"


def _coerce_param(head: str, config_cls, name: str, value):
    """Check a hyper-parameter against its annotated type (values often come from the CLI
    as JSON): ints for int fields (2.0 -> 2, 2.5 refused), numbers for floats, true/false for
    bools, strings, lists, dicts; ``None`` only where the field allows it."""
    import types
    import typing

    hint = typing.get_type_hints(config_cls).get(name)
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise VadpipeError(f"head {head!r}: parameter {name!r} may not be null")
    kinds = [typing.get_origin(a) or a for a in allowed if a is not type(None)]
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind in (str, list, dict) and isinstance(value, kind):
            return value
        if kind is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if kind not in (bool, int, float, str, list, dict, tuple):
            return value  # a type this check does not know: the config's own checks decide
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise VadpipeError(f"head {head!r}: parameter {name!r} must be {wanted}, got {value!r}")


def load_head(run_dir: str | Path) -> Head:
    """Rebuild a saved head from ``run_dir`` (no pickle: JSON + safetensors)."""
    from safetensors.numpy import load_file

    run_dir = Path(run_dir)
    cfg_path, w_path = run_dir / "config.json", run_dir / "weights.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise VadpipeError(f"{p}: not found (is {run_dir} a vadpipe run folder?)")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise VadpipeError(f"{cfg_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    cls = get_head_class(meta.get("head", "?"))
    head = cls(encoder=meta.get("encoder"), **meta.get("config", {}))
    head.class_names_ = tuple(meta.get("class_names", ()))
    head._load_state(load_file(str(w_path)), meta.get("extra", {}))
    head.fitted_ = True
    return head


def training_embeddings(cache, encoder: str, entries) -> np.ndarray:
    """All sampled-frame embeddings of ``entries`` stacked as ``float32[N, D]``."""
    ids = [e.video_id for e in entries]
    if not ids:
        raise VadpipeError("no training videos selected (check the manifest's split and label columns)")
    cache.require_videos(encoder, ids)
    return np.concatenate([f.emb.astype(np.float32) for f in cache.iter_videos(encoder, ids)])
