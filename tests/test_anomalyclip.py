"""The ``anomalyclip`` head (Zanella et al. 2024): planted structure, each loss term, the
clip layouts, the CoOp prompt learner, save/load and determinism."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head
from vadpipe.heads.anomalyclip import losses as L
from vadpipe.heads.anomalyclip import (
    AnomalyClipConfig,
    AnomalyClipNet,
    inference_clip_indices,
    lr_at,
    training_clip_indices,
)
from vadpipe.heads.prompts import class_prompt

from conftest import TINY_KEY, planted_cache, unit

RAW_NORM = 8.0  # rows at about the norm of raw CLIP features: the head's default geometry is raw

D = 64
CLASSES = ["Arson", "Fighting", "RoadAccidents"]
# small clips and a short run: the paper's S=32, F=16, B=64, 50 epochs do not fit a unit test
FAST = dict(num_segments=8, frames_per_segment=4, top_k=2, batch_size=8, embed_dim=64, heads=4,
            steps=300, lr=1e-3, device="cpu")  # device: a run-time option, accepted with the parameters


def planted_weak(path, tiny_encoder, seed=0, n_train=12, T=48, shift=0.6, nuisance=0.8, noise=0.03):
    """Weakly-labelled planted cache.

    Normal frames lie near a prototype n0. An anomalous video of class c has one contiguous
    run (a quarter to a half of it) shifted by ``shift`` along v_c, the part of c's text
    embedding (vadpipe-tiny, ``encode_text`` of the class name) orthogonal to n0. Every
    other video, normal or not, is moved as a whole by ``nuisance`` along a direction
    orthogonal to n0 and to every v_c ("another scene"): a large deviation from the
    prototype that is not an anomaly, which a distance-to-prototype score cannot tell apart.
    Training videos carry only their video label; test videos carry the anomalous run.
    """
    rng = np.random.default_rng(seed)
    text = tiny_encoder.encode_text([class_prompt(c) for c in CLASSES])  # (C D)
    n0 = unit(rng.normal(size=D))
    v = unit(text - (text @ n0)[:, None] * n0)  # (C D)
    basis = np.linalg.qr(np.concatenate([n0[:, None], v.T], axis=1))[0]  # (D 1+C)
    nu = rng.normal(size=(D, 4))
    nu = np.linalg.qr(nu - basis @ (basis.T @ nu))[0].T  # (4 D), orthogonal to n0 and v
    rows, entries = [], []

    def video(vid, split, label, i):
        emb = n0 + noise * rng.normal(size=(T, D))
        if i % 2:
            emb += nuisance * nu[rng.integers(4)]
        intervals = ()
        if label != "normal":
            length = int(rng.integers(T // 4, T // 2))
            start = int(rng.integers(0, T - length))
            emb[start : start + length] += shift * v[CLASSES.index(label)]
            intervals = (Interval(start, start + length),)
        rows.append({"video_id": vid, "emb": emb})
        entries.append(VideoEntry(vid, "x", split, label, intervals if split == "test" else (), num_frames=T))

    for i in range(n_train):
        video(f"train_normal{i}", "train", "normal", i)
    for i in range(n_train):
        video(f"train_anomalous{i}", "train", CLASSES[i % 3], i // 3)
    for i in range(6):
        video(f"test_normal{i}", "test", "normal", i)
    for i in range(9):
        video(f"test_anomalous{i}", "test", CLASSES[i % 3], i // 3)
    return planted_cache(path, [{**r, "emb": RAW_NORM * r["emb"]} for r in rows]), Manifest(entries)


def frame_auc_mauc(manifest, scores):
    """Frame AUC of the score, and mean over classes of the one-vs-rest AUC of p_{A,c}."""
    y, s, cls, probs = [], [], [], []
    for vid, sc in scores.items():
        e = manifest[vid]
        y.append(e.frame_labels(sc.num_frames)[sc.frame_index])
        cls.append(e.frame_classes(sc.num_frames)[sc.frame_index])
        s.append(sc.score)
        probs.append(sc.class_probs)
    y, s, cls, probs = map(np.concatenate, (y, s, cls, probs))
    names = list(next(iter(scores.values())).class_names)
    mauc = np.mean([roc_auc_score(cls == c, probs[:, names.index(c)]) for c in CLASSES])
    return roc_auc_score(y, s), mauc


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_encoder):
    cache, manifest = planted_weak(tmp_path_factory.mktemp("anomalyclip") / "p.zarr", tiny_encoder)
    head = get_head("anomalyclip", **FAST).fit(cache, manifest)
    return cache, manifest, head


# ---------------------------------------------------------------- planted structure
def test_detects_and_recognises_planted_anomalies(planted):
    cache, manifest, head = planted
    assert head.encoder == TINY_KEY and head.class_names_ == tuple(CLASSES)
    scores = head.score_videos(cache, manifest.ids("test"))
    auc, mauc = frame_auc_mauc(manifest, scores)
    print(f"anomalyclip AUC {auc:.3f} mAUC {mauc:.3f}")
    assert auc >= 0.90 and mauc >= 0.90, (auc, mauc)

    # the normal-vs-anomaly zeroshot variant: the tiny random text tower puts every text near every
    # other, so Ueki's cosine to any prompt also rises along a class direction
    zs_scores = get_head("zeroshot", mode="softmax").fit(cache, manifest).score_videos(cache, manifest.ids("test"))
    zs_auc, zs_mauc = frame_auc_mauc(manifest, zs_scores)
    proto = get_head("prototype").fit(cache, manifest).score_videos(cache, manifest.ids("test"))
    y = np.concatenate([manifest[v].frame_labels(s.num_frames) for v, s in proto.items()])
    proto_auc = roc_auc_score(y, np.concatenate([s.score for s in proto.values()]))
    print(f"prototype AUC {proto_auc:.3f}; zeroshot AUC {zs_auc:.3f} mAUC {zs_mauc:.3f}")
    assert auc >= proto_auc + 0.1 and auc >= zs_auc + 0.1, (auc, proto_auc, zs_auc)
    assert mauc >= zs_mauc + 0.1, (mauc, zs_mauc)

    s = scores["test_anomalous0"]
    assert s.class_probs.shape == (48, 3) and s.score.shape == (48,)
    # p_{A,c} = p_A p(c|A): the class probabilities add up to p_A
    np.testing.assert_allclose(s.class_probs.sum(axis=1), s.score, rtol=1e-5, atol=1e-6)
    totals = [h["total"] for h in head.history_]
    assert np.mean(totals[-20:]) < np.mean(totals[:20])


def test_save_load_gives_identical_scores_without_a_text_model(planted, tmp_path, monkeypatch):
    cache, manifest, head = planted
    ids = manifest.ids("test")
    before = head.score_videos(cache, ids)
    head.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "weights.safetensors"]
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "run" / "weights.safetensors"))
    # the checkpoint is the network's state_dict: prototype, directions, the selector's batch-norm
    # statistics, the temporal model -- and nothing that scoring never reads (the CoOp context)
    assert set(saved) == set(head.net_.state_dict())
    for key in ("prototype", "directions", "selector.bn.running_mean", "selector.bn.running_var", "temporal.proj.weight"):
        assert saved[key].dtype == np.float32
    assert saved["directions"].shape == (3, 64) and not any(k.startswith("prompt") for k in saved)

    import vadpipe.heads.text as text

    def no_text_model(*a, **k):
        raise AssertionError("scoring must not load the text tower")

    monkeypatch.setattr(text, "text_encoder_for", no_text_model)
    loaded = load_head(tmp_path / "run")
    assert loaded.class_names_ == tuple(CLASSES)
    import json

    loaded.save(tmp_path / "again")  # the training summary survives a load / save round trip
    extra = json.loads((tmp_path / "again" / "config.json").read_text())["extra"]
    assert extra["training_steps"] == 300 and extra["class_texts"] == ["Arson", "Fighting", "RoadAccidents"]
    after = loaded.score_videos(cache, ids)
    for vid in ids:
        np.testing.assert_array_equal(before[vid].score, after[vid].score)
        np.testing.assert_array_equal(before[vid].class_probs, after[vid].class_probs)
        np.testing.assert_array_equal(before[vid].frame_index, after[vid].frame_index)

    from vadpipe.scores import ScoresStore, write_scores  # the store evaluate reads keeps p_{A,c}

    store = ScoresStore(write_scores(tmp_path / "scores.zarr", after, {"head": "anomalyclip"}))
    assert store.class_names == tuple(CLASSES)
    np.testing.assert_array_equal(store.read(ids[-1]).class_probs, after[ids[-1]].class_probs)


def test_scores_videos_of_any_length(planted, tmp_path):
    _, _, head = planted
    rng = np.random.default_rng(0)
    lengths = (1, 7, 32, 33, 100)  # shorter than, equal to and longer than S*F = 32
    cache = planted_cache(tmp_path / "lengths.zarr", [{"video_id": f"v{T}", "emb": rng.normal(size=(T, D))} for T in lengths])
    scores = head.score_videos(cache, [f"v{T}" for T in lengths])
    for T in lengths:
        s = scores[f"v{T}"]
        assert s.score.shape == (T,) and s.class_probs.shape == (T, 3)
        assert np.isfinite(s.score).all() and np.isfinite(s.class_probs).all()
    # p_{A,c} = p_A p(c|A) at every length, the one-frame video included
    for s in scores.values():
        np.testing.assert_allclose(s.class_probs.sum(axis=1), s.score, rtol=1e-5, atol=1e-6)


def test_training_is_seeded_and_deterministic(tmp_path, tiny_encoder):
    cache, manifest = planted_weak(tmp_path / "d.zarr", tiny_encoder, n_train=3, T=20)
    quick = {**FAST, "steps": 4}
    ids = manifest.ids("test")[-2:]
    runs = [get_head("anomalyclip", **quick, seed=s).fit(cache, manifest).score_videos(cache, ids) for s in (3, 3, 4)]
    for vid in ids:
        np.testing.assert_array_equal(runs[0][vid].score, runs[1][vid].score)
        np.testing.assert_array_equal(runs[0][vid].class_probs, runs[1][vid].class_probs)
    assert any(not np.array_equal(runs[0][v].score, runs[2][v].score) for v in ids)


def test_training_videos_read_per_batch_give_the_held_run(tmp_path, tiny_encoder, monkeypatch):
    """On a CPU each batch's videos are read from the cache (nothing held); a GPU holds them.
    The same arrays reach the loop either way: the runs are identical."""
    from vadpipe.heads.anomalyclip import head as module

    cache, manifest = planted_weak(tmp_path / "d.zarr", tiny_encoder, n_train=3, T=20)
    quick = {**FAST, "steps": 4, "geometry": "unit"}  # unit: the rows are normalised as read
    ids = manifest.ids("test")[-2:]
    assert not module.holds_training_videos("cpu") and module.holds_training_videos("cuda")
    runs = []
    for hold in (False, True):
        monkeypatch.setattr(module, "holds_training_videos", lambda device, hold=hold: hold)
        runs.append(get_head("anomalyclip", **quick).fit(cache, manifest).score_videos(cache, ids))
    for vid in ids:
        np.testing.assert_array_equal(runs[0][vid].score, runs[1][vid].score)


def test_class_descriptions_replace_bare_names(tmp_path, tiny_encoder):
    cache, manifest = planted_weak(tmp_path / "c.zarr", tiny_encoder, n_train=3, T=20)
    quick = {**FAST, "steps": 2, "lr": 1e-2}
    head = get_head("anomalyclip", **quick, class_descriptions={"Arson": "a building set on fire"}).fit(cache, manifest)
    assert head.class_texts_ == ["a building set on fire", "Fighting", "RoadAccidents"]  # names as the authors' csv
    words = get_head("anomalyclip", **quick, class_text="words").fit(cache, manifest)
    assert words.class_texts_ == ["arson", "fighting", "road accidents"]
    with pytest.raises(VadpipeError, match="unknown class.*Riot"):
        get_head("anomalyclip", **FAST, class_descriptions={"Riot": "x"}).fit(cache, manifest)


def test_clear_errors(tmp_path, tiny_encoder):
    with pytest.raises(VadpipeError, match="top_k"):
        get_head("anomalyclip", num_segments=2, top_k=3)
    with pytest.raises(VadpipeError, match="batch_size"):
        get_head("anomalyclip", batch_size=7)
    with pytest.raises(VadpipeError, match="mask_ratio"):
        get_head("anomalyclip", mask_ratio=1.0)
    cache, manifest = planted_weak(tmp_path / "e.zarr", tiny_encoder, n_train=2, T=20)
    only_normal = Manifest([e for e in manifest if e.is_normal or e.split == "test"])
    with pytest.raises(VadpipeError, match="0 anomalous"):
        get_head("anomalyclip", **FAST).fit(cache, only_normal)


def test_paper_sized_model_has_the_papers_parameter_count():
    """Table 11's 1-layer, 256-d axial transformer: 10.4 M trainable parameters, counting the
    CoOp prompt learner's on a ViT-B/16-sized text tower (width 512, 12 layers, random
    weights): 8 context vectors per class for UCF-Crime's 13 classes and the fine-tuned text
    projection."""
    from types import SimpleNamespace

    import open_clip
    from open_clip.model import CLIPTextCfg, _build_text_tower

    from vadpipe.heads.prompt_learner import PromptLearner
    from vadpipe.heads.prompts import class_prompt

    from vadpipe.data_manifests.ucf_crime import CLASSES

    cfg = AnomalyClipConfig()
    tower = _build_text_tower(512, CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12))
    prompts = PromptLearner(SimpleNamespace(text=tower), open_clip.get_tokenizer("ViT-B-16"),
                            [class_prompt(c) for c in CLASSES], n_ctx=cfg.n_ctx,
                            train_projection=cfg.finetune_text_projection)
    net = AnomalyClipNet(512, len(CLASSES), cfg)
    trainable = [p for p in [*net.parameters(), *prompts.parameters()] if p.requires_grad]
    n = sum(p.numel() for p in trainable)
    assert len(CLASSES) == 13 and abs(n / 1e6 - 10.4) < 0.05, n


# ---------------------------------------------------------------- clip layouts, schedule
def test_training_clips_take_consecutive_frames_from_each_block():
    rng = np.random.default_rng(0)
    idx = training_clip_indices(100, 4, 5, rng)  # blocks of 25 frames
    assert idx.shape == (4, 5)
    assert np.all(np.diff(idx, axis=1) == 1)
    assert np.all(idx[:, 0] // 25 == np.arange(4)) and np.all(idx[:, -1] // 25 == np.arange(4))
    short = training_clip_indices(7, 4, 5, rng)  # loop padding: indices wrap around the video
    assert short.shape == (4, 5) and short.max() < 7 and set(short.ravel()) == set(range(7))


@pytest.mark.parametrize("T", [1, 7, 40, 41, 200])
def test_inference_passes_cover_every_frame_in_order(T):
    S, F = 4, 5
    idx = inference_clip_indices(T, S, F)  # (J S F)
    J = math.ceil(T / (S * F))
    assert idx.shape == (J, S, F)
    flat = idx.transpose(1, 0, 2).reshape(-1)
    np.testing.assert_array_equal(flat[:T], np.arange(T))
    np.testing.assert_array_equal(flat[T:], np.arange(len(flat) - T) % T)  # loop padding


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 1e-3


# ---------------------------------------------------------------- each loss term
def grad_of(loss_fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    value = loss_fn(*leaves)
    value.backward()
    return value.item(), [t.grad for t in leaves]


def test_anomalous_direction_loss():
    sel_top = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (Ba=1 K=2 F=2), labelled class
    value, (g,) = grad_of(L.loss_anomalous_direction, sel_top)
    assert value == pytest.approx(-2.5)  # eq. 7: -sum / (K F)
    assert torch.all(g < 0)  # raising the labelled class's likelihood lowers the loss


def test_anomalous_top_loss():
    logit = torch.zeros(1, 1, 2)  # p_A = 0.5
    sel = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])  # (1 1 2 C=2)
    labels = torch.tensor([0])
    value, (g_logit, g_sel) = grad_of(lambda z, s: L.loss_anomalous_top(z, s, labels), logit, sel)
    p_c = torch.softmax(sel, dim=-1)[0, 0, :, 0]  # p(c=0|A) per frame
    expected = -(torch.log(0.5 * p_c)).mean()
    assert value == pytest.approx(expected.item(), rel=1e-6)  # eq. 8: -mean log p_{A,c}
    assert torch.all(g_logit < 0)  # more anomalous -> lower loss
    assert torch.all(g_sel[..., 0] < 0) and torch.all(g_sel[..., 1] > 0)  # labelled class up, others down


def test_normal_frame_losses():
    logit = torch.tensor([[[0.0, math.log(3.0)]]])  # p_A = 0.5, 0.75
    value, (g,) = grad_of(L.loss_normal_frames, logit)
    assert value == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)  # eqs. 9, 11: -mean log p_N
    assert torch.all(g > 0)  # less anomalous -> lower loss


def test_normal_direction_loss():
    sel = torch.arange(8.0).view(1, 2, 2, 2)  # (Bn S F C)
    value, (g,) = grad_of(lambda x: L.loss_normal_direction(x, "paper"), sel)
    assert value == pytest.approx(3.5)  # eq. 10 as printed: sum / (S F C)
    assert torch.all(g > 0)
    value, (g,) = grad_of(L.loss_normal_direction, sel)  # the authors' code: max over classes, mean over frames
    assert value == pytest.approx((1 + 3 + 5 + 7) / 4)
    assert torch.all(g[..., 1] > 0) and torch.all(g[..., 0] == 0)


def test_sparsity_loss():
    logit = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # p = .5 .5 .75 .5
    value, (g,) = grad_of(L.loss_sparsity, logit)
    assert value == pytest.approx((0.5 + 0.5 + 0.75 + 0.5) / 4)  # eq. 12
    assert torch.all(g > 0)


def test_smoothness_loss():
    p = torch.tensor([0.5, 0.5, 0.75, 0.5])
    logit = torch.logit(p).view(1, 2, 2)  # flattened over segments: the spike is frame 2
    for mode in ("code", "paper"):  # one clip: the two aggregations agree
        value, (g,) = grad_of(lambda x: L.loss_smoothness(x, mode), logit)
        assert value == pytest.approx(2 * 0.25**2)  # eq. 13, squared differences
        g = g.view(-1)
        assert g[2] > 0 and g[1] < 0 and g[3] < 0 and g[0] == 0  # flatten the spike
    # two clips: the code sums over the flattened batch, the boundary between the clips included;
    # the text's reading averages the per-clip sums
    two = torch.logit(torch.tensor([0.5, 0.5, 0.5, 0.75, 0.25, 0.25, 0.25, 0.25])).view(2, 2, 2)
    assert L.loss_smoothness(two, "code").item() == pytest.approx(0.25**2 + 0.5**2)
    assert L.loss_smoothness(two, "paper").item() == pytest.approx(0.25**2 / 2)


def test_mil_selection_and_the_full_objective():
    B, S, F, C = 2, 4, 2, 2
    sel = torch.zeros(B, S, F, C)
    sel[0, 2, :, 1] = 3.0  # anomalous clip of class 1: segment 2 is its most class-1 segment
    sel[0, 0, :, 1] = -3.0  # and segment 0 its least
    sel[0, 3, :, 0] = 5.0  # class 0 is not its label: must not drive its selection
    sel[1, 1] = 2.0  # normal clip: segment 1 is the most anomalous over all classes
    logit = torch.zeros(B, S, F)
    labels = torch.tensor([1, -1])
    keep = torch.ones(B, S, dtype=torch.bool)
    terms = L.anomalyclip_loss(sel, logit, labels, keep, 1, 8e-3, 8e-4)
    assert terms["anomalous_direction"].item() == pytest.approx(-3.0)
    assert terms["anomalous_bottom"].item() == pytest.approx(math.log(2))
    assert terms["normal_direction"].item() == pytest.approx(sel[1].max(dim=-1).values.mean().item())
    assert L.anomalyclip_loss(sel, logit, labels, keep, 1, 8e-3, 8e-4, "paper")["normal_direction"].item() == \
        pytest.approx(sel[1].mean().item())
    expected = sum(terms[k] for k in ("anomalous_direction", "anomalous_top", "anomalous_bottom",
                                      "normal_direction", "normal_top"))
    expected = expected + 8e-3 * terms["sparsity"] + 8e-4 * terms["smoothness"]
    assert terms["total"].item() == pytest.approx(expected.item())
    # a masked segment is never selected, even when it is the best one
    keep[0, 2] = False
    terms = L.anomalyclip_loss(sel, logit, labels, keep, 1, 8e-3, 8e-4)
    assert terms["anomalous_direction"].item() == pytest.approx(0.0)


@pytest.mark.parametrize("concat_selector", [False, True])
def test_a_step_in_clip_chunks_is_the_whole_batch_step(concat_selector):
    """The temporal model backpropagated a few clips at a time (``clip_chunk``; the selector's
    batch norm still sees the whole batch) gives the whole batch's loss terms, every gradient
    (network and directions) and the same batch-norm statistics, to float rounding."""
    from vadpipe.heads.anomalyclip.train import clip_chunk, training_step

    cfg = AnomalyClipConfig(num_segments=4, frames_per_segment=3, top_k=1, embed_dim=16, heads=2,
                            concat_selector=concat_selector)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 4, 3, 10, generator=gen)
    labels = torch.tensor([0, 2, 1, -1, -1, -1])
    keep = L.keep_mask(torch.rand(6, 4, generator=gen), cfg.mask_ratio, cfg.top_k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = AnomalyClipNet(10, 3, cfg)
    directions = torch.nn.Parameter(torch.randn(3, 10, generator=gen))
    results = []
    for chunk in (None, 4, 1):
        fresh = AnomalyClipNet(10, 3, cfg)
        fresh.load_state_dict(net.state_dict())
        directions.grad = None
        terms = training_step(fresh.train(), lambda: directions, feats.clone(), labels, keep, cfg, chunk)
        grads = {n: p.grad.clone() for n, p in fresh.named_parameters()}
        results.append((terms, grads, directions.grad.clone(), fresh.selector.bn.running_var.clone()))
    (terms, grads, dgrad, var), *chunked = results
    assert dgrad.abs().max() > 0 and all(g.abs().max() > 0 for g in grads.values())
    for c_terms, c_grads, c_dgrad, c_var in chunked:
        for name, value in terms.items():
            torch.testing.assert_close(c_terms[name], value, rtol=1e-5, atol=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(c_grads[name], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=name)
        torch.testing.assert_close(c_dgrad, dgrad, rtol=1e-4, atol=1e-5 * dgrad.abs().max().item())
        torch.testing.assert_close(c_var, var)
    assert clip_chunk(cfg, "cpu") == 8 and clip_chunk(cfg, "cuda") is None
    assert clip_chunk(AnomalyClipConfig(clip_chunk=0), "cpu") is None
    assert clip_chunk(AnomalyClipConfig(clip_chunk=16), "cuda") == 16
    with pytest.raises(VadpipeError, match="clip_chunk"):
        AnomalyClipConfig(clip_chunk=-1)


def test_keep_mask_masks_most_segments_but_keeps_k():
    draws = torch.rand(500, 32, generator=torch.Generator().manual_seed(0))
    keep = L.keep_mask(draws, 0.7, 3)
    assert keep.sum(dim=1).min() >= 3
    assert 0.27 < keep.float().mean().item() < 0.33
    assert L.keep_mask(torch.rand(10, 4), 0.99, 3).sum(dim=1).eq(3).all()


# ---------------------------------------------------------------- CoOp prompt learner
def test_prompt_learner_is_the_text_tower_with_learned_context(tiny_encoder):
    from vadpipe.heads.prompt_learner import PromptLearner

    texts = ["fighting", "a car crashing into a wall"]
    model = tiny_encoder.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = PromptLearner(model, tiny_encoder.tokenizer, texts, n_ctx=4, train_projection=True)
    assert learner.ctx.shape == (2, 4, 64) and learner.ctx.std().item() == pytest.approx(0.02, rel=0.3)
    assert {n for n, p in learner.named_parameters() if p.requires_grad} == {"ctx", "text_projection"}
    with torch.no_grad():  # context = the placeholder's own embedding -> exactly the tower's output
        learner.ctx.copy_(model.token_embedding(tiny_encoder.tokenizer(["X"]))[0, 1].expand_as(learner.ctx))
        ref = model.encode_text(tiny_encoder.tokenizer([f"X X X X {t}." for t in texts]))
        torch.testing.assert_close(learner(), ref, rtol=1e-5, atol=1e-5)
    learner().sum().backward()  # gradients reach the context, not the shared encoder
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    shared = PromptLearner(model, tiny_encoder.tokenizer, texts, n_ctx=4, shared_context=True)
    assert shared.ctx.shape == (4, 64) and shared().shape == (2, 64)
    # the causal tower pools the end-of-text token: cutting the padding after it changes nothing
    full = PromptLearner(model, tiny_encoder.tokenizer, texts, n_ctx=4, trim=False)
    assert full.tokens.shape[1] == 77 and learner.tokens.shape[1] == 1 + 4 + 7 + 1  # SOS ctx "a car crashing into a wall ." EOT
    with torch.no_grad():
        full.ctx.copy_(learner.ctx)
        torch.testing.assert_close(learner(), full(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared_context", [False, True])
def test_packed_prompts_match_the_padded_batch(tiny_encoder, shared_context):
    """Each prompt through its own positions (a shared context once, no padding, the last block
    at the pooled row only) gives the padded batch's features and gradients to float rounding."""
    from vadpipe.heads.prompt_learner import PromptLearner

    texts = ["fighting", "a car crashing into a wall", "riding a bike on the footpath", "stealing"]
    learner = PromptLearner(tiny_encoder.model, tiny_encoder.tokenizer, texts, n_ctx=4,
                            shared_context=shared_context, train_projection=True)
    assert learner.packed
    weights = torch.randn(len(texts), tiny_encoder.dim, generator=torch.Generator().manual_seed(0))
    results = []
    for packed in (True, False):
        learner.packed = packed
        learner.zero_grad()
        out = learner()
        (out * weights).sum().backward()
        results.append((out.detach(), learner.ctx.grad.clone(), learner.text_projection.grad.clone()))
    for mine, padded in zip(*results):  # features, context and projection gradients
        assert (mine - padded).abs().max() <= 1e-5 * padded.abs().max()
    assert not PromptLearner(tiny_encoder.model, tiny_encoder.tokenizer, texts, n_ctx=4, trim=False).packed


@pytest.mark.parametrize("tower", ["packed-shared", "packed", "padded", "coca"])
def test_a_chunked_backward_is_the_whole_batch_backward(tiny_encoder, tower):
    """Prompts run (and backpropagate) a few at a time give the whole batch's loss and
    gradients to float rounding, on each path of the learner; a subset's features are the same
    rows of the whole."""
    from vadpipe.encoders import load_clip
    from vadpipe.heads.prompt_learner import PromptLearner
    from vadpipe.heads.training import backward_in_chunks

    enc = load_clip("vadpipe-tiny-coca:random") if tower == "coca" else tiny_encoder
    texts = ["fighting", "a car crashing into a wall", "riding a bike on the footpath", "stealing", "walking"]
    learner = PromptLearner(enc.model, enc.tokenizer, texts, n_ctx=3, shared_context=tower == "packed-shared",
                            train_projection=True)
    learner.packed = learner.packed and tower.startswith("packed")
    assert learner.packed == tower.startswith("packed")
    x = torch.randn(7, enc.dim, generator=torch.Generator().manual_seed(0))

    def loss_of(text):
        return torch.nn.functional.cross_entropy(x @ torch.nn.functional.normalize(text, dim=-1).T / 0.07,
                                                 torch.arange(7) % len(texts))

    results = []
    for chunk in (None, 2):
        learner.zero_grad()
        loss = backward_in_chunks(learner, len(texts), loss_of, chunk)
        results.append((loss, learner.ctx.grad.clone(), learner.text_projection.grad.clone()))
    for whole, chunked in zip(*results):  # loss, context and projection gradients
        assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()  # float64: 1e-14
    with torch.no_grad():
        rows = torch.tensor([3, 0])
        whole = learner()
        torch.testing.assert_close(learner(rows), whole[rows], rtol=1e-5, atol=1e-5 * whole.abs().max().item())


def test_prompt_learner_follows_a_coca_text_tower():
    """CoCa appends a CLS token after the text and pools it: the learner does the same."""
    from pathlib import Path

    import vadpipe
    from vadpipe.encoders import load_clip
    from vadpipe.heads.prompt_learner import PromptLearner

    assert (Path(vadpipe.__file__).parent / "encoders" / "model_configs" / "vadpipe-tiny-coca.json").exists()
    enc = load_clip("vadpipe-tiny-coca:random")
    texts = ["fighting", "a car crashing into a wall"]
    learner = PromptLearner(enc.model, enc.tokenizer, texts, n_ctx=4)
    with torch.no_grad():
        learner.ctx.copy_(enc.model.text.token_embedding(enc.tokenizer(["X"]))[0, 1].expand_as(learner.ctx))
        ref = enc.model.encode_text(enc.tokenizer([f"X X X X {t}." for t in texts]), normalize=True)
        torch.testing.assert_close(torch.nn.functional.normalize(learner(), dim=-1), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the authors' code, restated
def authors_compute_loss(similarity, similarity_topk, labels, scores, idx_topk_abn, idx_topk_nor, idx_bottomk_abn,
                         normal_id, num_topk, num_segments, frames_per_segment, lambda_smooth=8e-4, lambda_sparse=8e-3):
    """``ComputeLoss.__call__`` of lucazanella/AnomalyCLIP @ 6e58b6e (src/models/components/loss.py),
    restated line for line (all lambdas but smoothness and sparsity are 1 in their configs)."""
    alabels = labels[: labels.shape[0] // 2]
    nlabels = labels[labels.shape[0] // 2 :]
    alabels_per_topk = alabels.repeat_interleave(num_topk * frames_per_segment)
    nlabels_per_topk = nlabels.repeat_interleave(num_topk * frames_per_segment)
    asimilarity_topk = similarity_topk[: alabels_per_topk.shape[0]]
    nsimilarity = similarity[similarity.shape[0] // 2 :]
    alabels_per_topk[alabels_per_topk > normal_id] -= 1
    total = []
    for c in range(similarity.shape[1]):
        idx = (alabels_per_topk == c).nonzero(as_tuple=True)[0]
        if idx.nelement():
            total.append(asimilarity_topk[idx, c])
    ldir_abn = -1.0 * torch.cat(total, dim=0).mean(dim=0)
    ldir_nor = (nsimilarity.max(dim=1)[0]).mean(dim=0)
    num_classes = similarity.shape[1] + 1
    class_probs = torch.softmax(similarity, dim=1) * scores.unsqueeze(1)
    class_probs = torch.cat((class_probs[:, :normal_id], (1 - scores).unsqueeze(1), class_probs[:, normal_id:]), dim=1)
    class_probs = class_probs.view(-1, num_segments, frames_per_segment, num_classes)
    aclass_probs, nclass_probs = class_probs[: class_probs.shape[0] // 2], class_probs[class_probs.shape[0] // 2 :]

    def gather(probs, idx):
        return torch.gather(probs, 1, idx.unsqueeze(2).unsqueeze(3).expand([-1, -1, frames_per_segment, num_classes]))

    top = gather(aclass_probs, idx_topk_abn).view(-1, num_classes)
    bottom = gather(aclass_probs, idx_bottomk_abn).view(-1, num_classes)
    nll = torch.nn.NLLLoss()
    alabels_per_topk[alabels_per_topk >= normal_id] += 1
    ltopk_abn = nll(torch.log(top), alabels_per_topk)
    lbottomk_abn = nll(torch.log(bottom), torch.full((bottom.shape[0],), normal_id, dtype=torch.long))
    ltopk_nor = nll(torch.log(gather(nclass_probs, idx_topk_nor).view(-1, num_classes)), nlabels_per_topk)
    abn_scores = scores[: scores.shape[0] // 2]
    shifted = torch.zeros_like(abn_scores)
    shifted[:-1], shifted[-1] = abn_scores[1:], abn_scores[-1]
    lsmooth = lambda_smooth * torch.sum((shifted - abn_scores) ** 2)
    lsparse = lambda_sparse * torch.mean(abn_scores)
    cost = ldir_abn + ldir_nor + ltopk_abn + lbottomk_abn + ltopk_nor + lsmooth + lsparse
    return dict(total=cost, anomalous_direction=ldir_abn, normal_direction=ldir_nor, anomalous_top=ltopk_abn,
                anomalous_bottom=lbottomk_abn, normal_top=ltopk_nor, smoothness=lsmooth, sparsity=lsparse)


def test_code_losses_equal_the_authors_loss_py():
    """``losses="code"`` on fixed tensors = the authors' loss.py restated, term by term, with the
    same MIL selections (their labels count Normal among the classes, at ``normal_id``)."""
    gen = torch.Generator().manual_seed(0)
    Ba, S, F_, C, k, normal_id = 4, 6, 3, 3, 2, 1
    sel = torch.randn(2 * Ba, S, F_, C, generator=gen, dtype=torch.float64)
    logit = torch.randn(2 * Ba, S, F_, generator=gen, dtype=torch.float64)
    cls = torch.tensor([0, 2, 1, 2])  # vadpipe's class index of each anomalous clip
    labels = torch.cat([cls, torch.full((Ba,), -1)])
    keep = torch.ones(2 * Ba, S, dtype=torch.bool)
    keep[:, ::2] = False  # 3 of 6 segments survive the mask in every clip
    ours = L.anomalyclip_loss(sel, logit, labels, keep, k, 8e-3, 8e-4, "code")

    seg = L.segment_likelihood(sel)  # (B S C)
    a_seg = seg[:Ba].gather(2, cls.view(-1, 1, 1).expand(-1, S, 1)).squeeze(2)
    idx_top = L.select_segments(a_seg, keep[:Ba], k, largest=True)
    idx_bottom = L.select_segments(a_seg, keep[:Ba], k, largest=False)
    idx_nor = L.select_segments(seg[Ba:].sum(-1), keep[Ba:], k, largest=True)
    sel_top = torch.cat([L.gather_segments(sel[:Ba], idx_top), L.gather_segments(sel[Ba:], idx_nor)])  # (B k F C)
    their_labels = torch.cat([torch.where(cls >= normal_id, cls + 1, cls), torch.full((Ba,), normal_id)])
    theirs = authors_compute_loss(
        sel.reshape(-1, C), sel_top.reshape(-1, C), their_labels, torch.sigmoid(logit).reshape(-1),
        idx_top, idx_nor, idx_bottom, normal_id, k, S, F_,
    )
    for name, value in theirs.items():
        mine = ours[name] * {"smoothness": 8e-4, "sparsity": 8e-3}.get(name, 1.0)
        assert mine.item() == pytest.approx(value.item(), rel=1e-9, abs=1e-12), name


def authors_scheduler_lrs(base_lr, warmup_epochs, total_epoch, epochs):
    """The lr of each epoch under the authors' ``WarmupCosineAnnealingLR`` (scheduler.py,
    restated), stepped once per epoch by Lightning: ``last_epoch`` is 0 while epoch 0 trains."""
    lrs = []
    for last_epoch in range(epochs):
        if last_epoch < warmup_epochs:
            lrs.append(last_epoch / warmup_epochs * base_lr)
        else:
            progress = min((last_epoch - warmup_epochs) / (total_epoch - warmup_epochs), 1.0)
            lrs.append(base_lr * (math.cos(math.pi * progress) + 1) / 2)
    return lrs


@pytest.mark.parametrize("preset", ["ucf_crime", "shanghaitech", "xd_violence"])
def test_the_schedule_is_the_authors_per_epoch_schedule(preset):
    from vadpipe.heads.anomalyclip.config import PRESETS
    from vadpipe.heads.anomalyclip.train import learning_rates, steps_per_epoch

    cfg = get_head("anomalyclip", preset=preset).config
    p = PRESETS[preset]
    assert (cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.embed_dim, cfg.depth, cfg.concat_selector) == \
        (p["lr"], p["epochs"], p["warmup_epochs"], p["embed_dim"], p["depth"], p["concat_selector"])
    per_epoch = steps_per_epoch(810, 800, 64)  # UCF-Crime's training lists: 25 steps, as the authors' loaders
    assert per_epoch == 25
    lrs = learning_rates(cfg, per_epoch)
    expected = authors_scheduler_lrs(cfg.lr, cfg.warmup_epochs, cfg.epochs, cfg.epochs)
    assert len(lrs) == cfg.epochs * per_epoch and lrs[0] == 0.0
    np.testing.assert_allclose(lrs, np.repeat(expected, per_epoch), rtol=1e-12, atol=0)
    if preset == "ucf_crime":  # the values the authors' configs give (see docs/reproducing.md)
        np.testing.assert_allclose([expected[e] for e in (1, 5, 6, 25, 49)], [2e-6, 1e-5, 9.988e-6, 5.868e-6, 1.218e-8],
                                   rtol=1e-3)
    assert get_head("anomalyclip", preset=preset, lr=1e-3).config.lr == 1e-3  # what is given wins over the preset


def test_training_clips_are_drawn_as_the_authors_dataset():
    """feature_dataset.py: dist = (L - F + 1) // S with L = max(T, S*F); start_i = i * dist +
    randint(dist - F + 2); frames wrap around the video."""
    rng = np.random.default_rng(0)
    for T in (1, 20, 512, 513, 2000):
        idx = training_clip_indices(T, 32, 16, rng)
        dist = (max(T, 512) - 15) // 32
        starts = idx[:, 0] if T > 512 else None
        assert idx.shape == (32, 16) and idx.min() >= 0 and idx.max() < T
        if starts is not None:
            offset = starts - np.arange(32) * dist
            assert offset.min() >= 0 and offset.max() <= dist - 15
            np.testing.assert_array_equal(idx, starts[:, None] + np.arange(16))
        else:  # loop-padded to 512 frames: dist 15, each segment starts at 15 i or 15 i + 1, wrapped
            assert dist == 15
            first = idx[:, 0]
            ok = (first == (15 * np.arange(32)) % T) | (first == (15 * np.arange(32) + 1) % T)
            assert ok.all() and all(np.array_equal(row, (row[0] + np.arange(16)) % T) for row in idx)


def test_a_schedule_too_short_to_train_is_refused(tmp_path, tiny_encoder):
    """Tens of videos with the UCF-Crime schedule: 1 step per epoch at <= 1e-5 cannot move the
    weights; the head says so, with the fix, rather than returning its initialisation."""
    cache, manifest = planted_weak(tmp_path / "few.zarr", tiny_encoder, n_train=6, T=20)
    small = dict(num_segments=4, frames_per_segment=4, embed_dim=32, heads=2, top_k=1)
    with pytest.raises(VadpipeError, match=r"anomalyclip: 50 steps \(1 per epoch: 6 anomalous / 6 normal videos, "
                                           r"batch 64\) at lr <= 1e-05 lets a weight move by at most 2\.5e-04") as err:
        get_head("anomalyclip", **small).fit(cache, manifest)
    assert "--param lr=1e-3" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VadpipeError, match="at most 6.0e-04"):  # 1e-3 * (0 + 1/5 + 2/5): epoch 0 trains at lr 0
        get_head("anomalyclip", **small, lr=1e-3, epochs=3).fit(cache, manifest)
    head = get_head("anomalyclip", **small, lr=1e-3, epochs=10).fit(cache, manifest)
    assert [round(h["lr"] / 1e-3, 3) for h in head.history_[:6]] == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
