"""Prompt files: the texts heads embed, shipped with vadpipe or written by the user.

Two kinds of file, both in ``vadpipe/heads/prompt_files`` when shipped:

* a **prompt set** (JSON): normal / anomaly prompts, per-class prompts, templates --
  :func:`load_prompt_set` (``zeroshot``'s prompts, ``clipassist``'s descriptions);
* a **prompt list** (text, one per line): many prompts of one kind, such as the 400
  Kinetics-400 actions -- :func:`load_prompt_list` (``kmeans``).

Shipped sets: ``ueki-generic`` (Ueki 2024's three anomaly prompts), ``ucf-crime`` and
``xd-violence`` (per-class prompts, spelled as vadpipe's manifest builders spell the
classes), ``dong-categories`` (Dong 2024 Table 1 style class descriptions) and
``dong-situations`` (normal / abnormal situations, Table 2). A manifest class finds its
prompts through :func:`class_texts`. Templates follow one rule everywhere: ``{}`` exactly
once (:func:`vadpipe.texts.check_template`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vadpipe.errors import VadpipeError, json_error
from vadpipe.texts import check_template, load_text_list

PROMPTS_DIR = Path(__file__).resolve().parent / "prompt_files"
DEFAULT_CLASS_SETS = ("ucf-crime", "xd-violence")
_FILE_KEYS = ("description", "source", "templates", "normal", "anomaly", "classes")


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


def list_prompt_lists() -> list[str]:
    """Names of the prompt lists shipped with vadpipe (one prompt per line, e.g. kinetics400)."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))


def load_prompt_list(spec: str | list[str]) -> list[str]:
    """Prompts from a shipped list (``kinetics400``), a text file with one prompt per line
    (blank lines and ``#`` comments skipped), a JSON list, or a list; see
    :func:`vadpipe.texts.load_text_list`."""
    builtin = {name: PROMPTS_DIR / f"{name}.txt" for name in list_prompt_lists()}
    return load_text_list(spec, "prompt", builtin, hint=f"shipped lists: {', '.join(builtin)}; "
                          "or a text file with one prompt per line, or a list")


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
        raise json_error(path, exc) from None
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
        for t in templates:
            check_template(t, where=f"{path}: ")
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
