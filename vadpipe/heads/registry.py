"""Which heads exist: a static table of name -> ``"module:Class"``, imported on first use.

As open_clip's table of model configs or scikit-learn's ``all_estimators``: listing the heads
(``vadpipe heads``, ``vadpipe --help``) imports no head module, so it needs no torch. A head
module is imported when its class is asked for. Heads from outside vadpipe join the table
with :func:`register_head`.
"""

from __future__ import annotations

import importlib

from vadpipe.errors import VadpipeError

BUILTIN: dict[str, str] = {
    "anomalyclip": "vadpipe.heads.anomalyclip.head:AnomalyClipHead",
    "clipassist": "vadpipe.heads.clipassist.video:ClipAssistHead",
    "clipassist-frame": "vadpipe.heads.clipassist.frame:ClipAssistFrameHead",
    "kmeans": "vadpipe.heads.kmeans:KMeansHead",
    "prototype": "vadpipe.heads.prototype:PrototypeHead",
    "s3m": "vadpipe.heads.s3m:S3MHead",
    "zeroshot": "vadpipe.heads.zeroshot:ZeroshotHead",
}
_REGISTERED: dict[str, type] = {}  # heads registered at run time (outside vadpipe)


def register_head(name: str):
    """Class decorator: make a head class of your own available as ``get_head(name)``."""

    def deco(cls):
        if name in BUILTIN or (name in _REGISTERED and _REGISTERED[name] is not cls):
            raise ValueError(f"head {name!r} registered twice")
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def list_heads() -> list[str]:
    """Names of every head (built in and registered), without importing any of them."""
    return sorted({*BUILTIN, *_REGISTERED})


def get_head_class(name: str) -> type:
    """The class of head ``name``; an unknown name lists the known ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        raise VadpipeError(f"unknown head {name!r} (known: {', '.join(list_heads())})")
    module, _, cls = BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_head(name: str, **params):
    """A new head ``name`` with hyper-parameters ``params`` (and the run-time options)."""
    return get_head_class(name)(**params)
