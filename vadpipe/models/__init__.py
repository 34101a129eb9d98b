"""Deprecated: ``vadpipe.models`` is :mod:`vadpipe.heads` since vadpipe 0.3 (kept for one release).

What keeps working: ``import vadpipe.models`` and its names (``get_head``, ``load_head``,
``list_heads``, ``register_head``, ``Head``, ``Scores``, ``NotFittedError``); the old
submodules, each the same module object as its new home (``vadpipe.models.zeroshot`` is
``vadpipe.heads.zeroshot``; ``vadpipe.models.base`` is :mod:`vadpipe.heads`, so a head
written for 0.2 still finds ``Head``, ``Scores`` and ``register_head`` there), so classes and
registries are shared. What moved: the prompt-file functions (``load_prompt_set``,
``class_prompt``, ... ) to :mod:`vadpipe.heads.prompts`, kmeans' ``load_prompts`` to
``vadpipe.heads.prompts.load_prompt_list``, ``train_head`` / ``score_run`` to
:mod:`vadpipe.runs` (``score_run`` now returns a ``ScoreSummary``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from vadpipe.heads import Head, NotFittedError, Scores, get_head, list_heads, load_head, register_head

warnings.warn("vadpipe.models is deprecated: use vadpipe.heads (and vadpipe.runs)", DeprecationWarning, stacklevel=2)

_MOVED = {
    "anomalyclip": "vadpipe.heads.anomalyclip",
    "anomalyclip_losses": "vadpipe.heads.anomalyclip.losses",
    "base": "vadpipe.heads",
    "clipassist": "vadpipe.heads.clipassist",
    "kmeans": "vadpipe.heads.kmeans",
    "prompt_learner": "vadpipe.heads.prompt_learner",
    "prototype": "vadpipe.heads.prototype",
    "redefine": "vadpipe.heads.redefine",
    "runs": "vadpipe.runs",
    "s3m": "vadpipe.heads.s3m",
    "s4d": "vadpipe.heads.s4d",
    "text": "vadpipe.heads.text",
    "zeroshot": "vadpipe.heads.zeroshot",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``vadpipe.models.<name>`` -> the module it became (the same object, not a copy)."""

    def __init__(self):
        self._specs: dict[str, object] = {}

    def find_spec(self, fullname, path, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix == __name__ and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name.rpartition(".")[2]])
        self._specs[module.__name__] = module.__spec__  # importlib sets the alias's spec on it next
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs.pop(module.__name__)  # the module keeps its own spec


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name):
    if name in _MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Head", "NotFittedError", "Scores", "get_head", "list_heads", "load_head", "register_head"]
