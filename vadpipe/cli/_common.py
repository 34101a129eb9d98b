"""What every command shares: the Typer apps, the one-line error wrapper, head parameters,
and the one printer of failed videos."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from vadpipe.errors import VadpipeError, json_error

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Video anomaly detection with vision-language models: featurize once, train/score heads, evaluate.",
)
manifest_app = typer.Typer(no_args_is_help=True, help="Build manifests (the table of videos, splits and ground truth).")
app.add_typer(manifest_app, name="manifest")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, check, merge, import and export feature caches.")
app.add_typer(cache_app, name="cache")
recipes_app = typer.Typer(no_args_is_help=True, help="Paper table rows as one command each: list, show, run.")
app.add_typer(recipes_app, name="recipes")


def user_errors(fn):
    """Turn :class:`VadpipeError` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VadpipeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_params(params: list[str] | None, config: Path | None, option: str = "--param") -> dict:
    """Head hyper-parameters from ``--config file.json`` and ``--param key=value`` (JSON values)."""
    out: dict = {}
    if config is not None:
        try:
            out.update(json.loads(Path(config).read_text()))
        except FileNotFoundError:
            raise VadpipeError(f"{config}: config file not found") from None
        except json.JSONDecodeError as exc:
            raise json_error(config, exc) from None
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VadpipeError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def print_failures(records: list[dict], log: str | None = None) -> None:
    """One stderr line per failed video (``failed: id (path): stage: reason``), then where the log is."""
    for rec in records:
        typer.echo(f"failed: {rec['video_id']} ({rec['path']}): {rec['stage']}: {rec['reason']}", err=True)
    if records and log:
        typer.echo(f"{len(records)} video(s) failed; details in {log}", err=True)
