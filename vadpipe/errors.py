"""The one exception type for user mistakes.

A :class:`VadpipeError` carries a one-line message that says what is wrong and where
(file, row, video). The CLI prints it as is and exits non-zero, without a traceback;
anything else that escapes is a bug in vadpipe and keeps its traceback.
"""


class VadpipeError(Exception):
    """A user-facing error: bad input, missing file, mismatched encoder."""


def output_dir(path):
    """Create the output folder ``path`` (and parents); a file in the way is a user error."""
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise VadpipeError(f"{path}: exists and is not a folder; choose another output") from None
    return path


def one_line(exc, limit: int | None = None) -> str:
    """An exception (or text) squeezed onto one line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if limit is None else text[:limit]


def json_error(path, exc) -> VadpipeError:
    """The one message for a file that is not valid JSON: ``PATH:LINE: not valid JSON (why)``."""
    return VadpipeError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})")


def read_json(path, missing: str = "not found"):
    """The JSON content of ``path``; a missing file (``PATH: missing``), an unreadable one or
    one that is not valid JSON (:func:`json_error`) is one line naming it."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VadpipeError(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise json_error(path, exc) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VadpipeError(f"{path}: cannot read ({one_line(exc)})") from None
