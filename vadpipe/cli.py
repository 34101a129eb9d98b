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
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, check, merge, import and export feature caches.")
app.add_typer(cache_app, name="cache")


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


# ---------------------------------------------------------------------------- executors (vadpipe.cluster)
_EXECUTOR_OPTIONS = {  # parameter name: (type, option); one declaration for every command that takes them
    "executor": (str, typer.Option("local", "--executor", help="local: run here; slurm: submit to Slurm (submitit).")),
    "wait": (bool, typer.Option(True, "--wait/--no-wait", help="slurm: wait, reporting tasks as they end; or return once submitted.")),
    "slurm_partition": (Optional[str], typer.Option(None, "--slurm-partition", help="Slurm partition.")),
    "slurm_gpus": (int, typer.Option(0, "--slurm-gpus", help="GPUs per task.")),
    "slurm_cpus": (Optional[int], typer.Option(None, "--slurm-cpus", help="CPUs per task (decode workers + model).")),
    "slurm_mem": (Optional[float], typer.Option(None, "--slurm-mem", help="Memory per task, GB.")),
    "slurm_time": (int, typer.Option(120, "--slurm-time", help="Time limit per task, minutes.")),
    "slurm_parallel": (Optional[int], typer.Option(None, "--slurm-parallel", help="Most array tasks running at once (%N).")),
    "slurm_account": (Optional[str], typer.Option(None, "--slurm-account")),
    "slurm_qos": (Optional[str], typer.Option(None, "--slurm-qos")),
    "slurm_extra": (Optional[List[str]], typer.Option(None, "--slurm-extra", help="Another sbatch option KEY=VALUE (e.g. constraint=a100); repeatable.")),
    "slurm_dir": (Optional[Path], typer.Option(None, "--slurm-dir", help="Logs and submitit files (default: OUTPUT.slurm next to the cache / run folder).")),
    "slurm_job_name": (Optional[str], typer.Option(None, "--slurm-job-name")),
}


def _executor_options(fn):
    """Give a command the ``--executor``, ``--wait`` and ``--slurm-*`` options; it receives them
    as one ``executor_options`` argument (a :class:`vadpipe.cluster.ExecutorOptions`)."""
    import inspect

    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "executor_options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, (kind, option) in _EXECUTOR_OPTIONS.items()]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vadpipe.cluster import ExecutorOptions, SlurmOptions

        o = {name: kwargs.pop(name) for name in _EXECUTOR_OPTIONS}
        slurm = SlurmOptions(
            partition=o["slurm_partition"], gpus=o["slurm_gpus"], cpus=o["slurm_cpus"], mem_gb=o["slurm_mem"],
            time_min=o["slurm_time"], array_parallelism=o["slurm_parallel"], account=o["slurm_account"],
            qos=o["slurm_qos"], extra=tuple(o["slurm_extra"] or ()), folder=o["slurm_dir"], job_name=o["slurm_job_name"],
        )
        return fn(*args, executor_options=ExecutorOptions(o["executor"], o["wait"], slurm), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + added)
    wrapper.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "executor_options"}
    return wrapper


def _given_options(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The command's arguments and the options the user gave, as a command line (for a
    script that reruns it elsewhere); ``drop`` names parameters to leave out."""
    args, opts = [], []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in drop or source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False):
            opts += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            for v in value if getattr(param, "multiple", False) else [value]:
                opts += [param.opts[0], str(getattr(v, "value", v))]
    return args + opts


def _wait_and_report(handles, folder, describe) -> list:
    """Wait for the tasks, one line as each ends; then the failed ones with their log files."""
    from vadpipe.cluster import wait_for

    def report(outcome, ended, total):
        where = f" ({outcome.job_id})" if outcome.job_id else ""
        what = describe(outcome.result) if outcome.ok else f"FAILED: {outcome.error}"
        typer.echo(f"[{ended}/{total}] {outcome.label}{where}: {what}")

    try:
        outcomes = wait_for(handles, report)
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; the tasks keep running (squeue; logs in {folder})", err=True)
        raise typer.Exit(130) from None
    failed = [o for o in outcomes if not o.ok]
    if failed:
        typer.echo(f"{len(failed)} task(s) failed:", err=True)
        for o in failed:
            typer.echo(f"  {o.label}{f' ({o.job_id})' if o.job_id else ''}: {o.error}", err=True)
            for log in o.logs:
                typer.echo(f"    {log}", err=True)
    return outcomes


def _featurize_array(manifest: Path, cache: Path, config, shards: int, options) -> None:
    """``featurize`` as one task per shard (Slurm job array, or here one after another)."""
    from vadpipe.cluster import submit_featurize

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
    outcomes = _wait_and_report(sub.handles, sub.folder, lambda summary: summary.line())
    summaries = [o.result for o in outcomes if o.ok]
    videos_failed = [rec for s in summaries for rec in s.failed]
    typer.echo(f"{sub.encoder_key} -> {cache}: {sum(len(s.done) for s in summaries)} done, "
               f"{sum(len(s.skipped) for s in summaries)} skipped, {len(videos_failed)} failed videos; "
               f"{len(outcomes) - len(summaries)} of {len(outcomes)} tasks failed")
    for rec in videos_failed:
        typer.echo(f"failed: {rec['video_id']} ({rec['path']}): {rec['stage']}: {rec['reason']}", err=True)
    if cache.suffix.lower() in (".h5", ".hdf5") and shards > 1:
        typer.echo(f"HDF5: each shard wrote its own file; join them with `vadpipe cache merge "
                   f"{cache.with_name(cache.stem)}.shard-*{cache.suffix} -o {cache}`")
    if videos_failed or len(summaries) < len(outcomes):
        typer.echo("rerun this command to resubmit the shards with videos not done", err=True)
        raise typer.Exit(1)


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
@_executor_options
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
    captioner: Optional[str] = typer.Option(
        None, "--captioner", help="Then answer questions about each sampled frame with this BLIP-2 (hub id or local folder)."
    ),
    questions: Optional[Path] = typer.Option(
        None, "--questions", help="Questions for --captioner: JSON list or text, one per line (default: VLAVAD's three + a caption)."
    ),
    shards: int = typer.Option(1, "--shards", help="With --executor slurm / --emit-sbatch: array tasks, task i = shard i."),
    emit_sbatch: Optional[Path] = typer.Option(None, "--emit-sbatch", help="Write this sbatch array script instead of running."),
    executor_options=None,
):
    """Decode, sample and embed every video of MANIFEST into the feature cache (then caption it)."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.featurize import FeaturizeConfig, Sampling
    from vadpipe.featurize import featurize as run_featurize

    config = FeaturizeConfig(
        encoder=encoder,
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
            from vadpipe.cluster import default_folder, write_sbatch_array

            argv = _given_options(ctx, {*_EXECUTOR_OPTIONS, "shards", "emit_sbatch", "shard", "num_shards", "progress"})
            folder = executor_options.slurm.folder or default_folder(cache)
            write_sbatch_array(emit_sbatch, argv, shards, executor_options.slurm, folder)
            typer.echo(f"wrote {emit_sbatch}: {shards} array task(s), logs in {folder}; submit with `sbatch {emit_sbatch}`")
            return
        if captioner is not None:
            raise VadpipeError("--captioner runs in a plain local run or with --emit-sbatch; not yet with --shards / --executor slurm")
        _featurize_array(manifest, cache, config, shards, executor_options)
        return
    videos = load_manifest(manifest)
    show = progress and sys.stderr.isatty()
    summaries = [run_featurize(videos, cache, config, progress=show)]
    typer.echo(f"{summaries[0].encoder_key} -> {cache}: {summaries[0].line()}")
    if captioner is not None:
        from vadpipe.featurize.captioner import DEFAULT_QUESTIONS, caption, load_questions

        summaries.append(caption(
            videos, cache, captioner, summaries[0].encoder_key,
            questions=load_questions(questions) if questions else DEFAULT_QUESTIONS, batch_size=batch_size,
            device=device, shard=shard, num_shards=num_shards, failures_log=config.failures_log, progress=show,
        ))
        typer.echo(f"{summaries[1].encoder_key} -> {cache}: {summaries[1].line()}")
    failed = [rec for summary in summaries for rec in summary.failed]
    if failed:
        for rec in failed:
            typer.echo(f"failed: {rec['video_id']} ({rec['path']}): {rec['stage']}: {rec['reason']}", err=True)
        typer.echo(f"{len(failed)} video(s) failed; details in {summaries[0].failures_log}", err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- cache tools
@cache_app.command("info")
@_user_errors
def cache_info_cmd(cache: Path = typer.Argument(..., help="Cache (.zarr or .h5)."),
                   as_json: bool = typer.Option(False, "--json", help="Print the full info as JSON.")):
    """Encoders, videos done / failed / incomplete, samples, bytes, recipe."""
    from vadpipe.cache_tools import cache_info

    info = cache_info(cache)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['path']} ({info['format']}, {info['bytes'] / 2**20:.1f} MiB)")
    for key, enc in info["encoders"].items():
        r = enc["recipe"]
        typer.echo(f"  {key}: {enc['done']} done, {enc['failed']} failed, {enc['incomplete']} incomplete; "
                   f"{enc['samples']} samples; dim {r.get('dim')}; sampling {json.dumps(r.get('sampling'))}; "
                   f"precision {r.get('precision', '-')}")
        for f in enc["failures"][:10]:
            typer.echo(f"    failed {f['video_id']}: {f['stage']}: {f['reason']}")


@cache_app.command("verify")
@_user_errors
def cache_verify_cmd(cache: Path = typer.Argument(..., help="Cache (.zarr or .h5).")):
    """Check shapes, dtypes, NaN, norms and done markers; exit 1 when a problem is found."""
    from vadpipe.cache_tools import verify_cache

    problems = verify_cache(cache)
    for p in problems:
        typer.echo(p)
    typer.echo(f"{cache}: {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@cache_app.command("merge")
@_user_errors
def cache_merge_cmd(inputs: List[Path] = typer.Argument(..., help="Caches to merge (e.g. per-shard .h5 files)."),
                    output: Path = typer.Option(..., "-o", "--output", help="Cache to write into (.zarr or .h5).")):
    """Join caches (e.g. the per-shard HDF5 files of a sharded run) into one."""
    from vadpipe.cache_tools import merge_caches

    counts = merge_caches(inputs, output)
    typer.echo(f"{output}: {counts['copied']} videos copied, {counts['duplicates_skipped']} duplicates skipped, "
               f"{counts['failed_carried']} failures carried over")


@cache_app.command("import")
@_user_errors
def cache_import_cmd(
    npy_dir: Path = typer.Argument(..., help="Folder of <video_id>.npy feature files."),
    cache: Path = typer.Option(..., "--cache"),
    encoder: str = typer.Option(..., "--encoder", help="Key to file them under (an open_clip name keeps the text tower usable)."),
    manifest: Path = typer.Option(..., "--manifest"),
    snippet: int = typer.Option(1, "--snippet", help="Frames per row of the .npy files (16 for snippet features)."),
    crop: str = typer.Option("mean", "--crop", help="For (T, crops, D) files: mean or a crop index."),
    normalise: bool = typer.Option(True, "--normalise/--no-normalise", help="L2-normalise rows (CLIP features)."),
):
    """Import peers' released per-video .npy features (AnomalyCLIP / VadCLIP / RTFM layouts)."""
    from vadpipe.cache_tools import import_npy
    from vadpipe.data_manifests import load_manifest

    summary = import_npy(npy_dir, cache, encoder, load_manifest(manifest), snippet=snippet, crop=crop, normalise=normalise)
    typer.echo(f"{cache}: {len(summary.imported)} imported, {len(summary.skipped)} already there, {len(summary.failed)} failed")
    for f in summary.failed:
        typer.echo(f"failed: {f['video_id']}: {f['reason']}", err=True)
    if summary.failed:
        typer.echo(f"{len(summary.failed)} video(s) failed; details in {summary.failures_log}", err=True)
        raise typer.Exit(1)


@cache_app.command("export")
@_user_errors
def cache_export_cmd(cache: Path = typer.Argument(...), encoder: str = typer.Option(..., "--encoder"),
                     output: Path = typer.Option(..., "-o", "--output", help="Folder for <video_id>.npy + index.json.")):
    """Write each done video's embeddings as <video_id>.npy (float16, T x D)."""
    from vadpipe.cache_tools import export_npy

    ids = export_npy(cache, encoder, output)
    typer.echo(f"wrote {len(ids)} .npy files and index.json to {output}")


# ---------------------------------------------------------------------------- heads
@app.command()
@_user_errors
@_executor_options
def train(
    head: str = typer.Argument(..., help="Head name (see `vadpipe heads`)."),
    cache: Path = typer.Option(..., "--cache"),
    manifest: Path = typer.Option(..., "--manifest"),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (config.json + weights.safetensors)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder key in the cache (default: the only one)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Hyper-parameter KEY=VALUE (JSON value); repeatable."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of hyper-parameters."),
    executor_options=None,
):
    """Fit a head on the training videos of MANIFEST, reading features from the cache."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.models.runs import train_head

    if executor_options.executor == "slurm":
        from vadpipe.cluster import submit_training

        handle = submit_training(head, cache, manifest, output, encoder, _parse_params(param, config), executor_options)
        folder = handle.job.paths.folder
        typer.echo(f"submitted job {handle.job_id} (train {head}); logs in {folder}")
        if executor_options.wait:
            [outcome] = _wait_and_report([handle], folder, lambda r: f"trained {r['head']} on {r['encoder']}")
            if not outcome.ok:
                raise typer.Exit(1)
            typer.echo(f"saved to {output}")
        return

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
):
    """Score the videos of one split with a trained head; write a scores store.

    --normal / --anomaly adjust the scores by text guidance without retraining (Gao et al. 2024, eq. 10).
    """
    from vadpipe.data_manifests import load_manifest
    from vadpipe.models.redefine import DEFAULT_STRENGTH, DEFAULT_THRESHOLD
    from vadpipe.models.runs import score_run

    if not (normal or anomaly) and (redefine_threshold is not None or redefine_strength is not None):
        raise VadpipeError("--redefine-threshold/--redefine-strength need a --normal or --anomaly phrase")
    path, skipped = score_run(
        run_dir, cache, load_manifest(manifest), output, split=split, skip_missing=skip_missing,
        normal=normal or (), anomaly=anomaly or (),
        redefine_threshold=DEFAULT_THRESHOLD if redefine_threshold is None else redefine_threshold,
        redefine_strength=DEFAULT_STRENGTH if redefine_strength is None else redefine_strength,
    )
    typer.echo(f"wrote {path}" + (f" (skipped {len(skipped)} videos not in the cache)" if skipped else ""))
    if normal or anomaly:
        from vadpipe.scores import ScoresStore

        r = ScoresStore(path).meta["redefinition"]
        typer.echo(
            f"redefined by text: {r['frames_lowered']} frames lowered, {r['frames_raised']} raised "
            f"(threshold {r['threshold']})"
        )


@app.command()
@_user_errors
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
):
    """Frame-level micro/macro AUC, AP (and mAUC/mAP for class heads), or --compare runs."""
    if compare:
        return _evaluate_compare(paths or [], manifest, output)
    if not paths or len(paths) != 1 or manifest is None:
        raise VadpipeError("evaluate needs one SCORES store and --manifest (or --compare REPORT_DIR REPORT_DIR ...)")
    from vadpipe.data_manifests import load_manifest
    from vadpipe.evaluate import EvalConfig, format_table
    from vadpipe.evaluate import evaluate as run_evaluate

    config = EvalConfig(expansion=expansion, sigma=sigma, plots=plots, max_timelines=max_timelines)
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
    for i, report in enumerate(result["reports"].values()):
        lines = format_table(report).splitlines()  # protocol line, then the head's own table
        typer.echo("\n".join(lines if i == 0 else lines[1:]))
    typer.echo(f"everything is under {result['out']}: data/ (videos + manifest.csv), cache.zarr, runs/, scores/, reports/")
    if (encoder or DEFAULT_ENCODER).startswith("vadpipe-tiny"):
        typer.echo("note: vadpipe-tiny has random weights; its numbers test the pipeline, not CLIP.")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
