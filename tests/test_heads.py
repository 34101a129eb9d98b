"""Every head, through the one interface: planted anomalies found, save -> load -> the same
scores in every field, provenance checks, run folders of earlier versions."""

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import NotFittedError, get_head, get_head_class, list_heads, load_head
from vadpipe.heads.text import embed_prompts
from vadpipe.heads.zeroshot import DEFAULT_TEMPLATES
from vadpipe.scores import Scores

from conftest import TINY_KEY, frame_auc, planted_cache, unit

D = 64
NORMAL_TEXT, ANOMALY_TEXT = "people walking", "fighting"
RUNS_02 = Path(__file__).parent / "data" / "runs-0.2"


RAW_NORM = 8.0  # about the norm of the tiny model's raw image features (ViT-B/16's are ~10)


def planted_sphere(tmp_path, seed=0, n_train=6, n_test=6, T=40, n_weak=0, centres=None, normalised=False):
    """Normal frames around one point of the sphere; anomalous frames around another.

    ``normalised``: a vadpipe 0.2 cache of unit rows; by default the rows are scaled to
    ``RAW_NORM``, as featurize stores an encoder's raw output.

    ``n_weak`` adds anomalous training videos with a video-level label only (weak
    supervision); one-class heads ignore them. ``centres`` (normal, anomaly) default to
    random points; the behaviour test puts them on the tiny text tower's embeddings of
    'people walking' and 'fighting', so that prompt-based heads have something to find.
    """
    rng = np.random.default_rng(seed)
    normal_c, anomaly_c = centres if centres is not None else (unit(rng.normal(size=D)), unit(rng.normal(size=D)))
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
    if not normalised:
        rows = [{**r, "emb": RAW_NORM * r["emb"]} for r in rows]
    return planted_cache(tmp_path / "planted.zarr", rows, normalised=normalised), Manifest(entries)


def test_prototype_finds_planted_anomalies(tmp_path):
    cache, manifest = planted_sphere(tmp_path)
    for metric in ("l2", "cosine"):
        head = get_head("prototype", metric=metric).fit(cache, manifest)
        assert head.encoder == TINY_KEY
        assert frame_auc(manifest, head.score_videos(cache, manifest.ids("test"))) >= 0.95


def test_zeroshot_follows_the_prompt_direction(tmp_path, tiny_encoder):
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
    head = get_head("zeroshot", mode="softmax", normal_prompts=["people walking"], anomaly_prompts=["a fire"]).fit(cache, manifest)
    scores = head.score_videos(cache, manifest.ids())
    assert frame_auc(manifest, scores) >= 0.95
    s = scores["v0"]
    assert s.class_names == ("fire",) and s.class_probs.shape == (50, 1)
    np.testing.assert_allclose(s.class_probs[:, 0], s.score, rtol=1e-6)  # one class: p(c|A) = 1
    assert set(s.explanation) <= {"people walking", "a fire"}


# Every head on the same planted sphere, with settings that train in seconds (the papers' take
# minutes to hours): (hyper-parameters, the AUC it must reach). Prompt heads get the texts the
# sphere is built on; weakly supervised heads learn from 'Fighting' training videos.
BEHAVIOUR = {
    "anomalyclip": (dict(num_segments=4, frames_per_segment=4, top_k=1, batch_size=8, embed_dim=32, heads=2,
                         steps=60, lr=1e-3), 0.9),
    "clipassist": (dict(epochs=8, lr=1e-2, batch_size=4), 0.85),  # 0.0 untrained: CLIP's alignment is inverted here
    "clipassist-frame": (dict(epochs=10, lr=1e-2, batch_size=8), 0.9),
    "kmeans": (dict(num_centers=3, prompts=[NORMAL_TEXT, ANOMALY_TEXT, "riding a bike", "a fire"]), 0.9),
    "prototype": ({}, 0.95),
    "s3m": (dict(d_model=32, d_state=16, epochs=5, sigma=0), 0.9),
    "zeroshot": (dict(anomaly_prompts=[ANOMALY_TEXT]), 0.9),
}


@pytest.fixture(scope="module")
def sphere(tmp_path_factory, tiny_encoder):
    centres = embed_prompts(tiny_encoder, [NORMAL_TEXT, ANOMALY_TEXT], DEFAULT_TEMPLATES)
    return planted_sphere(tmp_path_factory.mktemp("sphere"), n_train=6, n_test=4, n_weak=6, centres=centres)


def assert_same_scores(before: dict[str, Scores], after: dict[str, Scores]) -> None:
    """Every field of every video's Scores is identical (arrays bit for bit)."""
    assert list(before) == list(after)
    for vid, a in before.items():
        b = after[vid]
        for f in fields(Scores):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                assert x is not None and y is not None, (vid, f.name)
                assert x.dtype == y.dtype, (vid, f.name)
                np.testing.assert_array_equal(x, y, err_msg=f"{vid}: {f.name}")
            else:
                assert x == y, (vid, f.name)


def test_every_head_is_in_the_behaviour_table():
    assert sorted(BEHAVIOUR) == list_heads()


@pytest.mark.parametrize("name", list_heads())
def test_every_head_finds_planted_anomalies_and_reloads_identically(tmp_path, sphere, name):
    cache, manifest = sphere
    params, floor = BEHAVIOUR[name]
    head = get_head(name, **params)
    assert head.name == name == get_head_class(name).name
    with pytest.raises(NotFittedError):
        head.score_videos(cache, manifest.ids("test"))
    head.fit(cache, manifest)
    before = head.score_videos(cache, manifest.ids("test"))
    auc = frame_auc(manifest, before)
    assert auc >= floor, (name, auc)
    head.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "weights.safetensors"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "device" not in saved["config"] and saved["encoder_recipe"]["sampling"] == {"mode": "planted"}
    assert_same_scores(before, load_head(tmp_path / "run").score_videos(cache, manifest.ids("test")))


@pytest.mark.parametrize("run", sorted(p.name for p in RUNS_02.iterdir() if p.is_dir()))
def test_runs_saved_by_vadpipe_0_2_load_and_score_the_same(tmp_path, run):
    """Run folders written by vadpipe 0.2.0 (tests/data/runs-0.2, made by make_fixtures.py there):
    today's code loads them -- renamed weights, dropped run-time options and never-read
    tensors, 0.2's clipassist frame mode as clipassist-frame, an anomalyclip trained with
    device=cuda on this CPU -- and scores exactly what 0.2.0 scored. s3m's to float32 rounding:
    since 0.5 its S4D convolution is not an FFT (a Toeplitz product, since 0.5.3 one multiply-add
    per lag, the kernel from real exp / cos / sin: the same function, another order of
    operations)."""
    from test_s3m import answers_cache

    if run == "s3m-captions":
        cache, manifest = answers_cache(tmp_path / "answers.zarr")  # the caches 0.2.0 scored
    else:
        cache, manifest = planted_sphere(tmp_path, n_train=3, n_test=2, n_weak=3, normalised=True)
    head = load_head(RUNS_02 / run, device="cpu")
    assert head.name == (run if run == "clipassist-frame" else run.split("-")[0])
    got = head.score_videos(cache, manifest.ids("test"))
    expected = np.load(RUNS_02 / "scores.npz")
    for vid, s in got.items():
        prefix = f"{run}/{vid}/"
        np.testing.assert_array_equal(s.frame_index, expected[prefix + "frame_index"])
        if head.name == "s3m":
            np.testing.assert_allclose(s.score, expected[prefix + "score"], rtol=1e-6)
        else:
            np.testing.assert_array_equal(s.score, expected[prefix + "score"])
        if prefix + "class_probs" in expected:
            np.testing.assert_array_equal(s.class_probs, expected[prefix + "class_probs"])
            assert list(s.class_names) == list(expected[prefix + "class_names"])
        else:
            assert s.class_probs is None
        if prefix + "explanation" in expected:
            assert list(s.explanation) == list(expected[prefix + "explanation"])
        else:
            assert s.explanation is None


def test_a_run_trained_on_a_gpu_scores_on_a_cpu(tmp_path, sphere):
    """The device a head trained on is not part of the run: an old run that saved
    device=cuda loads on this CPU (above); a run trained on CUDA scores the same here."""
    import torch

    cache, manifest = sphere
    assert json.loads((RUNS_02 / "anomalyclip" / "config.json").read_text())["config"]["device"] == "cuda"
    assert load_head(RUNS_02 / "anomalyclip").net_.prototype.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA here: the CUDA -> CPU half of this test runs on a GPU machine")
    params, _ = BEHAVIOUR["anomalyclip"]
    head = get_head("anomalyclip", device="cuda", **params).fit(cache, manifest)
    head.save(tmp_path / "run")
    on_gpu = load_head(tmp_path / "run", device="cuda").score_videos(cache, manifest.ids("test"))
    on_cpu = load_head(tmp_path / "run", device="cpu").score_videos(cache, manifest.ids("test"))
    for vid in on_gpu:
        np.testing.assert_allclose(on_cpu[vid].score, on_gpu[vid].score, atol=1e-4)


def test_a_run_refuses_a_cache_whose_recipe_differs_under_its_key(tmp_path, tiny_encoder):
    from vadpipe.cache import FeatureCache

    cache, manifest = planted_sphere(tmp_path, n_train=2, n_test=1)
    head = get_head("prototype").fit(cache, manifest)
    head.save(tmp_path / "run")
    other = {
        "sampling": ({**tiny_encoder.recipe(), "sampling": {"mode": "stride", "stride": 8, "start": 0}},
                     r"trained on 'vadpipe-tiny:random' with sampling\.mode='planted', but cache .* has "
                     r"sampling\.mode='stride' under that key"),
        "preprocessing": ({**tiny_encoder.recipe(), "sampling": {"mode": "planted"},
                           "preprocessing": {**tiny_encoder.preprocessing.as_dict(), "size": 96}},
                          r"with preprocessing\.size=64, but cache .* has preprocessing\.size=96"),
    }
    for what, (recipe, message) in other.items():
        path = tmp_path / f"{what}.zarr"
        with FeatureCache(path, mode="a") as w:
            w.ensure_encoder(TINY_KEY, recipe)
            for vid in manifest.ids("test"):
                f = cache.read(TINY_KEY, vid)
                w.write_video(TINY_KEY, vid, f.frame_index, f.pts, f.emb, f.attrs)
        with FeatureCache(path) as c:
            for model in (head, load_head(tmp_path / "run")):
                with pytest.raises(VadpipeError, match=message) as err:
                    model.score_videos(c, manifest.ids("test"))
                assert "\n" not in str(err.value)
    # the same recipe in another cache (another run of featurize) is fine
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tmp_path / "planted.zarr", copy)
    with FeatureCache(copy) as c:
        assert_same_scores(head.score_videos(cache, ["te0"]), load_head(tmp_path / "run").score_videos(c, ["te0"]))


def test_head_errors_are_clear(tmp_path):
    with pytest.raises(VadpipeError, match=r"unknown head 'nope' \(known: .*prototype"):
        get_head("nope")
    with pytest.raises(VadpipeError, match="unknown parameter"):
        get_head("prototype", k=3)
    with pytest.raises(VadpipeError, match="score_batch_size must be an integer >= 1"):
        get_head("prototype", score_batch_size=0)
    cache, manifest = planted_sphere(tmp_path, n_train=2, n_test=1)
    with pytest.raises(VadpipeError, match="has no encoder 'ViT-B-16:openai'"):
        get_head("prototype", encoder="ViT-B-16:openai").fit(cache, manifest)
    with pytest.raises(VadpipeError, match="not featurized"):
        get_head("prototype").fit(cache, Manifest([VideoEntry("ghost", "x", "train", "normal")]))
    with pytest.raises(VadpipeError, match=r"prototype: no normal training videos selected \(split=train\)"):
        get_head("prototype").fit(cache, Manifest([VideoEntry("t", "x", "test", "normal")]))
    with pytest.raises(VadpipeError, match="not found"):
        load_head(tmp_path / "no_run")


def test_heads_on_raw_and_on_old_normalised_caches(tmp_path, tiny_encoder):
    """featurize stores raw rows now; caches of vadpipe 0.2 hold unit rows and say so. Every head
    trains on an old cache (anomalyclip's raw geometry refuses it with one line and trains on it
    with geometry=unit); a head that reads unit rows scores a raw cache of the same frames with
    the same run and nearly the same numbers, as does a head that reads rows as stored when it
    was trained on unit rows (one trained on raw rows refuses unit ones: below)."""
    centres = embed_prompts(tiny_encoder, [NORMAL_TEXT, ANOMALY_TEXT], DEFAULT_TEMPLATES)
    kw = dict(n_train=4, n_test=3, n_weak=4, centres=centres)
    old = planted_sphere(tmp_path / "old", normalised=True, **kw)
    raw = planted_sphere(tmp_path / "raw", **kw)
    assert old[0].recipe(TINY_KEY)["normalised"] is True and raw[0].recipe(TINY_KEY)["normalised"] is False
    ids = old[1].ids("test")
    for name in list_heads():
        params = BEHAVIOUR[name][0]
        head = get_head(name, **params)
        if head.geometry == "raw":
            with pytest.raises(VadpipeError, match=r"needs the encoder's raw features, but .* holds L2-normalised "
                                                   r"rows .*geometry=unit") as err:
                head.fit(*old)
            assert "\n" not in str(err.value)
            head = get_head(name, **params, geometry="unit")
        head.fit(*old)
        on_old = head.score_videos(old[0], ids)
        assert frame_auc(old[1], on_old) >= BEHAVIOUR[name][1] - 0.1, name
        # unit heads, and a stored head trained on unit rows, read the raw group as unit rows
        on_raw = head.score_videos(raw[0], ids)
        for vid in ids:
            np.testing.assert_allclose(on_raw[vid].score, on_old[vid].score, atol=2e-2, err_msg=name)


def test_stored_training_rows_are_read_as_the_unit_rows_at_half_the_bytes(tmp_path):
    """A head that keeps part of every training video (clipassist) holds the cache's float16
    rows and gets each video as the training set would have read it: the same unit rows, to the bit."""
    from vadpipe.heads.data import StoredRows

    for normalised in (False, True):
        cache, manifest = planted_sphere(tmp_path / str(normalised), n_train=2, n_test=1, normalised=normalised)
        head = get_head("clipassist")
        head.encoder = TINY_KEY  # as fit sets it
        read = [v.emb for v in head.training_set(cache, manifest).iter_videos()]
        data = head.training_set(cache, manifest, stored=True)
        kept = StoredRows([v.emb[::2] for v in data.iter_videos()], data.normalise)
        assert data.normalise is not normalised and all(p.dtype == np.float16 for p in kept.parts)
        assert len(kept) == len(read)
        for mine, theirs in zip(kept, read):
            np.testing.assert_array_equal(mine, theirs[::2])


def test_towers_are_built_with_the_activation_their_weights_were_trained_with(tmp_path):
    """open_clip 3 builds GELU towers and only warns when a tag was trained with QuickGELU
    (OpenAI's CLIP); vadpipe builds QuickGELU for those tags, records it in the encoder recipe
    (groups written before read False: vadpipe built GELU), and a head's text tower follows the
    group it reads."""
    from vadpipe.cache import FeatureCache
    from vadpipe.encoders import load_clip, parse_encoder
    from vadpipe.encoders.clip import quick_gelu_for
    from vadpipe.encoders.spec import trained_with_quick_gelu
    from vadpipe.heads.text import text_encoder_for

    for key, quick in (("ViT-B-16:openai", True), ("ViT-B-32:openai", True), ("ViT-B-16:laion2b_s34b_b88k", False),
                       ("coca_ViT-L-14:mscoco_finetuned_laion2b_s13b_b90k", False), (TINY_KEY, False)):
        spec = parse_encoder(key)
        assert quick_gelu_for(spec) is quick and trained_with_quick_gelu(spec) is quick, key

    def activation(model):
        return type(model.transformer.resblocks[0].mlp.gelu).__name__

    tiny = load_clip(TINY_KEY)
    assert tiny.recipe()["quick_gelu"] is False and activation(tiny.model) == "GELU"
    cache, _ = planted_sphere(tmp_path, n_train=1, n_test=1)
    assert activation(text_encoder_for(cache, TINY_KEY).model) == "GELU"
    with FeatureCache(tmp_path / "q.zarr", mode="a") as c:
        c.ensure_encoder(TINY_KEY, {**tiny.recipe(), "quick_gelu": True, "sampling": {"mode": "planted"}})
    with FeatureCache(tmp_path / "q.zarr") as c:
        assert activation(text_encoder_for(c, TINY_KEY).model) == "QuickGELU"
    with FeatureCache(tmp_path / "old.zarr", mode="a") as c:  # a group of vadpipe < 0.4: no quick_gelu recorded
        c.ensure_encoder(TINY_KEY, {k: v for k, v in tiny.recipe().items() if k != "quick_gelu"})
        assert c.recipe(TINY_KEY)["quick_gelu"] is False and c.recipe(TINY_KEY)["normalised"] is True


def test_a_0_2_prototype_run_reads_a_raw_cache_as_the_unit_rows_it_was_trained_on(tmp_path):
    """A run of vadpipe < 0.4 recorded no geometry; it trained on unit rows. Its prototype (rows
    as stored) reads a raw group of the same frames normalised, so it scores what it scored on
    the 0.2 cache (to float16 rounding), not distances of raw vectors to a unit-sphere mean."""
    raw, manifest = planted_sphere(tmp_path / "raw", n_train=3, n_test=2, n_weak=3)
    head = load_head(RUNS_02 / "prototype", device="cpu")
    assert head.input_recipes_["emb"]["normalised"] is True
    expected = np.load(RUNS_02 / "scores.npz")
    for vid, s in head.score_videos(raw, manifest.ids("test")).items():
        np.testing.assert_allclose(s.score, expected[f"prototype/{vid}/score"], atol=2e-3)
    fresh = get_head("prototype").fit(raw, manifest)  # trained on raw rows: refuses unit ones
    old, _ = planted_sphere(tmp_path / "old", n_train=3, n_test=2, n_weak=3, normalised=True)
    with pytest.raises(VadpipeError, match="with normalised=False, but cache .* has normalised=True"):
        fresh.score_videos(old, manifest.ids("test"))


def test_heads_hold_torch_to_the_cores_the_job_may_use(monkeypatch):
    """A job of 1 core on a bigger node: torch's pool is capped inside fit and restored after;
    a smaller count than the cores is left as the user set it."""
    import torch

    from vadpipe.encoders import device

    seen = []

    class Probe(get_head_class("prototype")):
        def _fit_all(self, cache, manifest):
            seen.append(torch.get_num_threads())
            return self

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(device, "usable_cores", lambda: 1)
        Probe().fit(None, None)
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(device, "usable_cores", lambda: 8)
        Probe().fit(None, None)
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
