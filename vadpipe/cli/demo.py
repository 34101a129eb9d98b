"""``vadpipe demo``: the whole flow on a synthetic scene."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from vadpipe.cli._common import app, user_errors


@app.command()
@user_errors
def demo(
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Default: ViT-B-32:openai (download); vadpipe-tiny runs offline."),
    output: Path = typer.Option(Path("vadpipe-demo"), "-o", "--output"),
    stride: int = typer.Option(2, "--stride"),
    device: str = typer.Option("auto", "--device"),
):
    """Synthetic surveillance scene -> featurize (frames + motion objects) -> prototype, zeroshot, zeroshot on objects -> evaluate."""
    from vadpipe.demo import DEFAULT_ENCODER, run_demo
    from vadpipe.evaluate import format_table

    result = run_demo(output, encoder=encoder or DEFAULT_ENCODER, stride=stride, device=device,
                      progress=sys.stderr.isatty())
    typer.echo(f"featurize: {result['featurize'].line()}")
    for i, (name, report) in enumerate(result["reports"].items()):
        lines = format_table({**report, "head": name}).splitlines()  # protocol line, then the step's own table
        typer.echo("\n".join(lines if i == 0 else lines[1:]))
    typer.echo(f"everything is under {result['out']}: data/ (videos + manifest.csv), cache.zarr, runs/, scores/, reports/")
    if (encoder or DEFAULT_ENCODER).startswith("vadpipe-tiny"):
        typer.echo("note: vadpipe-tiny has random weights; its numbers test the pipeline, not CLIP.")
