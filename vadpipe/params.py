"""Typed settings from loose values (the CLI's ``--param key=value`` gives JSON or strings).

Heads' hyper-parameters and detectors' settings are dataclass fields; :func:`coerce` checks a
value against a field's annotation, :func:`build_config` builds the dataclass and names any
unknown key.
"""

from __future__ import annotations

from dataclasses import fields

from vadpipe.errors import VadpipeError


def coerce(owner: str, config_cls, name: str, value):
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
        raise VadpipeError(f"{owner}: parameter {name!r} may not be null")
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
    raise VadpipeError(f"{owner}: parameter {name!r} must be {wanted}, got {value!r}")


def build_config(owner: str, config_cls, params: dict):
    """``config_cls(**params)`` with each value coerced; an unknown key is a one-line error."""
    known = [f.name for f in fields(config_cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise VadpipeError(f"{owner}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return config_cls(**{k: coerce(owner, config_cls, k, v) for k, v in params.items()})
