"""BLIP-2 answers in the cache, with a tiny random BLIP-2 saved to disk (no download).

Random weights give arbitrary answers: these tests check the plumbing (keys, shapes, the
CLIP text embeddings, resume, determinism, failures, the CLI), not what BLIP-2 says.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vadpipe.cache import FeatureCache
from vadpipe.data_manifests import Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
from vadpipe.featurize.captioner import (
    CAPTION,
    DEFAULT_QUESTIONS,
    caption,
    captioner_key,
    load_questions,
)
from vadpipe.texts import normalize_answer

from conftest import TINY, TINY_KEY, make_tiny_blip2

STRIDE = 3
SHORT = 6  # max_new_tokens in these tests: random answers need not be long


def write_frame_folders(root, num_videos=3, num_frames=12, seed=0):
    """Small frame-folder videos of smooth random blobs; returns their manifest (all train)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    entries = []
    for v in range(num_videos):
        folder = root / f"v{v}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.float64)
        for i in range(num_frames):
            img = np.kron(np.clip(base + 8 * i, 0, 255), np.ones((8, 8, 1))).astype(np.uint8)  # (48 64 3)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        entries.append(VideoEntry(f"v{v}", str(folder), "train", "normal"))
    return Manifest(entries)


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory):
    return make_tiny_blip2(tmp_path_factory.mktemp("blip2") / "tiny-blip2")


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    """Frame folders featurized with vadpipe-tiny (every 3rd frame); no captions yet."""
    root = tmp_path_factory.mktemp("captions")
    manifest = write_frame_folders(root / "videos")
    featurize(manifest, root / "clip.zarr", FeaturizeConfig(encoder=TINY, sampling=Sampling(STRIDE)))
    return manifest, root / "clip.zarr"


def fresh_copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_answers_and_their_clip_embeddings_are_cached(clip_cache, tiny_blip2, tmp_path, tiny_encoder):
    manifest, clip_path = clip_cache
    path = fresh_copy(clip_path, tmp_path / "c.zarr")
    summary = caption(manifest, path, str(tiny_blip2), TINY_KEY, batch_size=3, max_new_tokens=SHORT)
    key = captioner_key(str(tiny_blip2), DEFAULT_QUESTIONS, max_new_tokens=SHORT)
    assert summary.encoder_key == key and key.startswith("tiny-blip2:vqa4-") and len(key) == len("tiny-blip2:vqa4-") + 8
    assert summary.done == ["v0", "v1", "v2"] and not summary.failed and summary.frames == 3 * 4
    cache = FeatureCache(path)
    assert cache.keys(kind="captioner") == [key] and cache.keys(kind="captioner", clip_key="other:key") == []
    recipe = cache.recipe(key)
    assert recipe["kind"] == "captioner" and recipe["clip_key"] == TINY_KEY and recipe["dim"] == 64
    assert recipe["questions"] == list(DEFAULT_QUESTIONS) and recipe["questions"][-1] == CAPTION
    assert recipe["questions"][0] == "What is the pose of the person in the picture?"
    assert recipe["generation"] == {"max_new_tokens": SHORT, "num_beams": 1, "do_sample": False}
    assert recipe["model"] == str(tiny_blip2.resolve()) and recipe["sampling"] == cache.recipe(TINY_KEY)["sampling"]
    for vid in manifest.ids():
        clip, cap = cache.read(TINY_KEY, vid), cache.read(key, vid)
        np.testing.assert_array_equal(cap.frame_index, clip.frame_index)
        assert cap.emb is None and cap.num_frames == 12
        text, emb = cap.arrays["text"], cap.arrays["text_emb"]
        assert text.dtype.kind == "U" and text.shape == (4, 4)
        assert emb.dtype == np.float16 and emb.shape == (4, 4, 64)
        assert all(a == normalize_answer(a) and a for a in text.ravel())
        expected = tiny_encoder.encode_text(text.ravel().tolist()).astype(np.float16).reshape(4, 4, 64)
        np.testing.assert_array_equal(emb, expected)
    assert len(set(cache.read(key, "v0").arrays["text"][:, 0])) > 1  # answers follow the frame

    # resume: nothing is redone, nothing rewritten
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    again = caption(manifest, path, str(tiny_blip2), TINY_KEY, batch_size=3, max_new_tokens=SHORT)
    assert again.done == [] and again.skipped == ["v0", "v1", "v2"]
    assert before == {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}

    # determinism: another run, with another batch size, gives the same text
    other = fresh_copy(clip_path, tmp_path / "d.zarr")
    caption(manifest, other, str(tiny_blip2), TINY_KEY, batch_size=4, max_new_tokens=SHORT)
    for vid in manifest.ids():
        np.testing.assert_array_equal(FeatureCache(other).read(key, vid).arrays["text"],
                                      cache.read(key, vid).arrays["text"])


def test_question_sets_never_share_a_key(tmp_path, clip_cache, tiny_blip2):
    q = ["What is the person doing?", CAPTION]
    (tmp_path / "q.txt").write_text("# my questions\nWhat is the person doing?\n\n<caption>\n")
    (tmp_path / "q.json").write_text(json.dumps(q))
    assert load_questions(tmp_path / "q.txt") == q == load_questions(tmp_path / "q.json")
    keys = {captioner_key("Salesforce/blip2-opt-2.7b", qs) for qs in (q, q[:1], q[::-1], DEFAULT_QUESTIONS)}
    assert len(keys) == 4 and all(k.startswith("blip2-opt-2.7b:vqa") for k in keys)
    assert captioner_key("x", q, max_new_tokens=5) != captioner_key("x", q)
    (tmp_path / "bad.json").write_text('{"q": 1}')
    (tmp_path / "dup.txt").write_text("a?\na?\n")
    for name, message in [("missing.txt", "not found"), ("bad.json", "JSON list"), ("dup.txt", "twice")]:
        with pytest.raises(VadpipeError, match=message):
            load_questions(tmp_path / name)
    manifest, clip_path = clip_cache
    path = fresh_copy(clip_path, tmp_path / "c.zarr")
    summary = caption(manifest, path, str(tiny_blip2), TINY_KEY, questions=q, video_ids=["v1"], max_new_tokens=SHORT)
    text = FeatureCache(path).read(summary.encoder_key, "v1").arrays["text"]
    assert summary.encoder_key.startswith("tiny-blip2:vqa2-") and text.shape == (4, 2)
    with pytest.raises(VadpipeError, match="could not load captioner"):
        caption(manifest, path, str(tmp_path / "no_such_model"), TINY_KEY)
    with pytest.raises(VadpipeError, match="is a captioner"):
        caption(manifest, path, str(tiny_blip2), summary.encoder_key)


def test_a_changed_video_fails_and_the_others_finish(tmp_path, clip_cache, tiny_blip2):
    manifest, clip_path = clip_cache
    path = fresh_copy(clip_path, tmp_path / "c.zarr")
    videos = tmp_path / "videos"
    shutil.copytree(Path(manifest["v0"].path).parent, videos)
    for f in sorted((videos / "v1").iterdir())[6:]:
        f.unlink()  # v1 lost its last frames since featurize
    shutil.rmtree(videos / "v2")
    moved = Manifest([VideoEntry(e.video_id, str(videos / e.video_id), "train", "normal") for e in manifest])
    summary = caption(moved, path, str(tiny_blip2), TINY_KEY, max_new_tokens=SHORT)
    assert summary.done == ["v0"]
    reasons = {r["video_id"]: r["reason"] for r in summary.failed}
    assert reasons["v1"] == "source changed since featurize: found 2 of its 4 sampled frames"
    assert reasons["v2"] == "file not found"
    cache = FeatureCache(path)
    assert cache.video_ids(summary.encoder_key, status="failed") == ["v1", "v2"]
    log = (tmp_path / "c.zarr.failures.jsonl").read_text().splitlines()
    assert {json.loads(line)["video_id"] for line in log} == {"v1", "v2"}


def test_cli_featurize_runs_clip_then_captions(tmp_path, clip_cache, tiny_blip2):
    from vadpipe.cli import app

    manifest, _ = clip_cache
    manifest.save(tmp_path / "m.csv")
    (tmp_path / "q.txt").write_text("What is the person doing?\n")
    cache = tmp_path / "c.zarr"
    args = ["featurize", tmp_path / "m.csv", "--cache", cache, "--encoder", TINY, "--stride", STRIDE,
            "--captioner", tiny_blip2, "--questions", tmp_path / "q.txt", "--no-progress"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    key = captioner_key(str(tiny_blip2), ["What is the person doing?"])
    assert f"{TINY_KEY} -> {cache}: 3 done" in result.output and f"{key} -> {cache}: 3 done" in result.output
    assert FeatureCache(cache).read(key, "v2").arrays["text"].shape == (4, 1)
    result = CliRunner().invoke(app, [str(a) for a in args[:-5]] + ["--captioner", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "error: could not load captioner" in result.output
