"""``vadpipe featurize``: here, as an array of shard tasks (Slurm or local), or as an sbatch script."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from vadpipe.cli._common import app, print_failures, user_errors
from vadpipe.cli.executor_options import EXECUTOR_OPTIONS, executor_options, given_options, wait_and_report
from vadpipe.errors import VadpipeError


def vadpipe_command() -> list[str]:
    """How to run this vadpipe from a script: the ``vadpipe`` next to this Python, else ``python -m``."""
    exe = Path(sys.executable).with_name("vadpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vadpipe.cli"]


@app.command()
@user_errors
@executor_options
def featurize(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Manifest (.csv or .jsonl)."),
    cache: Path = typer.Option(..., "--cache", help="Feature cache to create or extend (.zarr, or .h5: one file per shard)."),
    encoder: str = typer.Option(..., "--encoder", help="MODEL:TAG, MODEL:/path/to/ckpt, or vadpipe-tiny."),
    stride: int = typer.Option(1, "--stride", help="Keep every k-th frame."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Sample at this rate instead (by timestamps; VFR-safe)."),
    snippets: Optional[str] = typer.Option(None, "--snippets", help="N:F = N uniform snippets of F frames (0:16 = all 16-frame snippets)."),
    snippet_mean: bool = typer.Option(False, "--snippet-mean", help="Store one mean embedding per snippet."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decode processes (default: one per spare core; 0 = a thread)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on GPU; bf16 on CPUs with native bf16, else fp32), fp32, bf16, fp16."),
    batch_size: int = typer.Option(64, "--batch-size"),
    shard: int = typer.Option(0, "--shard", help="This process's shard (0-based)."),
    num_shards: int = typer.Option(1, "--num-shards", help="Split the manifest into this many shards."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Keep videos whose decode came up short."),
    failures_log: Optional[Path] = typer.Option(None, "--failures-log", help="Default: CACHE.failures.jsonl"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Only the videos of this split (train, test); repeatable."),
    captioner: Optional[str] = typer.Option(
        None, "--captioner", help="Then answer questions about each sampled frame (with --objects: each object) with this BLIP-2 (hub id or local folder)."
    ),
    questions: Optional[Path] = typer.Option(
        None, "--questions", help="Questions for --captioner: JSON list or text, one per line (default: VLAVAD's three + a caption)."
    ),
    crop: Optional[str] = typer.Option(
        None, "--crop", help="Frames: center (open_clip's, the default), full (whole frame squashed), pad (whole frame letterboxed)."
    ),
    objects: Optional[str] = typer.Option(
        None, "--objects", help="Also detect, track, crop and embed objects: motion, a torchvision detector "
        "(fasterrcnn_resnet50_fpn_v2, ...), or file:DIR (MOT text files DIR/<video_id>.txt)."
    ),
    objects_param: Optional[List[str]] = typer.Option(
        None, "--objects-param", help="KEY=VALUE for --objects (repeatable): min_area, max_objects, margin, tracker, "
        "track_threshold, track_buffer, match_threshold, and the detector's own (weights, classes, score_threshold ...)."
    ),
    shards: int = typer.Option(1, "--shards", help="With --executor slurm / --emit-sbatch: array tasks, task i = shard i."),
    emit_sbatch: Optional[Path] = typer.Option(None, "--emit-sbatch", help="Write this sbatch array script instead of running."),
    executor_options=None,
):
    """Decode, sample and embed every video of MANIFEST into the feature cache (then caption it)."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.featurize import FeaturizeConfig, Sampling
    from vadpipe.featurize import featurize as run_featurize

    if objects_param and not objects:
        raise VadpipeError("--objects-param needs --objects DETECTOR")
    objects_config = None
    if objects:
        from vadpipe.cli._common import parse_params
        from vadpipe.objects import ObjectsConfig

        objects_config = ObjectsConfig.parse(objects, parse_params(objects_param, None, "--objects-param"))
    config = FeaturizeConfig(
        encoder=encoder,
        crop=crop,
        objects=objects_config,
        sampling=Sampling.parse(stride=stride, fps=fps, snippets=snippets, snippet_mean=snippet_mean),
        workers=workers,
        device=device,
        precision=precision,
        batch_size=batch_size,
        shard=shard,
        num_shards=num_shards,
        allow_partial=allow_partial,
        failures_log=str(failures_log) if failures_log else None,
    )
    if emit_sbatch or executor_options.executor == "slurm" or shards > 1:
        if shard != 0 or num_shards != 1:
            raise VadpipeError("--shards N (task i = shard i) replaces --shard/--num-shards here")
        if emit_sbatch:
            from vadpipe.distribute.executors import default_folder
            from vadpipe.distribute.sbatch import TASK_INDEX, write_sbatch_array

            argv = given_options(ctx, {*EXECUTOR_OPTIONS, "shards", "emit_sbatch", "shard", "num_shards", "progress"})
            command = [*vadpipe_command(), "featurize", *argv, "--num-shards", str(shards), "--no-progress",
                       "--shard", TASK_INDEX]
            folder = executor_options.slurm.folder or default_folder(cache)
            slurm = replace(executor_options.slurm, job_name=executor_options.slurm.job_name or "vadpipe-featurize")
            write_sbatch_array(emit_sbatch, command, shards, slurm, folder, description=(
                f"vadpipe featurize as a Slurm job array: task i featurizes shard i of {shards} into one cache.\n"
                "Submit with `sbatch THIS_FILE`; resubmitting redoes only the videos not done."))
            typer.echo(f"wrote {emit_sbatch}: {shards} array task(s), logs in {folder}; submit with `sbatch {emit_sbatch}`")
            return
        if captioner is not None:
            raise VadpipeError("--captioner runs in a plain local run or with --emit-sbatch; not yet with --shards / --executor slurm")
        if split:
            raise VadpipeError("--split runs in a plain local run; for --shards / --executor slurm write a manifest of that split")
        _featurize_array(manifest, cache, config, shards, executor_options)
        return
    videos = load_manifest(manifest)
    ids = [e.video_id for e in videos if e.split in split] if split else None
    show = progress and sys.stderr.isatty()
    summaries = [run_featurize(videos, cache, config, progress=show, video_ids=ids)]
    keys = summaries[0].encoder_key + (f" (+ {config.objects.key(summaries[0].encoder_key)})" if config.objects else "")
    typer.echo(f"{keys} -> {cache}: {summaries[0].line()}")
    if captioner is not None:
        from vadpipe.featurize.captioner import DEFAULT_QUESTIONS, caption, load_questions

        clip_key = config.objects.key(summaries[0].encoder_key) if config.objects else summaries[0].encoder_key
        summaries.append(caption(  # with --objects: about each object's crop (VLAVAD), else each frame
            videos, cache, captioner, clip_key,
            questions=load_questions(questions) if questions else DEFAULT_QUESTIONS, batch_size=batch_size,
            device=device, shard=shard, num_shards=num_shards, failures_log=config.failures_log, progress=show,
            video_ids=ids,
        ))
        typer.echo(f"{summaries[1].encoder_key} -> {cache}: {summaries[1].line()}")
    failed = [rec for summary in summaries for rec in summary.failed]
    print_failures(failed, summaries[0].failures_log)
    if failed:
        raise typer.Exit(1)


def _featurize_array(manifest: Path, cache: Path, config, shards: int, options) -> None:
    """``featurize`` as one task per shard (Slurm job array, or here one after another)."""
    from vadpipe.cache import is_hdf5
    from vadpipe.distribute.featurize_array import submit_featurize

    sub = submit_featurize(manifest, cache, config, shards, options)
    for shard, task in sorted(sub.running.items()):
        typer.echo(f"shard {shard}: still queued or running as {task}; not resubmitted")
    complete = shards - len(sub.todo)
    if not sub.shards:
        typer.echo(f"{sub.encoder_key} -> {cache}: nothing to submit ({complete} of {shards} shards complete)")
        return
    listed = ",".join(map(str, sub.shards))
    if sub.job_id:
        typer.echo(f"submitted job {sub.job_id}: shards {listed} of {shards} ({complete} complete already); "
                   f"logs in {sub.folder}")
        if not options.wait:
            typer.echo(f"not waiting: follow it with `squeue -j {sub.job_id}`; "
                       "rerun this command to resubmit shards with videos not done")
            return
    outcomes = wait_and_report(sub.handles, sub.folder, lambda summary: summary.line())
    summaries = [o.result for o in outcomes if o.ok]
    videos_failed = [rec for s in summaries for rec in s.failed]
    typer.echo(f"{sub.encoder_key} -> {cache}: {sum(len(s.done) for s in summaries)} done, "
               f"{sum(len(s.skipped) for s in summaries)} skipped, {len(videos_failed)} failed videos; "
               f"{len(outcomes) - len(summaries)} of {len(outcomes)} tasks failed")
    print_failures(videos_failed)
    if is_hdf5(cache) and shards > 1:
        typer.echo(f"HDF5: each shard wrote its own file; join them with `vadpipe cache merge "
                   f"{cache.with_name(cache.stem)}.shard-*{cache.suffix} -o {cache}`")
    if videos_failed or len(summaries) < len(outcomes):
        typer.echo("rerun this command to resubmit the shards with videos not done", err=True)
        raise typer.Exit(1)
