"""``vadpipe train``, ``vadpipe score``, ``vadpipe heads`` and ``vadpipe convert``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vadpipe.cli._common import app, parse_params, user_errors
from vadpipe.cli.executor_options import executor_options, wait_and_report
from vadpipe.errors import VadpipeError

_DEVICE = typer.Option("auto", "--device", help="auto (cuda when present), cpu, cuda, cuda:1 ...; not saved with the run.")


@app.command()
@user_errors
@executor_options
def train(
    head: str = typer.Argument(..., help="Head name (see `vadpipe heads`)."),
    cache: Path = typer.Option(..., "--cache"),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (config.json + weights.safetensors)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder key in the cache (default: the only one)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Hyper-parameter KEY=VALUE (JSON value); repeatable."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of hyper-parameters."),
    device: str = _DEVICE,
    executor_options=None,
):
    """Fit a head on the training videos of MANIFEST, reading features from the cache."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.runs import train_head

    params = parse_params(param, config)
    if executor_options.executor == "slurm":
        from vadpipe.distribute.train_job import submit_training

        handle = submit_training(head, cache, manifest, output, encoder, params, executor_options, device=device)
        folder = handle.job.paths.folder
        typer.echo(f"submitted job {handle.job_id} (train {head}); logs in {folder}")
        if executor_options.wait:
            [outcome] = wait_and_report([handle], folder, lambda r: f"trained {r['head']} on {r['encoder']}")
            if not outcome.ok:
                raise typer.Exit(1)
            typer.echo(f"saved to {output}")
        return

    model = train_head(head, cache, load_manifest(manifest), output, encoder=encoder, params=params, device=device)
    typer.echo(f"trained {model!r} on {model.encoder}; saved to {output}")


@app.command()
@user_errors
def score(
    run_dir: Path = typer.Argument(..., help="Run folder written by `vadpipe train`."),
    cache: Path = typer.Option(..., "--cache"),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Scores store to write (.zarr)."),
    split: str = typer.Option("test", "--split", help="test, train or all."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip videos not featurized (e.g. failed)."),
    normal: Optional[List[str]] = typer.Option(
        None, "--normal", help="Redefine as normal: frames matching this phrase get lower scores; repeatable."
    ),
    anomaly: Optional[List[str]] = typer.Option(
        None, "--anomaly", help="Redefine as anomaly: frames matching this phrase get higher scores (by the video's lowest score x strength, as Gao eq. 10: little effect where that is ~0); repeatable."
    ),
    redefine_threshold: Optional[float] = typer.Option(
        None, "--redefine-threshold", help="CLIP similarity above which a frame matches a phrase (default 0.25)."
    ),
    redefine_strength: Optional[float] = typer.Option(
        None, "--redefine-strength", help="gamma = theta of Gao et al. eq. 10 (default 10)."
    ),
    device: str = _DEVICE,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inference batch (heads that batch, e.g. anomalyclip's passes; default 16)."),
):
    """Score the videos of one split with a trained head; write a scores store.

    --normal / --anomaly adjust the scores by text guidance without retraining (Gao et al. 2024, eq. 10).
    """
    from vadpipe.data_manifests import load_manifest
    from vadpipe.heads.redefine import DEFAULT_STRENGTH, DEFAULT_THRESHOLD
    from vadpipe.runs import score_run

    if not (normal or anomaly) and (redefine_threshold is not None or redefine_strength is not None):
        raise VadpipeError("--redefine-threshold/--redefine-strength need a --normal or --anomaly phrase")
    summary = score_run(
        run_dir, cache, load_manifest(manifest), output, split=split, skip_missing=skip_missing,
        normal=normal or (), anomaly=anomaly or (),
        redefine_threshold=DEFAULT_THRESHOLD if redefine_threshold is None else redefine_threshold,
        redefine_strength=DEFAULT_STRENGTH if redefine_strength is None else redefine_strength,
        device=device, batch_size=batch_size,
    )
    typer.echo(summary.line())


@app.command()
def heads():
    """List the available heads."""
    from vadpipe.heads.registry import list_heads

    for name in list_heads():
        typer.echo(name)


@app.command()
@user_errors
def convert(
    head: str = typer.Argument(..., help="Whose checkpoint: anomalyclip."),
    checkpoint: Path = typer.Argument(..., help="The authors' released last.ckpt."),
    ncentroid: Path = typer.Option(..., "--ncentroid", help="Their ncentroid.pt (the normality prototype)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder to write."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="ucf_crime, shanghaitech or xd_violence: the class list and preset."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names in the authors' id order, Normal included."),
    encoder: str = typer.Option("ViT-B-16:openai", "--encoder", help="Cache encoder key the run scores."),
    model: str = typer.Option("ViT-B-16", "--model", help="open_clip architecture of the checkpoint's text tower."),
    quick_gelu: bool = typer.Option(True, "--quick-gelu/--no-quick-gelu", help="QuickGELU towers (OpenAI's CLIP, which the authors load)."),
):
    """Turn an author-released checkpoint into a run folder that `vadpipe score` reads."""
    if head != "anomalyclip":
        raise VadpipeError(f"convert: checkpoints of {head!r} are not known (known: anomalyclip)")
    from vadpipe.heads.anomalyclip.checkpoint import convert_checkpoint

    names = [c.strip() for c in classes.split(",")] if classes else None
    run = convert_checkpoint(checkpoint, ncentroid, output, dataset=dataset, classes=names, encoder=encoder, model=model,
                             quick_gelu=quick_gelu)
    typer.echo(f"converted {checkpoint} to {run}")
