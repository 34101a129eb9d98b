"""Cache tools behind ``vadpipe cache info|verify|merge|import|export``.

None of them loads torch: an imported encoder's embedding size is read from its open_clip
JSON config (:func:`vadpipe.encoders.spec.embed_dim`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vadpipe import __version__
from vadpipe.cache.failures import failures_log_path, record_failure
from vadpipe.cache.store import DONE, FAILED, INCOMPLETE, OBJECTS, FeatureCache
from vadpipe.data_manifests.schema import Manifest
from vadpipe.encoders.spec import canonical_key, embed_dim, parse_encoder, trained_with_quick_gelu
from vadpipe.errors import VadpipeError, one_line, output_dir
from vadpipe.vectors import l2_normalize

NORM_TOLERANCE = 2e-2  # float16 rounding of a unit vector stays well inside this


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cache_info(path: str | Path) -> dict:
    """Encoders, videos done / failed / incomplete, sampled frames, bytes, recipes."""
    path = Path(path)
    with FeatureCache(path) as cache:
        encoders = {}
        for key in cache.encoders():
            counts = {DONE: 0, FAILED: 0, INCOMPLETE: 0}
            samples = 0
            objects = 0
            failures = []
            for vid in cache.video_ids(key, status=None):
                attrs = cache.video_attrs(key, vid)
                state = cache.status(key, vid)
                counts[state] += 1
                if state == DONE:
                    samples += int(attrs.get("num_samples") or cache.array_info(key, vid)["frame_index"][0][0])
                    objects += int(attrs.get("num_objects") or 0)
                elif state == FAILED:
                    failures.append({"video_id": vid, **attrs["failed"]})
            recipe = cache.recipe(key)
            encoders[key] = {**counts, "samples": samples, "failures": failures, "recipe": recipe}
            if recipe.get("kind") == OBJECTS:
                encoders[key]["objects"] = objects
        return {"path": str(path), "format": cache.format, "bytes": disk_bytes(path), "encoders": encoders}


def verify_cache(path: str | Path) -> list[str]:
    """Problems found (empty list = healthy): shapes, dtypes, NaN, norms, done markers."""
    problems = []
    with FeatureCache(path) as cache:
        for key in cache.encoders():
            recipe = cache.recipe(key)
            dim = recipe.get("dim")
            normalised = recipe.get("normalised", True)
            objects = recipe.get("kind") == OBJECTS
            for vid in cache.video_ids(key, status=None):
                state = cache.status(key, vid)
                where = f"{key}/{vid}"
                if state == INCOMPLETE:
                    problems.append(f"{where}: incomplete (no done marker; a rerun redoes it)")
                    continue
                if state == FAILED:
                    continue
                problems += [f"{where}: {p}" for p in _verify_video(cache, key, vid, dim, normalised, objects)]
    return problems


def _verify_video(cache: FeatureCache, key: str, vid: str, dim, normalised: bool, objects: bool = False) -> list[str]:
    """A video group's problems. An objects group (one row per object and frame) may have no
    rows and repeats a frame index for each object in it; its boxes are ``(N, 4)``."""
    info = cache.array_info(key, vid)
    out = []
    for name, dtype in (("frame_index", "int64"), ("pts", "float64")):
        if name not in info:
            out.append(f"missing array {name}")
        elif info[name][1] != dtype:
            out.append(f"{name} has dtype {info[name][1]}, expected {dtype}")
    if out:
        return out
    f = cache.read(key, vid)
    T = len(f.frame_index)
    if T == 0 and not objects:
        out.append("no samples")
    if objects and np.any(np.diff(f.frame_index) < 0):
        out.append("frame_index is not in frame order")
    elif not objects and np.any(np.diff(f.frame_index) <= 0):
        out.append("frame_index is not strictly increasing")
    if objects:
        for name in ("track_id", "box", "det_score", "label"):
            if name not in f.arrays:
                out.append(f"missing array {name}")
        if "box" in f.arrays and f.arrays["box"].shape[1:] != (4,):
            out.append(f"box has shape {f.arrays['box'].shape}, expected (N, 4)")
    num_frames = f.attrs.get("num_frames")
    if num_frames is None:
        out.append("no num_frames attribute")
    elif T and (f.frame_index[0] < 0 or f.frame_index[-1] >= num_frames):
        out.append(f"frame_index outside [0, {num_frames})")
    arrays = dict(f.arrays)
    if f.emb is not None:
        arrays["emb"] = f.emb
        if f.emb.dtype != np.float16:
            out.append(f"emb has dtype {f.emb.dtype}, expected float16")
        if dim is not None and f.emb.shape[1:] != (dim,):
            out.append(f"emb has shape {f.emb.shape}, expected (T, {dim})")
        if normalised and np.isfinite(f.emb).all():
            norms = np.linalg.norm(f.emb.astype(np.float32), axis=1)
            bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
            if bad.size:
                out.append(f"{bad.size} embedding(s) not unit norm (first at sample {bad[0]}: {norms[bad[0]]:.4f})")
    for name, arr in arrays.items():
        if len(arr) != T:
            out.append(f"{name} has {len(arr)} rows for {T} samples")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            out.append(f"{name} has NaN/inf values")
    return out


def merge_caches(inputs: list[str | Path], output: str | Path) -> dict:
    """Copy every encoder and every done video of ``inputs`` into ``output``.

    Recipes of the same encoder key must agree. A video done in several inputs is taken from
    the first; failures are carried over only for videos done nowhere. Returns counts.
    """
    output = Path(output)
    if any(Path(p).resolve() == output.resolve() for p in inputs):
        raise VadpipeError(f"{output}: the merge output cannot also be an input")
    copied, duplicates, failed = 0, 0, 0
    with FeatureCache(output, mode="a") as out:
        for src_path in inputs:
            with FeatureCache(src_path) as src:
                for key in src.encoders():
                    out.ensure_encoder(key, src.recipe(key))
                    for vid in src.video_ids(key, status=None):
                        state = src.status(key, vid)
                        if out.is_done(key, vid):
                            duplicates += state == DONE
                            continue
                        if state == DONE:
                            f = src.read(key, vid)
                            out.write_video(key, vid, f.frame_index, f.pts, f.emb, f.attrs, f.arrays)
                            copied += 1
                        elif state == FAILED:
                            attrs = src.video_attrs(key, vid)
                            out.mark_failed(key, vid, attrs["failed"]["stage"], attrs["failed"]["reason"], attrs)
                            failed += 1
    return {"copied": copied, "duplicates_skipped": duplicates, "failed_carried": failed}


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    failures_log: str | None = None


def import_npy(
    npy_dir: str | Path,
    cache_path: str | Path,
    encoder_key: str,
    manifest: Manifest,
    snippet: int = 1,
    crop: str = "mean",
    normalise: bool = False,
) -> ImportSummary:
    """Import peers' released per-video ``.npy`` features as if featurize had written them.

    ``NPY_DIR/<video_id>.npy`` holds ``(T, D)`` or ``(T, crops, D)`` (e.g. 10-crop
    RTFM/I3D or 5-crop XD features): one row per sampled frame or per snippet of
    ``snippet`` frames. Rows become frame indices 0, F, 2F, ...; ``crop`` = ``mean`` averages
    the crops, an integer picks one. ``num_frames`` comes from the manifest, else ``T * F``.
    When ``encoder_key`` names an open_clip model (``ViT-B-16:openai``, ``vadpipe-tiny``) the
    recipe records it, so heads that need the text tower can use it. Rows are kept as given
    (``normalise``: scaled to unit length), and the recipe records whether they are unit
    length (``normalised``), as featurize's does: the first imported file decides, and a later
    file that differs is refused (one key holds one geometry). Files are loaded with
    ``allow_pickle=False``; a bad file is recorded as failed (in its cache group when the
    encoder's subtree exists, and in ``CACHE.failures.jsonl`` with stage ``import``, as
    featurize does) and the others go on. A later import into the same key may come from
    another folder (peers often release train and test features apart): each video records
    its own source file.
    """
    npy_dir = Path(npy_dir)
    if not npy_dir.is_dir():
        raise VadpipeError(f"{npy_dir}: not a folder")
    if snippet < 1:
        raise VadpipeError(f"--snippet must be >= 1, got {snippet}")
    key, recipe = _import_recipe(encoder_key, npy_dir, snippet, crop, normalise)
    summary = ImportSummary()
    failed: list[tuple] = []
    with FeatureCache(cache_path, mode="a") as cache:
        if key in cache.encoders():  # a later import: same recipe (dim, geometry), or a clear error
            known = cache.recipe(key)
            recipe["dim"] = known.get("dim") if recipe.get("dim") is None else recipe["dim"]
            recipe["normalised"] = known.get("normalised") if not normalise else True
            cache.ensure_encoder(key, recipe)
        for entry in manifest:
            if cache.is_done(key, entry.video_id):
                summary.skipped.append(entry.video_id)
                continue
            file = npy_dir / f"{entry.video_id}.npy"
            try:
                emb = _load_features(file, crop)
            except VadpipeError as exc:
                failed.append((entry, file, str(exc)))
                continue
            if recipe.get("dim") is None:
                recipe["dim"] = int(emb.shape[1])
            if emb.shape[1] != recipe["dim"]:
                failed.append((entry, file, f"{file}: feature dim {emb.shape[1]} != {recipe['dim']}"))
                continue
            if normalise:
                emb = l2_normalize(emb)
            norms = np.linalg.norm(emb, axis=1)
            unit = bool(np.all(np.abs(norms[norms > 0] - 1) <= NORM_TOLERANCE))  # zero (padding) rows tell nothing
            if recipe.get("normalised") is None:
                recipe["normalised"] = unit
            if unit != recipe["normalised"]:
                have = "unit" if recipe["normalised"] else "not unit"
                failed.append((entry, file, f"{file}: rows are {'' if unit else 'not '}unit length, the key's are "
                                            f"{have} (--normalise makes every file's unit)"))
                continue
            T = len(emb)
            index = np.arange(T, dtype=np.int64) * snippet
            if entry.num_frames and index[-1] >= entry.num_frames:
                failed.append((entry, file, f"{file}: {T} rows x {snippet} frames go past the {entry.num_frames} "
                                            f"frames the manifest gives (wrong --snippet?)"))
                continue
            cache.ensure_encoder(key, recipe)
            num_frames = entry.num_frames or T * snippet
            fps = entry.fps
            pts = index / fps if fps else np.full(T, math.nan)
            attrs = {"num_frames": int(num_frames), "fps": fps, "num_samples": T,
                     "source": {"path": str(file), "size": file.stat().st_size}, "imported": True}
            cache.write_video(key, entry.video_id, index, pts, emb.astype(np.float16), attrs)
            summary.imported.append(entry.video_id)
        if failed:
            _record_import_failures(cache, key, failed, summary)
    return summary


def _record_import_failures(cache: FeatureCache, key: str, failed: list[tuple], summary: ImportSummary) -> None:
    log = failures_log_path(cache.path)
    summary.failures_log = str(log)
    target = cache if key in cache.encoders() else None  # no subtree yet when no file could be read
    for entry, file, reason in failed:  # the record names the file: the reason need not repeat it
        reason = reason.removeprefix(f"{file}: ")
        record_failure(target, key, replace(entry, path=str(file)), "import", reason, summary, log)


def _import_recipe(encoder_key: str, npy_dir: Path, snippet: int, crop: str, normalise: bool):
    recipe = {
        "imported": True,
        "import_source": str(npy_dir.resolve()),
        "sampling": {"mode": "imported", "snippet_len": snippet, "crop": crop},
        "normalised": True if normalise else None,  # None: the first file tells
        "vadpipe_version": __version__,
        "dim": None,
    }
    try:
        spec = parse_encoder(encoder_key)
    except VadpipeError:
        spec = None
    dim = embed_dim(spec.model) if spec is not None and spec.checkpoint is None else None
    if dim is not None:  # an open_clip name: heads can load its text tower (with the towers' activation)
        recipe.update({"model": spec.model, "pretrained": spec.tag, "dim": dim,
                       "quick_gelu": trained_with_quick_gelu(spec)})
        return spec.key, recipe
    return encoder_key, recipe


def _load_features(file: Path, crop: str) -> np.ndarray:
    if not file.is_file():
        raise VadpipeError(f"{file}: not found")
    try:
        arr = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise VadpipeError(f"{file}: not a readable .npy array ({one_line(exc, 120)})") from None
    if arr.dtype.kind not in "fiu" or arr.ndim not in (2, 3) or arr.shape[0] == 0:
        raise VadpipeError(f"{file}: expected a numeric (T, D) or (T, crops, D) array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.float32)
    if arr.ndim == 3:
        if crop == "mean":
            arr = arr.mean(axis=1)
        else:
            try:
                arr = arr[:, int(crop)]
            except (ValueError, IndexError):
                raise VadpipeError(f"{file}: crop {crop!r} not in 0..{arr.shape[1] - 1} (or 'mean')") from None
    if not np.isfinite(arr).all():
        raise VadpipeError(f"{file}: contains NaN/inf")
    return arr


def export_npy(cache_path: str | Path, encoder_key: str, out_dir: str | Path, video_ids=None) -> list[str]:
    """Write ``OUT/<video_id>.npy`` (float16 (T, D)) for done videos, plus ``OUT/index.json``
    with each video's frame indices and the encoder recipe. For an objects key the rows are
    objects (N, D) and ``index.json`` also lists each row's track id, box, score and label."""
    out = output_dir(out_dir)
    index = {}
    with FeatureCache(cache_path) as cache:
        key = encoder_key if encoder_key in cache.encoders() else canonical_key(encoder_key)
        ids = video_ids or cache.video_ids(key)
        for vid in ids:
            f = cache.read(key, vid)
            if f.emb is None:
                raise VadpipeError(f"{key}/{vid}: no image embeddings to export")
            tmp = out / f".{vid}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, f.emb)
            os.replace(tmp, out / f"{vid}.npy")
            index[vid] = {"frame_index": f.frame_index.tolist(), "num_frames": f.num_frames}
            for name in ("track_id", "box", "det_score", "label"):
                if name in f.arrays:
                    index[vid][name] = f.arrays[name].tolist()
        (out / "index.json").write_text(json.dumps({"encoder": key, "recipe": cache.recipe(key), "videos": index}))
    return list(ids)
