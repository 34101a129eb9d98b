"""``vadpipe cache info|verify|merge|import|export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from vadpipe.cli._common import cache_app, print_failures, user_errors


@cache_app.command("info")
@user_errors
def cache_info_cmd(cache: Path = typer.Argument(..., help="Cache (.zarr or .h5)."),
                   as_json: bool = typer.Option(False, "--json", help="Print the full info as JSON.")):
    """Encoders, videos done / failed / incomplete, samples, bytes, recipe."""
    from vadpipe.cache.tools import cache_info

    info = cache_info(cache)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['path']} ({info['format']}, {info['bytes'] / 2**20:.1f} MiB)")
    for key, enc in info["encoders"].items():
        r = enc["recipe"]
        typer.echo(f"  {key}: {enc['done']} done, {enc['failed']} failed, {enc['incomplete']} incomplete; "
                   f"{enc['samples']} samples; dim {r.get('dim')}; sampling {json.dumps(r.get('sampling'))}; "
                   f"precision {r.get('precision', '-')}"
                   + (f"; {enc['objects']} objects from {r['objects']['detector']}" if "objects" in enc else ""))
        for f in enc["failures"][:10]:
            typer.echo(f"    failed {f['video_id']}: {f['stage']}: {f['reason']}")


@cache_app.command("verify")
@user_errors
def cache_verify_cmd(cache: Path = typer.Argument(..., help="Cache (.zarr or .h5).")):
    """Check shapes, dtypes, NaN, norms and done markers; exit 1 when a problem is found."""
    from vadpipe.cache.tools import verify_cache

    problems = verify_cache(cache)
    for p in problems:
        typer.echo(p)
    typer.echo(f"{cache}: {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@cache_app.command("merge")
@user_errors
def cache_merge_cmd(inputs: List[Path] = typer.Argument(..., help="Caches to merge (e.g. per-shard .h5 files)."),
                    output: Path = typer.Option(..., "-o", "--output", help="Cache to write into (.zarr or .h5).")):
    """Join caches (e.g. the per-shard HDF5 files of a sharded run) into one."""
    from vadpipe.cache.tools import merge_caches

    counts = merge_caches(inputs, output)
    typer.echo(f"{output}: {counts['copied']} videos copied, {counts['duplicates_skipped']} duplicates skipped, "
               f"{counts['failed_carried']} failures carried over")


@cache_app.command("import")
@user_errors
def cache_import_cmd(
    npy_dir: Path = typer.Argument(..., help="Folder of <video_id>.npy feature files."),
    cache: Path = typer.Option(..., "--cache"),
    encoder: str = typer.Option(..., "--encoder", help="Key to file them under (an open_clip name keeps the text tower usable)."),
    manifest: Path = typer.Option(..., "--manifest"),
    snippet: int = typer.Option(1, "--snippet", help="Frames per row of the .npy files (16 for snippet features)."),
    crop: str = typer.Option("mean", "--crop", help="For (T, crops, D) files: mean or a crop index."),
    normalise: bool = typer.Option(False, "--normalise/--no-normalise", help="Scale rows to unit length (default: keep them as given; the recipe says whether they are)."),
):
    """Import peers' released per-video .npy features (AnomalyCLIP / VadCLIP / RTFM layouts)."""
    from vadpipe.cache.tools import import_npy
    from vadpipe.data_manifests import load_manifest

    summary = import_npy(npy_dir, cache, encoder, load_manifest(manifest), snippet=snippet, crop=crop, normalise=normalise)
    typer.echo(f"{cache}: {len(summary.imported)} imported, {len(summary.skipped)} already there, {len(summary.failed)} failed")
    print_failures(summary.failed, summary.failures_log)
    if summary.failed:
        raise typer.Exit(1)


@cache_app.command("export")
@user_errors
def cache_export_cmd(cache: Path = typer.Argument(...), encoder: str = typer.Option(..., "--encoder"),
                     output: Path = typer.Option(..., "-o", "--output", help="Folder for <video_id>.npy + index.json.")):
    """Write each done video's embeddings as <video_id>.npy (float16, T x D)."""
    from vadpipe.cache.tools import export_npy

    ids = export_npy(cache, encoder, output)
    typer.echo(f"wrote {len(ids)} .npy files and index.json to {output}")
