"""The ``kmeans`` head (Gao et al. 2024): action-prompt responses, cosine k-means, 1 - max cos.

Planted normal modes must be directions the prompt set can tell apart: a response vector is
the projection of a frame onto the N prompt embeddings, so the modes are planted along right
singular vectors of the prompt-embedding matrix (orthogonal responses), and anomalies are
random directions, far from every mode.
"""

import json

import numpy as np
import pytest

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head
from vadpipe.heads.kmeans import DEFAULT_TEMPLATES, pool_window, spherical_kmeans
from vadpipe.heads.prompts import PROMPTS_DIR
from vadpipe.heads.prompts import load_prompt_list as load_prompts
from vadpipe.heads.text import embed_prompts

from conftest import frame_auc, planted_cache, unit

D = 64


def planted_modes(tmp_path, modes, seed=0, n_train=6, n_test=5, T=40, noise=0.05):
    """Normal frames near one of ``modes`` (mode id per frame returned); test videos have a
    run of frames in random directions."""
    rng = np.random.default_rng(seed)
    rows, entries, train_modes = [], [], []
    for i in range(n_train):
        lab = rng.integers(len(modes), size=T)
        rows.append({"video_id": f"tr{i}", "emb": modes[lab] + noise * rng.normal(size=(T, D))})
        entries.append(VideoEntry(f"tr{i}", "x", "train", "normal"))
        train_modes.append(lab)
    for i in range(n_test):
        emb = modes[rng.integers(len(modes), size=T)] + noise * rng.normal(size=(T, D))
        a = int(rng.integers(5, T - 17))
        emb[a : a + 12] = rng.normal(size=(12, D))
        rows.append({"video_id": f"te{i}", "emb": emb})
        entries.append(VideoEntry(f"te{i}", "x", "test", "odd", (Interval(a, a + 12),), num_frames=T))
    return planted_cache(tmp_path / "km.zarr", rows), Manifest(entries), np.concatenate(train_modes)


def singular_modes(prompt_emb, k):
    """k orthonormal directions the prompts respond to independently (skipping the first,
    the direction all prompts share)."""
    return np.linalg.svd(prompt_emb, full_matrices=False)[2][1 : k + 1]


def test_kinetics400_prompt_set(tmp_path):
    names = load_prompts("kinetics400")
    assert len(names) == 400 == len(set(names)) and all(n == n.strip() and n for n in names)
    assert names[0] == "abseiling" and names[-1] == "zumba" and "riding a bike" in names
    assert load_prompts(str(PROMPTS_DIR / "kinetics400.txt")) == names
    f = tmp_path / "mine.txt"
    f.write_text("# my scene\nwalking\n\n  cycling \n")
    assert load_prompts(str(f)) == ["walking", "cycling"] and load_prompts(["a", "b"]) == ["a", "b"]
    with pytest.raises(VadpipeError, match="appears twice"):
        load_prompts(["a", "a"])
    with pytest.raises(VadpipeError, match="nope.txt not found"):
        load_prompts(str(tmp_path / "nope.txt"))


def test_spherical_kmeans_recovers_modes():
    rng = np.random.default_rng(3)
    modes = unit(rng.normal(size=(5, 30)))
    lab = rng.integers(5, size=600)
    x = modes[lab] * rng.uniform(0.5, 2.0, size=(600, 1)) + 0.05 * rng.normal(size=(600, 30))  # norm is ignored
    centres, labels = spherical_kmeans(x, 5, seed=1)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    table = np.zeros((5, 5), int)
    np.add.at(table, (lab, labels), 1)
    assert ((table > 0).sum(axis=1) == 1).all() and ((table > 0).sum(axis=0) == 1).all()  # a permutation
    assert (centres @ modes.T).max(axis=1).min() > 0.99
    again, _ = spherical_kmeans(x, 5, seed=1)
    np.testing.assert_array_equal(centres, again)  # seeded
    with pytest.raises(VadpipeError, match="fewer than num_centers"):
        spherical_kmeans(x[:3], 5)


def test_rows_are_stacked_through_blocks_and_normalised_in_place():
    """kmeans' and s3m's stacking: np.concatenate of any iterable (a list is emptied), through
    blocks smaller and larger than the parts; rows normalised in place as l2_normalize does."""
    from vadpipe.vectors import l2_normalize, normalize_rows_, stack_rows

    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 0, 7, 1, 12)]
    want = np.concatenate(parts)
    for block in (8, 40, 1 << 20):  # 8 bytes: a row a block; 40: two rows; one block for all
        np.testing.assert_array_equal(stack_rows((p for p in parts), block_bytes=block), want)
    listed = list(parts)
    half = stack_rows(listed, np.float16, block_bytes=64)
    assert listed == [] and half.dtype == np.float16 and np.array_equal(half, want.astype(np.float16))
    assert stack_rows(iter([])).shape == (0, 0) and stack_rows([np.zeros((0, 4))]).shape == (0, 4)
    x = want.copy()
    assert normalize_rows_(x) is x
    np.testing.assert_allclose(x, l2_normalize(want), rtol=1e-6)


def test_pool_window_is_a_centred_mean():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(7, 4)))
    pooled = pool_window(emb, 3)
    np.testing.assert_allclose(pooled[3], unit(emb[2:5].mean(axis=0)), rtol=1e-5)
    np.testing.assert_allclose(pooled[0], unit(emb[0:2].mean(axis=0)), rtol=1e-5)  # truncated at the ends
    np.testing.assert_allclose(pool_window(emb, 1), emb, rtol=1e-6)


def test_kmeans_finds_planted_modes_and_anomalies(tmp_path, tiny_encoder):
    K = 4
    prompt_emb = embed_prompts(tiny_encoder, load_prompts("kinetics400"), DEFAULT_TEMPLATES)
    modes = singular_modes(prompt_emb, K)
    cache, manifest, train_modes = planted_modes(tmp_path, modes)
    head = get_head("kmeans", num_centers=K).fit(cache, manifest)
    assert head.centers_.shape == (K, 400) and head.prompt_emb_.shape == (400, D)
    scores = head.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, scores) >= 0.95
    assert set(scores["te0"].explanation) <= set(head.prompts_)
    # the modes found are the planted ones: normal training frames of one planted mode all go
    # to one centre, and different modes to different centres
    train = np.concatenate([cache.read(head.encoder, v).emb for v in manifest.ids("train")])
    found = (unit(head.response_vectors(train)) @ head.centers_.T).argmax(axis=1)
    table = np.zeros((K, K), int)
    np.add.at(table, (train_modes, found), 1)
    assert ((table > 0).sum(axis=1) == 1).all() and len(np.unique(found)) == K


def test_learned_prompts_sharpen_responses_and_save_load(tmp_path, tiny_encoder):
    prompts = load_prompts("kinetics400")[::32]  # 13 prompts: a user list keeps this test fast
    plain = embed_prompts(tiny_encoder, prompts, DEFAULT_TEMPLATES)
    cache, manifest, _ = planted_modes(tmp_path, singular_modes(plain, 3), n_train=4, n_test=3)
    params = dict(prompts=prompts, num_centers=3, learn_prompts=True, prompt_steps=12, lr=5e-3)
    head = get_head("kmeans", **params).fit(cache, manifest)
    losses = head.prompt_losses_
    assert losses[-1] < losses[0]  # the pseudo-label (maximal-response) loss goes down
    assert head.ctx_.shape == (8, 64) and not np.allclose(head.prompt_emb_, plain, atol=1e-3)
    before = head.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, before) >= 0.9
    head.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["extra"]["prompts"] == prompts and meta["config"]["learn_prompts"] is True
    after = load_head(tmp_path / "run").score_videos(cache, manifest.ids("test"))
    for vid in before:
        np.testing.assert_array_equal(before[vid].score, after[vid].score)
        np.testing.assert_array_equal(before[vid].explanation, after[vid].explanation)
    again = get_head("kmeans", **params).fit(cache, manifest)  # seeded: the same fit twice
    np.testing.assert_array_equal(again.centers_, head.centers_)


def test_kmeans_config_errors(tmp_path):
    with pytest.raises(VadpipeError, match="num_centers must be >= 1"):
        get_head("kmeans", num_centers=0)
    rng = np.random.default_rng(0)
    cache = planted_cache(tmp_path / "small.zarr", [{"video_id": "tr", "emb": rng.normal(size=(5, D))}])
    manifest = Manifest([VideoEntry("tr", "x", "train", "normal")])
    with pytest.raises(VadpipeError, match="5 normal training samples are fewer than num_centers=10"):
        get_head("kmeans").fit(cache, manifest)


def test_presets_are_the_papers_per_dataset_settings():
    """Gao et al. sec. 4.2: 10 centres for Ped2 and Avenue, 20 for ShanghaiTech; learned prompts
    (AdamW, lr 2e-4, batch 128); 9-frame clips (window=9 on whole frames)."""
    for name, centres in (("ped2", 10), ("avenue", 10), ("shanghaitech", 20)):
        cfg = get_head("kmeans", preset=name).config
        assert (cfg.num_centers, cfg.learn_prompts, cfg.lr, cfg.batch_size, cfg.window) == (centres, True, 2e-4, 128, 9)
    assert get_head("kmeans", preset="ped2", learn_prompts=False).config.learn_prompts is False
