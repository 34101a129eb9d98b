"""``vadpipe evaluate`` (and ``--compare``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vadpipe.cli._common import app, user_errors
from vadpipe.errors import VadpipeError


@app.command()
@user_errors
def evaluate(
    paths: Optional[List[Path]] = typer.Argument(
        None, metavar="SCORES|REPORT_DIRS",
        help="Scores store written by `vadpipe score`; with --compare, two or more report folders.",
    ),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest with the ground truth (not with --compare)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.json, report.md, PNGs)."),
    expansion: str = typer.Option("repeat", "--expansion", help="repeat, nearest or linear."),
    sigma: float = typer.Option(0.0, "--sigma", help="Gaussian smoothing in frames (0 = none)."),
    max_timelines: int = typer.Option(50, "--max-timelines", help="Timeline PNGs for at most this many videos."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG figures."),
    compare: bool = typer.Option(False, "--compare", help="Put the report folders given as arguments side by side."),
    convention: str = typer.Option(
        "vadpipe", "--convention",
        help="Compute as this code does: vadpipe, rtfm, vadclip, xdviodet, lavad, anomalyclip, mnad (docs/evaluation.md).",
    ),
):
    """Frame-level micro/macro AUC, AP (and mAUC/mAP for class heads), or --compare runs."""
    if compare:
        return _evaluate_compare(paths or [], manifest, output)
    if not paths or len(paths) != 1 or manifest is None:
        raise VadpipeError("evaluate needs one SCORES store and --manifest (or --compare REPORT_DIR REPORT_DIR ...)")
    from vadpipe.data_manifests import load_manifest
    from vadpipe.evaluate import EvalConfig, format_table
    from vadpipe.evaluate import evaluate as run_evaluate

    config = EvalConfig(expansion=expansion, sigma=sigma, plots=plots, max_timelines=max_timelines,
                        convention=convention)
    report = run_evaluate(paths[0], load_manifest(manifest), output, config)
    typer.echo(format_table(report))
    figures = report.get("figures") or {}
    shown, total = len(figures.get("timelines", [])), figures.get("timelines_total", 0)
    capped = f" ({shown} of {total} timelines)" if plots and shown < total else ""
    typer.echo(f"wrote {output / 'report.json'}, report.md" + (", PNGs" + capped if plots else ""))


def _evaluate_compare(report_dirs: list[Path], manifest: Optional[Path], output: Path) -> None:
    """``vadpipe evaluate --compare A B ... -o OUT``: report folders side by side."""
    from vadpipe.evaluate import compare_reports, format_comparison

    if manifest is not None:
        raise VadpipeError("--compare reads report folders; --manifest is not used (evaluate each scores store first)")
    comparison = compare_reports(report_dirs, output)
    typer.echo(format_comparison(comparison).rstrip("\n"))
    typer.echo(f"wrote {output / 'report.md'}, comparison.json")
