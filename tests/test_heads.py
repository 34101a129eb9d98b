"""Heads on planted-structure caches: tests of the math, not of CLIP."""

import numpy as np
import pytest

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.models import NotFittedError, get_head, list_heads, load_head

from conftest import TINY_KEY, frame_auc, planted_cache, unit

D = 64


def planted_sphere(tmp_path, seed=0, n_train=6, n_test=6, T=40, n_weak=0):
    """Normal frames around one point of the sphere; anomalous frames around another.

    ``n_weak`` adds anomalous training videos with a video-level label only (weak
    supervision); one-class heads ignore them.
    """
    rng = np.random.default_rng(seed)
    normal_c, anomaly_c = unit(rng.normal(size=D)), unit(rng.normal(size=D))
    rows, entries = [], []

    def anomalous_emb():
        a, b = sorted(rng.choice(np.arange(5, T - 5), 2, replace=False))
        emb = normal_c + 0.08 * rng.normal(size=(T, D))
        emb[a:b] = anomaly_c + 0.08 * rng.normal(size=(b - a, D))
        return emb, Interval(int(a), int(b))

    for i in range(n_train):
        rows.append({"video_id": f"tr{i}", "emb": normal_c + 0.08 * rng.normal(size=(T, D))})
        entries.append(VideoEntry(f"tr{i}", "x", "train", "normal"))
    for i in range(n_weak):
        emb, _ = anomalous_emb()
        rows.append({"video_id": f"wk{i}", "emb": emb})
        entries.append(VideoEntry(f"wk{i}", "x", "train", "Fighting"))
    for i in range(n_test):
        emb, interval = anomalous_emb()
        rows.append({"video_id": f"te{i}", "emb": emb})
        entries.append(VideoEntry(f"te{i}", "x", "test", "Fighting", (interval,), num_frames=T))
    return planted_cache(tmp_path / "planted.zarr", rows), Manifest(entries)


def test_prototype_finds_planted_anomalies(tmp_path):
    cache, manifest = planted_sphere(tmp_path)
    for metric in ("l2", "cosine"):
        head = get_head("prototype", metric=metric).fit(cache, manifest)
        assert head.encoder == TINY_KEY
        assert frame_auc(manifest, head.score_videos(cache, manifest.ids("test"))) >= 0.95


def test_zeroshot_follows_the_prompt_direction(tmp_path, tiny_encoder):
    from vadpipe.models.text import embed_prompts
    from vadpipe.models.zeroshot import DEFAULT_TEMPLATES

    normal_t, anomaly_t = embed_prompts(tiny_encoder, ["people walking", "a fire"], DEFAULT_TEMPLATES)
    rng = np.random.default_rng(1)
    rows, entries = [], []
    for i in range(6):
        T = 50
        emb = rng.normal(size=(T, D)) * 0.05 + normal_t
        a = int(rng.integers(5, 25))
        emb[a : a + 15] = rng.normal(size=(15, D)) * 0.05 + anomaly_t  # frames shifted toward "a fire"
        rows.append({"video_id": f"v{i}", "emb": emb})
        entries.append(VideoEntry(f"v{i}", "x", "test", "fire", (Interval(a, a + 15),), num_frames=T))
    cache, manifest = planted_cache(tmp_path / "z.zarr", rows), Manifest(entries)
    head = get_head("zeroshot", normal_prompts=["people walking"], anomaly_prompts=["a fire"]).fit(cache, manifest)
    scores = head.score_videos(cache, manifest.ids())
    assert frame_auc(manifest, scores) >= 0.95
    s = scores["v0"]
    assert s.class_names == ("fire",) and s.class_probs.shape == (50, 1)
    np.testing.assert_allclose(s.class_probs[:, 0], s.score, rtol=1e-6)  # one class: p(c|A) = 1
    assert set(s.explanation) <= {"people walking", "a fire"}


# small settings so every head trains in seconds (the papers' defaults take minutes to hours)
FAST = {
    "anomalyclip": dict(num_segments=4, frames_per_segment=4, top_k=1, batch_size=4, embed_dim=32, heads=2, steps=2),
    "clipassist": dict(epochs=1),
    "kmeans": dict(num_centers=3, prompts=["walking", "running", "fighting", "riding a bike"]),
    "s3m": dict(d_model=16, d_state=8, epochs=1),
}


@pytest.mark.parametrize("name", list_heads())
def test_save_load_gives_identical_scores(tmp_path, name):
    cache, manifest = planted_sphere(tmp_path, n_train=3, n_test=2, n_weak=3)
    head = get_head(name, **FAST.get(name, {}))
    with pytest.raises(NotFittedError):
        head.score_videos(cache, manifest.ids("test"))
    head.fit(cache, manifest)
    before = head.score_videos(cache, manifest.ids("test"))
    head.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "weights.safetensors"]
    after = load_head(tmp_path / "run").score_videos(cache, manifest.ids("test"))
    for vid in before:
        np.testing.assert_array_equal(before[vid].score, after[vid].score)
        np.testing.assert_array_equal(before[vid].frame_index, after[vid].frame_index)


def test_head_errors_are_clear(tmp_path):
    with pytest.raises(VadpipeError, match=r"unknown head 'nope' \(known: .*prototype"):
        get_head("nope")
    with pytest.raises(VadpipeError, match="unknown parameter"):
        get_head("prototype", k=3)
    cache, manifest = planted_sphere(tmp_path, n_train=2, n_test=1)
    with pytest.raises(VadpipeError, match="has no encoder 'ViT-B-16:openai'"):
        get_head("prototype", encoder="ViT-B-16:openai").fit(cache, manifest)
    with pytest.raises(VadpipeError, match="not featurized"):
        get_head("prototype").fit(cache, Manifest([VideoEntry("ghost", "x", "train", "normal")]))
    with pytest.raises(VadpipeError, match="not found"):
        load_head(tmp_path / "no_run")
