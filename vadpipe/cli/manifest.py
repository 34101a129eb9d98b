"""``vadpipe manifest folder|ucf_crime|shanghaitech|xd_violence|avenue|ped2|cross``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vadpipe.cli._common import manifest_app, user_errors


@manifest_app.command("folder")
@user_errors
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
@user_errors
def manifest_ucf_crime(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                       end: str = typer.Option("exclusive", help="The annotated end frame: exclusive, [s, e) as VadCLIP; or inclusive, [s, e+1) as RTFM/LAVAD/AnomalyCLIP.")):
    """UCF-Crime: official split lists + temporal annotation txt."""
    _save_benchmark("ucf_crime", annotations, videos, output, end=end)


@manifest_app.command("shanghaitech")
@user_errors
def manifest_shanghaitech(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                          split: str = typer.Option("one-class", help="one-class (330/107) or weak (Zhong et al.: 238/199)."),
                          cross_scene: Optional[str] = typer.Option(None, help="TRAIN_SCENES:TEST_SCENES, e.g. 01,02:03,04."),
                          classes: Optional[str] = typer.Option(None, help="semantic: the 17 anomaly classes of the dataset authors' annotation (AnomalyCLIP's mAUC), or a JSON file in its layout.")):
    """ShanghaiTech Campus: one-class or weakly-supervised split, optional cross-scene and classes."""
    _save_benchmark("shanghaitech", annotations, videos, output, split=split, cross_scene=cross_scene, classes=classes)


@manifest_app.command("xd_violence")
@user_errors
def manifest_xd_violence(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT):
    """XD-Violence: official lists + (multi-class) interval annotations."""
    _save_benchmark("xd_violence", annotations, videos, output)


@manifest_app.command("avenue")
@user_errors
def manifest_avenue(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                    gt: str = typer.Option("frame-prediction", help="frame-prediction (most papers) or masks.")):
    """CUHK Avenue, with either ground truth."""
    _save_benchmark("avenue", annotations, videos, output, gt=gt)


@manifest_app.command("ped2")
@user_errors
def manifest_ped2(annotations: Path = _ANNOTATIONS, videos: Path = _VIDEOS, output: Path = _OUTPUT,
                  gt: str = typer.Option("UCSDped2.m", help="UCSDped2.m (official) or ped2.mat (frame-prediction line).")):
    """UCSD Ped2: 1-based inclusive ranges of UCSDped2.m or ped2.mat, converted."""
    _save_benchmark("ped2", annotations, videos, output, gt=gt)


@manifest_app.command("cross")
@user_errors
def manifest_cross(
    train: Path = typer.Option(..., "--train", help="Manifest whose training videos to keep."),
    test: Path = typer.Option(..., "--test", help="Manifest whose test videos to keep (and protocol)."),
    output: Path = _OUTPUT,
):
    """Train on one dataset, test on another: the train rows of --train and the test rows of --test."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.data_manifests.benchmarks import cross_dataset_manifest

    manifest = cross_dataset_manifest(load_manifest(train), load_manifest(test))
    manifest.save(output)
    typer.echo(f"wrote {output}: {len(manifest.select(split='train'))} train videos from {train}, "
               f"{len(manifest.select(split='test'))} test videos from {test}")
