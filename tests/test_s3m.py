"""The ``s3m`` head (VLAVAD): S3M on planted trajectories, SPA on planted answers, and the
caption -> s3m path on real footage with tiny models."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from vadpipe.cache import FeatureCache
from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head

from conftest import TINY, TINY_KEY, frame_auc, make_tiny_blip2, planted_cache, require_shared, unit

D = 64
SMALL = dict(d_model=32, d_state=16, epochs=5)  # the paper's 3 layers, 20 -> 4; a narrow net trains fast
CAP_KEY = "planted-blip2:vqa3-00000000"
QUESTIONS = ["What is the pose of the person in the picture?", "What does the person look like?", "<caption>"]


def circle_cache(path, T=100, seed=0):
    """Normal videos go round a circle on the sphere at a constant speed (plus noise); in each
    test video the trajectory breaks for 25 samples: it stops (even ids) or runs backwards (odd).
    Every anomalous embedding lies on the normal circle, so only the dynamics give it away."""
    rng = np.random.default_rng(seed)
    c, u, v = unit(rng.normal(size=(3, D)))
    step = 2 * np.pi / 25

    def trajectory(phase):
        return c + 0.6 * (np.cos(phase)[:, None] * u + np.sin(phase)[:, None] * v) + 0.01 * rng.normal(size=(T, D))

    rows, entries = [], []
    for i in range(4):
        rows.append({"video_id": f"tr{i}", "emb": trajectory(rng.uniform(0, 2 * np.pi) + step * np.arange(T))})
        entries.append(VideoEntry(f"tr{i}", "x", "train", "normal"))
    for i in range(4):
        a = int(rng.integers(30, 60))
        steps = np.full(T, step)
        steps[a : a + 25] = 0.0 if i % 2 == 0 else -step
        rows.append({"video_id": f"te{i}", "emb": trajectory(rng.uniform(0, 2 * np.pi) + np.cumsum(steps))})
        entries.append(VideoEntry(f"te{i}", "x", "test", "anomaly", (Interval(a, a + 25),), num_frames=T))
    return planted_cache(path, rows), Manifest(entries)


def test_s3m_learns_the_normal_dynamics(tmp_path):
    cache, manifest = circle_cache(tmp_path / "circle.zarr")
    head = get_head("s3m", sigma=0, **SMALL).fit(cache, manifest)
    assert head.input_ == "image" and head.caption_key_ is None  # no captions in this cache
    assert head.losses_[-1] < 0.2 * head.losses_[0]
    scores = head.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, scores) >= 0.9  # A_t alone (no captions: A = 0.1 A_t)
    # neither "the next frame repeats this one" nor distance to normal frames sees these anomalies
    baseline = {}
    for vid, s in scores.items():
        e = cache.read(TINY_KEY, vid).emb.astype(np.float32)
        baseline[vid] = type(s)(s.frame_index, np.r_[0, ((e[1:] - e[:-1]) ** 2).sum(1)], s.num_frames)
    assert frame_auc(manifest, baseline) < 0.6
    prototype = get_head("prototype").fit(cache, manifest)
    assert frame_auc(manifest, prototype.score_videos(cache, manifest.ids("test"))) < 0.6


def answers_cache(path, seed=0):
    """Image embeddings are noise; the planted captioner group says who is anomalous.

    Question 0 (pose) is concentrated on normal frames ('standing', 'walking', rarely
    'lying on the ground'); question 1 and the caption are spread over many answers.
    Anomalous test frames answer 'riding a bike' (never seen) or 'lying on the ground'
    (seen once); normal test frames include 'Walking slowly.', an unseen paraphrase whose
    embedding is next to 'walking'."""
    rng = np.random.default_rng(seed)
    vocab = {}

    def vec(answer):
        if answer not in vocab:
            vocab[answer] = unit(rng.normal(size=D))
        return vocab[answer]

    vocab["walking slowly"] = unit(vec("walking") + 0.05 * rng.normal(size=D))
    T = 40
    rows, entries, captions = [], [], {}
    for i in range(5):
        pose = rng.choice(["standing", "walking"], size=T, p=[0.7, 0.3]).astype(object)
        if i == 0:
            pose[7] = "lying on the ground"
        captions[f"tr{i}"] = pose
        entries.append(VideoEntry(f"tr{i}", "x", "train", "normal"))
    for i in range(4):
        pose = rng.choice(["Standing.", "walking", "walking slowly"], size=T, p=[0.6, 0.3, 0.1]).astype(object)
        a = int(rng.integers(5, 25))
        pose[a : a + 10] = "riding a bike" if i % 2 else "lying on the ground"
        captions[f"te{i}"] = pose
        entries.append(VideoEntry(f"te{i}", "x", "test", "anomaly", (Interval(a, a + 10),), num_frames=T))
    for vid in captions:
        rows.append({"video_id": vid, "emb": rng.normal(size=(T, D))})
    cache = planted_cache(path, rows)
    cache = FeatureCache(path, mode="a")
    cache.ensure_encoder(CAP_KEY, {"kind": "captioner", "clip_key": TINY_KEY, "questions": QUESTIONS, "dim": D})
    for vid, pose in captions.items():
        look = [f"person {k}" for k in rng.integers(0, 30, T)]
        caption = [f"a scene number {k}" for k in rng.integers(0, 1000, T)]
        text = np.array([pose, look, caption], dtype=str).T  # (T Q)
        norm = [[a.lower().strip(". ") for a in row] for row in text]
        emb = np.array([[vec(a) for a in row] for row in norm], dtype=np.float16)  # (T Q D)
        cache.write_video(CAP_KEY, vid, np.arange(T), np.arange(T) / 25.0, attrs={"num_frames": T, "fps": 25.0},
                          arrays={"text": text, "text_emb": emb})
    return FeatureCache(path), Manifest(entries)


def s4d_reference(layer, u):
    """state-spaces/s4's S4D (``models/s4/s4d.py``) on ``(B, L, H)`` rows: the kernel from
    complex exponentials, the causal convolution as an FFT of length 2L, the skip D, GELU, the
    1x1 convolution and GLU on ``(B, H, L)``."""
    import torch

    kern = layer.kernel
    dt = torch.exp(kern.log_dt)
    C = torch.view_as_complex(kern.C)
    A = -torch.exp(kern.log_A_real) + 1j * kern.A_imag
    dtA = A * dt.unsqueeze(-1)
    K = dtA.unsqueeze(-1) * torch.arange(u.size(1))
    k = 2 * torch.einsum("hn,hnl->hl", C * (torch.exp(dtA) - 1.0) / A, torch.exp(K)).real  # (H L)
    x = u.transpose(1, 2)  # (B H L)
    L = x.size(-1)
    y = torch.fft.irfft(torch.fft.rfft(x, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
    y = torch.nn.functional.gelu(y + x * layer.D.unsqueeze(-1))
    return layer.output_linear(y).transpose(1, 2)  # (B L H)


@pytest.mark.parametrize("last", [False, True])
def test_s4d_is_the_reference_layer_forward_and_backward(last):
    """vadpipe's S4D (real exp/cos/sin kernel, lag-by-lag convolution, ``last=True`` at the last
    position only) is state-spaces/s4's layer: outputs and every parameter's gradient."""
    import torch

    from vadpipe.heads.s4d import S4D

    torch.manual_seed(0)
    layer = S4D(16, 8)
    u = torch.randn(5, 20, 16, requires_grad=True)
    weights = torch.randn(5, 20, 16)
    ours, ref = layer(u, last=last), s4d_reference(layer, u)
    if last:
        ref, weights = ref[:, -1], weights[:, -1]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((ours * weights).sum(), [u, *layer.parameters()])
    expected = torch.autograd.grad((ref * weights).sum(), [u, *layer.parameters()])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_spa_selects_the_concentrated_question_and_scores_rare_answers(tmp_path):
    cache, manifest = answers_cache(tmp_path / "answers.zarr")
    head = get_head("s3m", temporal_weight=0, sigma=0).fit(cache, manifest)  # SPA alone
    assert head.encoder == TINY_KEY and head.caption_key_ == CAP_KEY
    assert head.spa_questions_ == [0] and head.spa_question_texts_ == QUESTIONS[:1]
    assert head.spa_concentration_[0] == 1.0 and max(head.spa_concentration_[1:]) < 0.5
    scores = head.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, scores) >= 0.99
    for vid, s in scores.items():
        pose = s.explanation  # each frame's answer to the selected question
        assert set(pose) <= {"standing", "walking", "walking slowly", "riding a bike", "lying on the ground"}
        np.testing.assert_allclose(s.score[pose == "riding a bike"], 1.0)  # never seen, nothing near
        np.testing.assert_allclose(s.score[pose == "lying on the ground"], 0.5)  # seen once: 1 / (1 + 1)
        assert (s.score[pose == "standing"] < 0.01).all() and (s.score[pose == "walking slowly"] < 0.05).all()

    # SPA + S3M on the selected question's answer embeddings, smoothed (sigma 3: the planted events
    # last 10 samples): still finds them; save/load exact
    fused = get_head("s3m", sigma=3, **SMALL).fit(cache, manifest)
    assert fused.input_ == "captions"
    before = fused.score_videos(cache, manifest.ids("test"))
    assert frame_auc(manifest, before) >= 0.9
    fused.save(tmp_path / "run")
    after = load_head(tmp_path / "run").score_videos(cache, manifest.ids("test"))
    for vid in before:
        np.testing.assert_array_equal(before[vid].score, after[vid].score)
        np.testing.assert_array_equal(before[vid].explanation, after[vid].explanation)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["spa_questions"] == [0]
    with pytest.raises(VadpipeError, match="is a captioner"):
        get_head("s3m", encoder=CAP_KEY).fit(cache, manifest)
    with pytest.raises(VadpipeError, match="no captions"):
        get_head("s3m", input="captions", caption_encoder=None).fit(cache, manifest)


def test_cli_trains_s3m_on_a_cache_with_captions(tmp_path):
    from vadpipe.cli import app

    _, manifest = answers_cache(tmp_path / "c.zarr")
    manifest.save(tmp_path / "m.csv")
    args = ["train", "s3m", "--cache", tmp_path / "c.zarr", "--manifest", tmp_path / "m.csv", "-o", tmp_path / "run",
            "--param", "epochs=1", "--param", "d_model=16"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["caption_key"] == CAP_KEY


def test_caption_then_s3m_on_real_footage(tmp_path):
    from vadpipe.evaluate import EvalConfig, evaluate
    from vadpipe.featurize import FeaturizeConfig, Sampling, featurize
    from vadpipe.featurize.captioner import caption
    from vadpipe.runs import score_run, train_head
    from vadpipe.scores import ScoresStore

    videos = require_shared("videos")
    manifest = Manifest([
        VideoEntry("ped2_train01", str(videos / "ucsd_ped2/training/frames/01"), "train", "normal"),
        VideoEntry("avenue_train12", str(videos / "avenue/training_videos/12.avi"), "train", "normal"),
        VideoEntry("ped2_test01", str(videos / "ucsd_ped2/testing/frames/01"), "test", "anomaly",
                   (Interval(60, 180),), num_frames=180),
        VideoEntry("avenue_test21", str(videos / "avenue/testing_videos/21.avi"), "test", "anomaly",
                   (Interval(20, 60),)),
    ])
    cache = tmp_path / "cache.zarr"
    assert len(featurize(manifest, cache, FeaturizeConfig(encoder=TINY, sampling=Sampling(8))).done) == 4
    summary = caption(manifest, cache, str(make_tiny_blip2(tmp_path / "blip2")), TINY_KEY, max_new_tokens=4)
    assert len(summary.done) == 4 and not summary.failed
    train_head("s3m", cache, manifest, tmp_path / "run", params=dict(SMALL, epochs=2, sigma=6))
    store = score_run(tmp_path / "run", cache, manifest, tmp_path / "scores.zarr").path
    for vid, n in {"ped2_test01": 180, "avenue_test21": 76}.items():
        s = ScoresStore(store).read(vid)
        np.testing.assert_array_equal(s.frame_index, np.arange(0, n, 8))
        assert np.isfinite(s.score).all() and (s.score > 0).all() and len(s.explanation) == len(s.score)
        answers = FeatureCache(cache).read(summary.encoder_key, vid).arrays["text"]
        question = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["spa_questions"][0]
        assert list(s.explanation) == list(answers[:, question])
    report = evaluate(store, manifest, None, EvalConfig())
    assert math.isfinite(report["micro_auc"]) and report["num_videos"] == 2


def test_unseen_answer_rule_static_weight_and_presets(tmp_path):
    """spa_unseen="exact" is the paper's literal reading (an answer not seen verbatim is never
    seen); static_weight=0 is Table 2's S3M-only row: the fused score less SPA's."""
    cache, manifest = answers_cache(tmp_path / "answers.zarr")
    ids = manifest.ids("test")
    exact = get_head("s3m", temporal_weight=0, sigma=0, spa_unseen="exact").fit(cache, manifest).score_videos(cache, ids)
    for s in exact.values():
        np.testing.assert_allclose(s.score[s.explanation == "walking slowly"], 1.0)  # a paraphrase, unseen
        np.testing.assert_allclose(s.score[s.explanation == "riding a bike"], 1.0)
    params = dict(SMALL, sigma=0)
    fused = get_head("s3m", **params).fit(cache, manifest).score_videos(cache, ids)
    spa = get_head("s3m", **params, temporal_weight=0).fit(cache, manifest).score_videos(cache, ids)
    s3m_only = get_head("s3m", **params, static_weight=0).fit(cache, manifest).score_videos(cache, ids)
    for vid in ids:
        np.testing.assert_allclose(s3m_only[vid].score, fused[vid].score - spa[vid].score, atol=1e-5)
    ped2 = get_head("s3m", preset="ped2").config
    assert (ped2.past, ped2.future, ped2.lr, ped2.sigma, ped2.temporal_weight, ped2.input) == (10, 2, 0.5, 6.0, 0.1, "captions")
    sht = get_head("s3m", preset="shanghaitech", sigma=3).config
    assert (sht.past, sht.future, sht.lr, sht.sigma) == (20, 4, 5e-2, 3)
    with pytest.raises(VadpipeError, match="unknown preset 'ucf'"):
        get_head("s3m", preset="ucf")
