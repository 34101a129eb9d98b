"""The ``vadpipe`` command line: a thin layer over the library.

Each command parses options, builds a config, calls one library function and prints a
short summary. Heavy imports (torch, open_clip) happen inside commands so ``--help`` is
instant. A user mistake ends in one ``error: ...`` line and exit code 2; a featurize run
where some videos failed exits with 1 after finishing the others.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from vadpipe.errors import VadpipeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Video anomaly detection with vision-language models: featurize once, train/score heads, evaluate.",
)
manifest_app = typer.Typer(no_args_is_help=True, help="Build manifests (the table of videos, splits and ground truth).")
app.add_typer(manifest_app, name="manifest")


def _user_errors(fn):
    """Turn :class:`VadpipeError` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VadpipeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _parse_params(params: list[str] | None, config: Path | None) -> dict:
    """Head hyper-parameters from ``--config file.json`` and ``--param key=value`` (JSON values)."""
    out: dict = {}
    if config is not None:
        try:
            out.update(json.loads(Path(config).read_text()))
        except FileNotFoundError:
            raise VadpipeError(f"{config}: config file not found") from None
        except json.JSONDecodeError as exc:
            raise VadpipeError(f"{config}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VadpipeError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


# ---------------------------------------------------------------------------- manifest
@manifest_app.command("folder")
@_user_errors
def manifest_folder(
    directory: Path = typer.Argument(..., help="Folder of videos and/or frame folders."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest to write (.csv or .jsonl)."),
    split: str = typer.Option("test", help="Split for videos not under a train*/test* folder."),
    label: str = typer.Option("normal", help="Label for every video."),
):
    """Build a manifest from a folder (split from train*/test* sub-folders)."""
    from vadpipe.data_manifests import build_folder_manifest

    manifest = build_folder_manifest(directory, default_split=split, label=label)
    manifest.save(output)
    counts = {s: len(manifest.select(split=s)) for s in ("train", "test")}
    typer.echo(f"wrote {output}: {len(manifest)} videos ({counts['train']} train, {counts['test']} test)")


_ANNOTATIONS = typer.Option(..., "--annotations", help="Folder with the dataset's official annotation files.")
_VIDEOS = typer.Option(..., "--videos", help="Dataset root where the videos / frame folders are (need not exist yet).")
_OUTPUT = typer.Option(..., "-o", "--output", help="Manifest to write (.csv or .jsonl).")


def _save_benchmark(dataset: str, annotations: Path, videos: Path, output: Path, **options) -> None:
    from vadpipe.data_manifests.benchmarks import build_benchmark_manifest

    manifest = build_benchmark_manifest(dataset, annotations, videos, **options)
    manifest.save(output)
    train, test = manifest.select(split="train"), manifest.select(split="test")
    anomalous = sum(not e.is_normal for e in test)
    variant = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
    typer.echo(
        f"wrote {output}: {dataset}{f' ({variant})' if variant else ''}: {len(train)} train, "
        f"{len(test)} test videos ({anomalous} anomalous)"
    )


@manifest_app.command("ucf_crime")
@_user_errors
def manifest_ucf_crime(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                       end: str = typer.Option("exclusive", help="How to read the annotation's end frame: exclusive or inclusive.")):
    """UCF-Crime: official split lists + temporal annotation txt."""
    _save_benchmark("ucf_crime", annotations, videos, output, end=end)


@manifest_app.command("shanghaitech")
@_user_errors
def manifest_shanghaitech(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                          split: str = typer.Option("one-class", help="one-class (330/107) or weak (Zhong et al.: 238/199)."),
                          cross_scene: Optional[str] = typer.Option(None, help="TRAIN_SCENES:TEST_SCENES, e.g. 01,02:03,04.")):
    """ShanghaiTech Campus: one-class or weakly-supervised split, optional cross-scene."""
    _save_benchmark("shanghaitech", annotations, videos, output, split=split, cross_scene=cross_scene)


@manifest_app.command("xd_violence")
@_user_errors
def manifest_xd_violence(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT):
    """XD-Violence: official lists + (multi-class) interval annotations."""
    _save_benchmark("xd_violence", annotations, videos, output)


@manifest_app.command("avenue")
@_user_errors
def manifest_avenue(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                    gt: str = typer.Option("frame-prediction", help="frame-prediction (most papers) or masks.")):
    """CUHK Avenue, with either ground truth."""
    _save_benchmark("avenue", annotations, videos, output, gt=gt)


@manifest_app.command("ped2")
@_user_errors
def manifest_ped2(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT):
    """UCSD Ped2: UCSDped2.m ranges (1-based inclusive, converted)."""
    _save_benchmark("ped2", annotations, videos, output)


# ---------------------------------------------------------------------------- featurize
@app.command()
@_user_errors
def featurize(
    manifest: Path = typer.Argument(..., help="Manifest (.csv or .jsonl)."),
    cache: Path = typer.Option(..., "--cache", help="Feature cache to create or extend (.zarr)."),
    encoder: str = typer.Option(..., "--encoder", help="MODEL:TAG, MODEL:/path/to/ckpt, or vadpipe-tiny."),
    stride: int = typer.Option(1, "--stride", help="Keep every k-th frame."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, bf16, fp16."),
    batch_size: int = typer.Option(64, "--batch-size"),
    shard: int = typer.Option(0, "--shard", help="This process's shard (0-based)."),
    num_shards: int = typer.Option(1, "--num-shards", help="Split the manifest into this many shards."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Keep videos whose decode came up short."),
    failures_log: Optional[Path] = typer.Option(None, "--failures-log", help="Default: CACHE.failures.jsonl"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Decode, sample and embed every video of MANIFEST into the feature cache."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.featurize import FeaturizeConfig, Sampling
    from vadpipe.featurize import featurize as run_featurize

    config = FeaturizeConfig(
        encoder=encoder,
        sampling=Sampling(stride=stride),
        device=device,
        precision=precision,
        batch_size=batch_size,
        shard=shard,
        num_shards=num_shards,
        allow_partial=allow_partial,
        failures_log=str(failures_log) if failures_log else None,
    )
    summary = run_featurize(load_manifest(manifest), cache, config, progress=progress and sys.stderr.isatty())
    typer.echo(f"{summary.encoder_key} -> {cache}: {summary.line()}")
    if summary.failed:
        for rec in summary.failed:
            typer.echo(f"failed: {rec['video_id']} ({rec['path']}): {rec['stage']}: {rec['reason']}", err=True)
        typer.echo(f"{len(summary.failed)} video(s) failed; details in {summary.failures_log}", err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- heads
@app.command()
@_user_errors
def train(
    head: str = typer.Argument(..., help="Head name (see `vadpipe heads`)."),
    cache: Path = typer.Option(..., "--cache"),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (config.json + weights.safetensors)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder key in the cache (default: the only one)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Hyper-parameter KEY=VALUE (JSON value); repeatable."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of hyper-parameters."),
):
    """Fit a head on the training videos of MANIFEST, reading features from the cache."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.models.runs import train_head

    model = train_head(head, cache, load_manifest(manifest), output, encoder=encoder, params=_parse_params(param, config))
    typer.echo(f"trained {model!r} on {model.encoder}; saved to {output}")


@app.command()
@_user_errors
def score(
    run_dir: Path = typer.Argument(..., help="Run folder written by `vadpipe train`."),
    cache: Path = typer.Option(..., "--cache"),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Scores store to write (.zarr)."),
    split: str = typer.Option("test", "--split", help="test, train or all."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip videos not featurized (e.g. failed)."),
):
    """Score the videos of one split with a trained head; write a scores store."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.models.runs import score_run

    path, skipped = score_run(run_dir, cache, load_manifest(manifest), output, split=split, skip_missing=skip_missing)
    typer.echo(f"wrote {path}" + (f" (skipped {len(skipped)} videos not in the cache)" if skipped else ""))


@app.command()
@_user_errors
def evaluate(
    scores: Path = typer.Argument(..., help="Scores store written by `vadpipe score`."),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.json)."),
    expansion: str = typer.Option("repeat", "--expansion", help="repeat, nearest or linear."),
    sigma: float = typer.Option(0.0, "--sigma", help="Gaussian smoothing in frames (0 = none)."),
):
    """Frame-level micro/macro ROC AUC and AP against the manifest's ground truth."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.evaluate import EvalConfig, format_table
    from vadpipe.evaluate import evaluate as run_evaluate

    report = run_evaluate(scores, load_manifest(manifest), output, EvalConfig(expansion=expansion, sigma=sigma))
    typer.echo(format_table(report))
    typer.echo(f"expansion={expansion}, sigma={sigma}; wrote {output / 'report.json'}")


@app.command()
def heads():
    """List the available heads."""
    from vadpipe.models import list_heads

    for name in list_heads():
        typer.echo(name)


# ---------------------------------------------------------------------------- demo
@app.command()
@_user_errors
def demo(
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Default: ViT-B-32:openai (download); vadpipe-tiny runs offline."),
    output: Path = typer.Option(Path("vadpipe-demo"), "-o", "--output"),
    stride: int = typer.Option(2, "--stride"),
    device: str = typer.Option("auto", "--device"),
):
    """Synthetic surveillance scene -> featurize -> prototype + zeroshot -> evaluate."""
    from vadpipe.demo import DEFAULT_ENCODER, run_demo
    from vadpipe.evaluate import format_table

    result = run_demo(output, encoder=encoder or DEFAULT_ENCODER, stride=stride, device=device,
                      progress=sys.stderr.isatty())
    typer.echo(f"featurize: {result['featurize'].line()}")
    for name, report in result["reports"].items():
        typer.echo(format_table(report).splitlines()[-1] if name != "prototype" else format_table(report))
    typer.echo(f"everything is under {result['out']}: data/ (videos + manifest.csv), cache.zarr, runs/, scores/, reports/")
    if (encoder or DEFAULT_ENCODER).startswith("vadpipe-tiny"):
        typer.echo("note: vadpipe-tiny has random weights; its numbers test the pipeline, not CLIP.")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
