"""``vadpipe recipes list | show NAME | run NAME``: a paper's table row, from video to number."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from vadpipe.cli._common import parse_params, recipes_app, user_errors


@recipes_app.command("list")
@user_errors
def recipes_list():
    """One shipped recipe a line: its name, then the paper, table, row and published number(s)."""
    from vadpipe.recipes import list_recipes, load_recipe

    for name in list_recipes():
        typer.echo(load_recipe(name).summary())


@recipes_app.command("show")
@user_errors
def recipes_show(name: str = typer.Argument(..., help="Recipe name (see `vadpipe recipes list`) or a recipe file.")):
    """Print a recipe: the paper's setting, vadpipe's settings and the known differences."""
    from vadpipe.recipes import load_recipe

    recipe = load_recipe(name)
    typer.echo(Path(recipe.path).read_text().rstrip())


@recipes_app.command("run")
@user_errors
def recipes_run(
    name: str = typer.Argument(..., help="Recipe name or file."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="The dataset's videos (its official layout)."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="The dataset's official annotation files."),
    output: Path = typer.Option(..., "-o", "--output", help="Work folder (manifest, cache, run, scores, report)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Use this manifest instead of building the dataset's."),
    test_videos: Optional[Path] = typer.Option(None, "--test-videos", help="Cross-dataset recipes: the test dataset's videos."),
    test_annotations: Optional[Path] = typer.Option(None, "--test-annotations", help="Cross-dataset recipes: its annotation files."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Override the recipe's image encoder (e.g. vadpipe-tiny)."),
    captioner: Optional[str] = typer.Option(None, "--captioner", help="Override the recipe's BLIP-2 (hub id or local folder)."),
    objects: Optional[str] = typer.Option(None, "--objects", help="Override the recipe's detector (motion, file:DIR, a torchvision model)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Override a head parameter KEY=VALUE; repeatable."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the report's PNG figures."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the vadpipe commands instead of running them."),
):
    """manifest -> featurize -> (captions) -> train -> score -> evaluate; ends with the paper's
    number, the number obtained and the metric. Resumable: run it again to finish."""
    from vadpipe.recipes import commands, load_recipe, run

    recipe = load_recipe(name)
    params = parse_params(param, None)
    if dry_run:
        for line in commands(recipe, output, videos, annotations, manifest, encoder, captioner, params, test_videos,
                             test_annotations, objects):
            typer.echo(line)
        return
    result = run(recipe, output, videos=videos, annotations=annotations, manifest=manifest, encoder=encoder,
                 captioner=captioner, params=params, device=device, progress=sys.stderr.isatty(), plots=plots,
                 log=lambda line: typer.echo(line, err=True), test_videos=test_videos, test_annotations=test_annotations,
                 objects=objects)
    typer.echo(result.line())
