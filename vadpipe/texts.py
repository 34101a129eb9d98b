"""Rules for texts that more than one stage reads: lists of prompts or questions, templates,
and the normal form of a captioner's answers.

* :func:`load_text_list` -- one loader for every list of texts a user gives: a Python list,
  a JSON list of strings, or a text file with one entry per line (blank lines and ``#``
  comments skipped); entries are stripped, none may be empty or appear twice. kmeans' action
  prompts, the captioner's questions and the heads' prompt lists all go through it.
* :func:`check_template` -- one rule for templates: ``{}`` exactly once.
* :func:`normalize_answer` -- answers are stored lowercased, whitespace collapsed, surrounding
  punctuation stripped; heads compare answers in that form.
"""

from __future__ import annotations

import json
from pathlib import Path

from vadpipe.errors import VadpipeError, json_error

_PUNCTUATION = " \t\n.,;:!?\"'"


def load_text_list(spec, what: str, builtin: dict[str, Path] | None = None, hint: str = "") -> list[str]:
    """The texts of ``spec``: a list, a name in ``builtin`` (name -> file), or a file path.

    ``what`` names one entry in messages ("prompt", "question"); ``hint`` follows the
    message when the file is not found.
    """
    if isinstance(spec, (list, tuple)):
        texts, where = [str(t).strip() for t in spec], f"the {what} list"
    else:
        path = (builtin or {}).get(str(spec)) or Path(spec).expanduser()
        if not path.is_file():
            raise VadpipeError(f"{what} file {path} not found{f' ({hint})' if hint else ''}")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                texts = json.loads(text)
            except json.JSONDecodeError as exc:
                raise json_error(path, exc) from None
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise VadpipeError(f"{path}: expected a JSON list of {what} strings")
            texts = [t.strip() for t in texts]
        else:
            texts = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        where = str(path)
    if not texts or not all(texts):
        raise VadpipeError(f"{where} has no {what}s or an empty one")
    seen: set[str] = set()
    for t in texts:
        if t in seen:
            raise VadpipeError(f"{what} {t!r} appears twice in {where}")
        seen.add(t)
    return texts


def check_template(template: str, where: str = "") -> str:
    """A template holds ``{}`` exactly once (one-line error otherwise)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise VadpipeError(f"{where}template {template!r} must contain '{{}}' exactly once")
    return template


def normalize_answer(text: str) -> str:
    """``'  A Man, Walking. '`` -> ``'a man, walking'``."""
    return " ".join(str(text).lower().split()).strip(_PUNCTUATION)
