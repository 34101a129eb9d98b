"""The ``clipassist`` head (Dong 2024): both modes on a planted weakly-labelled cache, the GCN."""

import numpy as np
import pytest
import torch

from vadpipe.cache import FeatureCache
from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head
from vadpipe.heads.clipassist.net import (
    GlobalTemporalAdapter,
    distance_adjacency,
    majority_vote,
    similarity_adjacency,
    video_class_similarity,
)
from vadpipe.heads.text import embed_prompts
from vadpipe.heads.prompts import load_prompt_set

from conftest import frame_auc, planted_cache


D, T, SEG = 64, 48, 12
CLASSES = ("Arson", "Fighting")
FAST = {"video": dict(epochs=8, lr=3e-3, batch_size=16), "frame": dict(epochs=10, lr=1e-2, batch_size=16)}
HEAD = {"video": "clipassist", "frame": "clipassist-frame"}  # Dong's two modes, two heads


@pytest.fixture(scope="module")
def weak(tmp_path_factory, tiny_encoder):
    """8 normal + 8 anomalous training videos (video-level labels only) and 8 test videos.

    Frames lie around a scene vector pulled toward the text of 'smoke' (one of Table 2's
    abnormal situations: a hazy but normal scene, so zero-shot scoring is misled); an
    anomalous video has a 12-frame segment shifted along its class's description embedding
    (dong-categories). The heads must learn, from video labels alone, which is which.
    """
    rng = np.random.default_rng(0)
    descriptions = load_prompt_set("dong-categories").classes
    direction = {c: embed_prompts(tiny_encoder, list(descriptions[c]), ("{}",))[0] for c in CLASSES}
    smoke = embed_prompts(tiny_encoder, ["smoke"], ("{}",))[0]
    scene = rng.normal(size=D)
    scene = scene / np.linalg.norm(scene) + smoke
    rows, entries = [], []

    def video(vid, split, label, anomalous):
        emb = scene + 0.05 * rng.normal(size=(T, D))
        intervals = ()
        if anomalous:
            a = int(rng.integers(0, T - SEG))
            emb[a : a + SEG] += direction[label]
            intervals = (Interval(a, a + SEG),)
        rows.append({"video_id": vid, "emb": emb})
        frames = T if split == "test" else None
        entries.append(VideoEntry(vid, "x", split, label if anomalous else "normal", intervals, num_frames=frames))

    for i in range(8):
        video(f"n{i}", "train", None, False)
        video(f"a{i}", "train", CLASSES[i % 2], True)
        video(f"t{i}", "test", CLASSES[i % 2], i % 4 != 3)
    return planted_cache(tmp_path_factory.mktemp("weak") / "w.zarr", rows), Manifest(entries)


@pytest.fixture(scope="module")
def fitted(weak):
    cache, manifest = weak
    return {mode: get_head(HEAD[mode], **FAST[mode]).fit(cache, manifest) for mode in ("video", "frame")}


@pytest.mark.parametrize("mode", ["video", "frame"])
def test_learns_planted_anomalies_from_video_labels(weak, fitted, mode):
    cache, manifest = weak
    head = fitted[mode]
    assert head.class_names_ == CLASSES
    scores = head.score_videos(cache, manifest.ids("test"))
    auc = frame_auc(manifest, scores)
    assert auc >= 0.9
    untrained = get_head(HEAD[mode], epochs=0).fit(cache, manifest)
    assert frame_auc(manifest, untrained.score_videos(cache, manifest.ids("test"))) < auc - 0.1
    # recognition: on anomalous frames the right class has the highest probability
    hits = []
    for vid, s in scores.items():
        truth = manifest[vid].frame_classes(T)
        ab = truth != "normal"
        assert s.class_probs.shape == (T, len(CLASSES)) and s.class_names == CLASSES
        assert np.all(s.class_probs.sum(axis=1) <= s.score + 1e-5)
        hits += list(np.array(CLASSES)[s.class_probs[ab].argmax(axis=1)] == truth[ab])
    assert np.mean(hits) >= 0.8
    assert len(s.explanation) == T and set(s.explanation) <= set(head.texts_)


@pytest.mark.parametrize("mode", ["video", "frame"])
def test_save_load_gives_identical_scores(tmp_path, weak, fitted, mode):
    cache, manifest = weak
    before = fitted[mode].score_videos(cache, manifest.ids("test"))
    fitted[mode].save(tmp_path / mode)
    after = load_head(tmp_path / mode).score_videos(cache, manifest.ids("test"))
    for vid, s in before.items():
        np.testing.assert_array_equal(s.score, after[vid].score)
        np.testing.assert_array_equal(s.class_probs, after[vid].class_probs)
        assert list(s.explanation) == list(after[vid].explanation)


def test_training_is_seeded_and_deterministic(weak):
    cache, manifest = weak
    runs = [
        get_head("clipassist", epochs=2, lr=3e-3, batch_size=8, seed=seed).fit(cache, manifest)
        for seed in (1, 1, 2)
    ]
    ids = manifest.ids("test")[:2]
    first, again, other = (r.score_videos(cache, ids) for r in runs)
    for vid in ids:
        np.testing.assert_array_equal(first[vid].score, again[vid].score)
    assert any(not np.array_equal(first[v].score, other[v].score) for v in ids)


def test_a_cpu_fit_in_parts_is_the_whole_batch_fit(weak, monkeypatch):
    """On a CPU a batch backpropagates a few videos at a time and the class prompts a few at a
    time (CPU_MICRO_BATCH, CPU_PROMPT_CHUNK): the trained class texts and scores are the
    whole-batch fit's to float rounding."""
    from vadpipe.heads.clipassist import video

    cache, manifest = weak
    ids = manifest.ids("test")[:3]
    runs = []
    for micro, chunk in ((None, None), (3, 2)):  # None: whole batches, the prompts at once (a GPU's path)
        monkeypatch.setattr(video, "CPU_MICRO_BATCH", micro)
        monkeypatch.setattr(video, "CPU_PROMPT_CHUNK", chunk)
        runs.append(get_head("clipassist", epochs=2, lr=3e-3, batch_size=8).fit(cache, manifest))
    whole, parts = runs
    torch.testing.assert_close(parts.model_.text, whole.model_.text, rtol=1e-4, atol=1e-5)
    assert not torch.equal(whole.model_.text, get_head("clipassist", epochs=0).fit(cache, manifest).model_.text)
    for vid, s in whole.score_videos(cache, ids).items():
        np.testing.assert_allclose(parts.score_videos(cache, [vid])[vid].score, s.score, rtol=1e-4, atol=1e-5)


def test_long_videos_are_subsampled_for_training_and_chunked_for_scoring(tmp_path, weak):
    cache, manifest = weak
    head = get_head("clipassist", epochs=1, lr=1e-3, max_frames=20).fit(cache, manifest)
    s = head.score_videos(cache, ["t0"])["t0"]
    assert s.score.shape == (T,)
    # each chunk of max_frames is its own graph: the 48-frame video scores as its chunks of
    # 20, 20 and 8 frames written as videos of their own
    f = cache.read(head.encoder, "t0")
    chunks = [{"video_id": f"chunk{a}", "emb": f.emb[a : a + 20].astype(np.float32)} for a in (0, 20, 40)]
    chunk_cache = planted_cache(tmp_path / "chunks.zarr", chunks)
    parts = head.score_videos(chunk_cache, [c["video_id"] for c in chunks])
    np.testing.assert_allclose(np.concatenate([p.score for p in parts.values()]), s.score, rtol=1e-5, atol=1e-6)
    whole = get_head("clipassist", epochs=1, lr=1e-3, max_frames=48).fit(cache, manifest)  # one graph: not the same
    assert not np.allclose(whole.score_videos(cache, ["t0"])["t0"].score, s.score, atol=1e-4)


def test_gcn_adjacencies_match_a_hand_computation():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]])  # 4 frames, D = 2
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = n @ n.T
    want_sim = np.exp(cos) / np.exp(cos).sum(axis=1, keepdims=True)
    got_sim = similarity_adjacency(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(got_sim, want_sim, rtol=1e-5)

    for sigma in (1.0, 3.0):
        d = np.abs(np.arange(4)[:, None] - np.arange(4)[None, :])
        want_dis = np.exp(-d / sigma) / np.exp(-d / sigma).sum(axis=1, keepdims=True)
        got_dis = distance_adjacency(4, sigma).numpy()
        np.testing.assert_allclose(got_dis, want_dis, rtol=1e-5)
        # sigma sets the range: one frame apart weighs exp(-1/sigma) of the frame itself
        np.testing.assert_allclose(got_dis[1, 2] / got_dis[1, 1], np.exp(-1 / sigma), rtol=1e-5)

    # a padded frame gets no weight, and rows still sum to one
    valid = torch.tensor([[True, True, True, False]])
    masked = distance_adjacency(4, 2.0, valid)[0].numpy()
    assert np.all(masked[:, 3] == 0) and np.allclose(masked.sum(axis=1), 1)
    d3 = np.abs(np.arange(3)[:, None] - np.arange(3)[None, :])
    np.testing.assert_allclose(masked[:3, :3], np.exp(-d3 / 2) / np.exp(-d3 / 2).sum(1, keepdims=True), rtol=1e-5)


def test_gcn_is_eq7_with_the_configured_sigma(weak):
    """f_g = ReLU([softmax(M_sim) f W_sim ; softmax(M_dis) f W_dis]) by hand, sigma from the config."""
    cache, manifest = weak
    head = get_head("clipassist", epochs=1, lr=1e-2, batch_size=16, sigma=2.5).fit(cache, manifest)
    gcn = head.net_.gcn
    assert isinstance(gcn, GlobalTemporalAdapter) and gcn.sigma == 2.5
    x = torch.randn(1, 6, D)
    with torch.no_grad():
        got = gcn.graph_features(x, torch.ones(1, 6, dtype=torch.bool))[0].numpy()
    f = x[0].numpy()
    n = f / np.linalg.norm(f, axis=1, keepdims=True)
    a_sim = np.exp(n @ n.T) / np.exp(n @ n.T).sum(1, keepdims=True)
    d = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    a_dis = np.exp(-d / 2.5) / np.exp(-d / 2.5).sum(1, keepdims=True)
    w_sim, w_dis = gcn.w_sim.weight.detach().numpy().T, gcn.w_dis.weight.detach().numpy().T
    want = np.maximum(np.concatenate([a_sim @ f @ w_sim, a_dis @ f @ w_dis], axis=1), 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(gcn.out.weight.detach().numpy(), 0)  # the adapter did train


def test_topk_class_similarity_and_majority_vote():
    align = torch.tensor([[[0.1, 0.9], [0.5, 0.2], [0.3, 0.4], [9.0, 9.0]]])  # (1 T=4 C=2), last is padding
    valid = torch.tensor([[True, True, True, False]])
    s = video_class_similarity(align, valid, topk=2)[0].numpy()
    np.testing.assert_allclose(s, [(0.5 + 0.3) / 2, (0.9 + 0.4) / 2], rtol=1e-6)
    s = video_class_similarity(align, valid)[0].numpy()  # default k = 3 // 16 + 1 = 1
    np.testing.assert_allclose(s, [0.5, 0.9], rtol=1e-6)

    score = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.1, 0.6])
    np.testing.assert_allclose(majority_vote(score, 3), [1 / 2, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 2])
    np.testing.assert_array_equal(majority_vote(score, 0), score)


def test_frame_mode_majority_vote(weak, fitted):
    cache, manifest = weak
    head = get_head("clipassist-frame", vote_window=5, **FAST["frame"]).fit(cache, manifest)
    raw = fitted["frame"].score_videos(cache, manifest.ids("test"))
    voted = head.score_videos(cache, manifest.ids("test"))
    for vid in raw:
        np.testing.assert_allclose(voted[vid].score, majority_vote(raw[vid].score, 5))
    assert frame_auc(manifest, voted) >= 0.9


def test_both_modes_work_with_coca(tmp_path, weak):
    """Both modes embed their descriptions with any open_clip text tower, CoCa's included
    (it appends a CLS token and pools it): frame mode directly, video mode through the CoOp
    prompt learner."""
    from vadpipe.cache import FeatureCache
    from vadpipe.encoders import load_clip

    coca = load_clip("vadpipe-tiny-coca:random")
    src, manifest = weak
    cache = FeatureCache(tmp_path / "coca.zarr", mode="a")
    cache.ensure_encoder(coca.key, {**coca.recipe(), "sampling": {"mode": "planted"}})
    for f in src.iter_videos("vadpipe-tiny:random", manifest.ids()):
        cache.write_video(coca.key, f.video_id, f.frame_index, f.pts, f.emb, {"num_frames": T, "fps": 25.0})
    cache = FeatureCache(tmp_path / "coca.zarr")
    head = get_head("clipassist-frame", epochs=1, lr=1e-3).fit(cache, manifest)
    assert head.encoder == coca.key
    np.testing.assert_allclose(head.sim_.text[0].numpy(), coca.encode_text([head.texts_[0]])[0], atol=1e-5)
    for mode in ("frame", "video"):
        head = get_head(HEAD[mode], epochs=1, lr=1e-3).fit(cache, manifest)
        s = head.score_videos(cache, ["t0"])["t0"]
        assert s.score.shape == (T,) and s.class_probs.shape == (T, len(CLASSES))
        assert np.isfinite(s.score).all()


def test_config_errors_are_clear(weak):
    # 0.2's mode switch: the head's own mode is accepted, another names the other head
    assert get_head("clipassist", mode="video").mode == "video"
    assert get_head("clipassist-frame", mode="frame").mode == "frame"
    with pytest.raises(VadpipeError, match=r"mode 'frame': .* 'clipassist-frame' \(frame mode\)"):
        get_head("clipassist", mode="frame")
    with pytest.raises(VadpipeError, match=r"mode 'clip': .* 'clipassist' \(video mode\)"):
        get_head("clipassist-frame", mode="clip")
    # no field of one mode is silently ignored by the other: it is refused
    with pytest.raises(VadpipeError, match=r"unknown parameter\(s\) vote_window"):
        get_head("clipassist", vote_window=3)
    with pytest.raises(VadpipeError, match=r"unknown parameter\(s\) sigma"):
        get_head("clipassist-frame", sigma=2.0)
    with pytest.raises(VadpipeError, match="vote_window must be 0, 1 or odd"):
        get_head("clipassist-frame", vote_window=4)
    with pytest.raises(VadpipeError, match="sigma must be > 0"):
        get_head("clipassist", sigma=0)
    cache, manifest = weak
    with pytest.raises(VadpipeError, match="unknown prompt set 'nope'"):
        get_head("clipassist", descriptions="nope").fit(cache, manifest)


def test_frame_mode_keeps_a_description_shared_by_two_classes(weak):
    cache, manifest = weak
    head = get_head("clipassist-frame", epochs=1, lr=1e-3,
                    class_descriptions={"Arson": "a fire", "Fighting": ["a fire", "people fighting"]}).fit(cache, manifest)
    owners = {(t, int(o)) for t, o in zip(head.texts_, head.desc_owner_)}
    assert {("a fire", 1), ("a fire", 2), ("people fighting", 2)} <= owners
    with pytest.raises(VadpipeError, match="class prompts of 'Arson' must be a non-empty string"):
        get_head("clipassist-frame", epochs=1, lr=1e-3, class_descriptions={"Arson": []}).fit(cache, manifest)
    with pytest.raises(VadpipeError, match="class prompts given for Arsn, not classes of the manifest"):
        get_head("zeroshot", class_prompts={"Arsn": "fire"}).fit(cache, manifest)


# ---------------------------------------------------------------- the paper's ablation rows
@pytest.mark.parametrize("row, params, floor", [
    ("CLIP + Classifier (Tables 4-5)", dict(classifier=True, temporal=False), 0.85),
    ("CLIP + Local + Global + Classifier", dict(classifier=True), 0.85),
    ("w/o Temporal Module (Table 10)", dict(temporal=False), 0.85),
    ("a photo of [Category] (Table 6)", dict(prompt_template="a photo of {}", class_text="category"), 0.7),
    ("Learnable Prompt + [Category] (Table 6)", dict(class_text="category"), 0.7),
    ("Middle: shared context (Table 9)", dict(shared_context=True), 0.85),
])
def test_ablation_rows_train_score_and_reload(tmp_path, weak, row, params, floor):
    cache, manifest = weak
    head = get_head("clipassist", **FAST["video"], **params).fit(cache, manifest)
    scores = head.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, scores) >= floor, row
    if params.get("classifier"):
        assert all(s.class_probs is None and np.all((s.score >= 0) & (s.score <= 1)) for s in scores.values())
        assert "text" not in head.model_.state_dict()
    if params.get("temporal") is False:
        assert head.model_.temporal.local is None and head.model_.temporal.gcn is None
    if params.get("class_text") == "category":
        assert head.texts_ == ["normal", "arson", "fighting"]
    head.save(tmp_path / "run")
    again = load_head(tmp_path / "run").score_videos(cache, manifest.ids("test"))
    for vid, s in scores.items():
        np.testing.assert_array_equal(s.score, again[vid].score)


def test_hand_crafted_prompts_are_fixed_texts(weak, tiny_encoder):
    cache, manifest = weak
    head = get_head("clipassist", epochs=0, prompt_template="a photo of {}", class_text="category").fit(cache, manifest)
    expected = embed_prompts(tiny_encoder, [f"a photo of {t}" for t in ("normal", "arson", "fighting")], ("{}",))
    np.testing.assert_allclose(head.model_.text.numpy(), expected, atol=1e-5)
    with pytest.raises(VadpipeError, match="leave nothing to train; pass epochs=0"):
        get_head("clipassist", prompt_template="a photo of {}", temporal=False).fit(cache, manifest)
    get_head("clipassist", prompt_template="a photo of {}", temporal=False, epochs=0).fit(cache, manifest)


def test_shanghaitech_manifests_get_shanghaitech_descriptions(weak):
    """Sec. 3.1.2: on ShanghaiTech's walkway bicycles, vehicles and running are anomalies; the
    default texts for a ShanghaiTech manifest say so and no normal text contradicts them."""
    cache, manifest = weak
    sht = Manifest(list(manifest), meta={"dataset": "shanghaitech"})
    head = get_head("clipassist", epochs=0, class_descriptions={"Arson": "x", "Fighting": "y"}).fit(cache, sht)
    pset = load_prompt_set("dong-shanghaitech")
    assert head.texts_[0] == ", ".join(pset.normal)
    for word in ("run", "bicycl", "bike", "cycl", "driv", "vehicle", "car "):
        assert all(word not in t for t in pset.normal), word
    assert any("bicycle" in t for t in pset.anomaly) and any("running" in t for t in pset.anomaly)
    frame = get_head("clipassist-frame", epochs=0, class_descriptions={"Arson": "x", "Fighting": "y"}).fit(cache, sht)
    assert set(pset.normal) <= set(frame.texts_) and "running" not in frame.texts_
    assert get_head("clipassist", epochs=0).default_for(manifest) == "dong-categories"


def test_a_text_cut_at_77_tokens_is_warned(weak, caplog):
    cache, manifest = weak
    long = " ".join(["a person doing something unusual near the entrance"] * 8)
    with caplog.at_level("WARNING", logger="vadpipe"):
        get_head("clipassist", epochs=0, class_descriptions={"Arson": long}).fit(cache, manifest)
    assert any("the text tower reads 77, the rest is cut" in r.getMessage() for r in caplog.records)


def test_a_schedule_too_short_to_train_is_refused(weak):
    cache, manifest = weak
    with pytest.raises(VadpipeError, match=r"clipassist: 10 epochs of 1 step\(s\) \(16 videos, batch 64\) at lr 1e-05 "
                                           r"lets a weight move by at most 1\.0e-04"):
        get_head("clipassist", epochs=10).fit(cache, manifest)


def test_object_mode_finds_a_small_object_that_whole_frames_dilute(tmp_path, tiny_encoder):
    """Dong's object-centric mode (Sec. 4.5) from video labels alone: each frame holds four
    walkers (objects near a walker vector); in an anomalous video one more object, shifted along
    its class's description, appears on a 12-frame interval. The whole frame sees that object
    diluted (a tenth of the shift, under frame noise); the objects group sees it whole. MIL over
    frames ranked by their best object learns it; frame mode does much worse on the same videos."""
    from vadpipe.objects import OBJECTS

    rng = np.random.default_rng(1)
    descriptions = load_prompt_set("dong-categories").classes
    direction = {c: embed_prompts(tiny_encoder, list(descriptions[c]), ("{}",))[0] for c in CLASSES}
    walker, scene = rng.normal(size=D) / np.sqrt(D), rng.normal(size=D) / np.sqrt(D)
    frames, objects, entries = [], {}, []

    def video(vid, split, label, anomalous):
        a = int(rng.integers(0, T - SEG)) if anomalous else T
        emb = scene + 0.1 * rng.normal(size=(T, D))
        rows = [(t, i, walker + 0.05 * rng.normal(size=D)) for t in range(T) for i in range(4)]
        for t in range(a, min(a + SEG, T)):
            emb[t] += direction[label] / 10
            rows.append((t, 4, walker + direction[label] + 0.05 * rng.normal(size=D)))
        rows.sort(key=lambda r: r[:2])
        frames.append({"video_id": vid, "emb": emb})
        objects[vid] = rows
        intervals = (Interval(a, a + SEG),) if anomalous else ()
        entries.append(VideoEntry(vid, "x", split, label if anomalous else "normal", intervals,
                                  num_frames=T if split == "test" else None))

    for i in range(8):
        video(f"n{i}", "train", None, False)
        video(f"a{i}", "train", CLASSES[i % 2], True)
        video(f"t{i}", "test", CLASSES[i % 2], i % 4 != 3)
    cache = planted_cache(tmp_path / "o.zarr", frames)
    key = f"{cache.encoders()[0]}+planted"
    cache.close()
    with FeatureCache(tmp_path / "o.zarr", mode="a") as out:
        out.ensure_encoder(key, {**out.recipe(cache.encoders()[0]), "kind": OBJECTS,
                                 "clip_key": cache.encoders()[0], "objects": {"detector": "planted"}})
        for vid, rows in objects.items():
            n = len(rows)
            out.write_video(key, vid, np.array([r[0] for r in rows]), np.array([r[0] for r in rows]) / 25.0,
                            np.stack([r[2] for r in rows]).astype(np.float16), {"num_frames": T, "fps": 25.0},
                            {"track_id": np.array([r[1] for r in rows]), "box": np.zeros((n, 4), np.float32),
                             "det_score": np.ones(n, np.float32), "label": np.full(n, "planted")})
    manifest = Manifest(entries)
    aucs = {}
    with FeatureCache(tmp_path / "o.zarr") as cache:
        for unit in ("frame", "object"):
            head = get_head("clipassist-frame", unit=unit, **FAST["frame"]).fit(cache, manifest)
            scores = head.score_videos(cache, manifest.ids("test"))
            aucs[unit] = frame_auc(manifest, scores)
        assert head.objects_key_ == key
        for vid, s in scores.items():  # a frame's score is its best object's
            o = s.objects
            for t in range(T):
                assert s.score[t] == o.score[o.frame_index == t].max()
        untrained = get_head("clipassist-frame", unit="object", epochs=0).fit(cache, manifest)
        aucs["untrained"] = frame_auc(manifest, untrained.score_videos(cache, manifest.ids("test")))
    # measured: object 0.92, frame 0.51, untrained 0.72
    assert aucs["object"] >= 0.85 and aucs["object"] >= aucs["frame"] + 0.2, aucs
    assert aucs["object"] >= aucs["untrained"] + 0.1, aucs


@pytest.mark.parametrize("gcn", [True, False])
def test_micro_batches_give_the_whole_batch_gradients(gcn):
    """A batch backpropagated a few videos at a time (each part padded to its own longest
    video, the prompts run once) gives the whole batch's loss and gradients to float rounding."""
    from vadpipe.heads.clipassist.common import backward_in_micro_batches, pad_batch
    from vadpipe.heads.clipassist.net import TemporalModule, alignment_map, video_loss

    torch.manual_seed(0)
    net = TemporalModule(32, 4, 1, 1.0, 0.0, gcn, local=True).train()
    ctx = torch.nn.Parameter(torch.randn(5, 32))
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(int(n), 32)).astype(np.float32) for n in rng.integers(3, 40, 11)]
    labels = torch.tensor(rng.integers(0, 5, 11))

    def loss_of(part, text):
        x, valid = pad_batch([videos[i] for i in part], "cpu")
        return video_loss(alignment_map(net(x, valid), text), valid, labels[part], text, 0.07, 0.1, None)

    results = []
    for micro in (None, 3):
        net.zero_grad()
        ctx.grad = None
        loss = backward_in_micro_batches(torch.arange(11), loss_of, ctx * 2, micro)  # the text through a graph
        results.append([loss, ctx.grad.clone(), *(p.grad.clone() for p in net.parameters())])
    for whole, parts in zip(*results):
        assert (parts - whole).abs().max() <= 1e-5 * whole.abs().max()
