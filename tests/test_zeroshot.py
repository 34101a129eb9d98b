"""The ``zeroshot`` head (Ueki 2024): prompt files, planted prompt directions, CoCa."""

import json

import numpy as np
import pytest

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head
from vadpipe.heads.text import embed_prompts
from vadpipe.heads.prompts import list_prompt_sets, load_prompt_set
from vadpipe.heads.text import embed_groups
from vadpipe.heads.zeroshot import DEFAULT_TEMPLATES

UEKI_ANOMALY_PROMPTS = ("anomaly behavior", "dangerous activity", "dangerous behavior")  # Ueki 2024, Sec. 4

from conftest import frame_auc, planted_cache

D, T, SEG = 64, 40, 12


def planted(tmp_path, normal: np.ndarray, directions: dict, seed=0, n=8):
    """Test videos whose frames lie around ``normal`` (a normal prompt's embedding); each
    anomalous video's segment is shifted toward its class's direction (a text embedding).
    Every third video is normal."""
    rng = np.random.default_rng(seed)
    classes = sorted(directions)
    rows, entries, k = [], [], 0
    for i in range(n):
        emb = normal + 0.05 * rng.normal(size=(T, D))
        if i % 3 == 2:
            entries.append(VideoEntry(f"v{i}", "x", "test", "normal", num_frames=T))
        else:
            c, k = classes[k % len(classes)], k + 1
            a = int(rng.integers(0, T - SEG))
            emb[a : a + SEG] += 2 * directions[c]
            entries.append(VideoEntry(f"v{i}", "x", "test", c, (Interval(a, a + SEG),), num_frames=T))
        rows.append({"video_id": f"v{i}", "emb": emb})
    return planted_cache(tmp_path / "z.zarr", rows), Manifest(entries)


def test_default_prompts_find_frames_shifted_toward_an_anomaly_prompt(tmp_path, tiny_encoder):
    normal, target = embed_prompts(tiny_encoder, ["ordinary activity", "dangerous behavior"], ("{}",))
    cache, manifest = planted(tmp_path, normal, {"Fighting": target})
    head = get_head("zeroshot").fit(cache, manifest)  # ueki-generic: the paper's three prompts, cosine, no template
    assert head.config.mode == "cosine" and head.templates_ == ["{}"]
    assert head.prompts_ == list(UEKI_ANOMALY_PROMPTS)
    scores = head.score_videos(cache, manifest.ids())
    assert frame_auc(manifest, scores) >= 0.95
    s = scores["v0"]
    anomalous = manifest["v0"].frame_labels(T).astype(bool)
    assert (s.explanation[anomalous] == "dangerous behavior").mean() >= 0.9
    assert s.class_names == ("Fighting",) and s.class_probs.shape == (T, 1)


def test_per_class_prompts_recognise_the_class(tmp_path, tiny_encoder):
    ucf = load_prompt_set("ucf-crime")
    classes = ["Arson", "Fighting", "RoadAccidents"]
    directions = dict(zip(classes, embed_groups(tiny_encoder, [ucf.classes[c] for c in classes], DEFAULT_TEMPLATES)))
    normal = embed_prompts(tiny_encoder, ucf.normal[:1], DEFAULT_TEMPLATES)[0]
    cache, manifest = planted(tmp_path, normal, directions, n=9)
    head = get_head("zeroshot", mode="softmax", prompts="ucf-crime").fit(cache, manifest)
    assert head.class_texts_ == [ucf.classes[c] for c in classes]  # found by class name in the shipped set
    scores = head.score_videos(cache, manifest.ids())
    assert frame_auc(manifest, scores) >= 0.95
    hits = []
    for vid, s in scores.items():
        truth = manifest[vid].frame_classes(T)
        ab = truth != "normal"
        np.testing.assert_allclose(s.class_probs.sum(axis=1), s.score, rtol=1e-5)  # p(c, A) sums to p(A)
        hits += list(np.array(s.class_names)[s.class_probs[ab].argmax(axis=1)] == truth[ab])
    assert np.mean(hits) >= 0.9


def test_shipped_prompt_sets_match_the_manifest_builders():
    from vadpipe.data_manifests.schema import NORMAL
    from vadpipe.data_manifests.ucf_crime import CLASSES as UCF
    from vadpipe.data_manifests.xd_violence import CLASS_CODES

    assert {"ueki-generic", "ucf-crime", "xd-violence", "dong-categories", "dong-situations"} <= set(list_prompt_sets())
    assert load_prompt_set("ueki-generic").anomaly == UEKI_ANOMALY_PROMPTS
    assert set(load_prompt_set("ucf-crime").classes) == set(UCF)
    xd = set(CLASS_CODES.values()) - {NORMAL}
    assert set(load_prompt_set("xd-violence").classes) == xd
    assert set(load_prompt_set("dong-categories").classes) >= set(UCF) | xd
    assert load_prompt_set("dong-categories").classes["Abuse"] == ("child abuse, elder abuse, or animal cruelty",)
    situations = load_prompt_set("dong-situations")
    assert len(situations.normal) == len(situations.anomaly) == 20
    for name in list_prompt_sets():
        pset = load_prompt_set(name)
        assert pset.normal and pset.anomaly_prompts(), name
        assert pset.description


def test_user_prompt_file(tmp_path, tiny_encoder):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({
        "templates": ["{}", "a photo of {}"],
        "normal": ["people walking"],
        "classes": {"Fighting": ["a fight", "people fighting"], "Fire": "a fire"},
    }))
    pset = load_prompt_set(path)
    assert pset.anomaly_prompts() == ("a fight", "people fighting", "a fire")
    normal, target = embed_prompts(tiny_encoder, ["people walking", "a fire"], ("{}", "a photo of {}"))
    cache, manifest = planted(tmp_path, normal, {"Fire": target})
    head = get_head("zeroshot", mode="softmax", prompts=str(path)).fit(cache, manifest)
    assert head.prompts_ == ["people walking", "a fight", "people fighting", "a fire"]
    assert head.templates_ == ["{}", "a photo of {}"]
    np.testing.assert_allclose(head.class_emb_[0], target, atol=1e-6)  # the file's class prompt, its templates
    scores = head.score_videos(cache, manifest.ids())
    assert frame_auc(manifest, scores) >= 0.95
    head.save(tmp_path / "run")
    path.unlink()  # a saved head needs no prompt file
    again = load_head(tmp_path / "run").score_videos(cache, manifest.ids())
    for vid, s in scores.items():
        np.testing.assert_array_equal(s.score, again[vid].score)
        np.testing.assert_array_equal(s.class_probs, again[vid].class_probs)
        assert list(s.explanation) == list(again[vid].explanation)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"normal": ["a"],', r"bad\.json:1: not valid JSON"),
        ('["a", "b"]', r"bad\.json: a prompt file must be a JSON object"),
        ('{"normals": ["a"]}', r"bad\.json: unknown key\(s\) normals"),
        ('{"normal": ["a", 3]}', r"bad\.json: 'normal' must be a list of non-empty strings"),
        ('{"anomaly": "a fire"}', r"bad\.json: 'anomaly' must be a list"),
        ('{"classes": {"Fire": [""]}}', r"bad\.json: 'classes\.Fire' must be a list of non-empty strings"),
        ('{"classes": ["Fire"]}', r"bad\.json: 'classes' must be an object"),
        ('{"normal": ["a"], "templates": ["a video of"]}', r"bad\.json: template 'a video of' must contain"),
        ('{"description": "nothing"}', r"bad\.json: no prompts"),
    ],
)
def test_bad_prompt_file_is_one_clear_line(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VadpipeError, match=problem) as err:
        load_prompt_set(path)
    assert "\n" not in str(err.value)


def test_missing_or_unknown_prompt_sets(tmp_path):
    with pytest.raises(VadpipeError, match=r"unknown prompt set 'nope' \(shipped: .*ucf-crime"):
        load_prompt_set("nope")
    with pytest.raises(VadpipeError, match=r"gone\.json: prompt file not found"):
        load_prompt_set(tmp_path / "gone.json")
    with pytest.raises(VadpipeError, match=r"must contain '\{\}' exactly once"):
        get_head("zeroshot", templates=["no placeholder"])
    with pytest.raises(VadpipeError, match="non-empty list"):
        get_head("zeroshot", anomaly_prompts=[])
    with pytest.raises(VadpipeError, match="mode=cosine scores by the anomaly prompts alone"):
        get_head("zeroshot", normal_prompts=["people walking"])
    with pytest.raises(VadpipeError, match="unknown mode 'logits'"):
        get_head("zeroshot", mode="logits")


def test_cosine_mode_is_the_cosine_of_frame_and_prompt(tmp_path, tiny_encoder):
    """Ueki's score, computed independently: the open_clip text tower on the bare prompt, the
    cache's raw rows normalised by hand, their dot product (one prompt; the max over several)."""
    import torch

    rng = np.random.default_rng(3)
    rows = [{"video_id": f"v{i}", "emb": 8 * rng.normal(size=(T, D))} for i in range(3)]
    cache = planted_cache(tmp_path / "raw.zarr", rows, normalised=False)
    assert cache.recipe(cache.encoders()[0])["normalised"] is False
    manifest = Manifest([VideoEntry(f"v{i}", "x", "test", "normal", num_frames=T) for i in range(3)])
    prompts = ["dangerous behavior", "a fire"]
    with torch.no_grad():
        text = tiny_encoder.model.encode_text(tiny_encoder.tokenizer(prompts)).numpy()  # (2 D), raw
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    for chosen in (prompts[:1], prompts):
        head = get_head("zeroshot", anomaly_prompts=chosen, classes=False).fit(cache, manifest)
        scores = head.score_videos(cache, manifest.ids())
        for row in rows:
            f = cache.read(head.encoder, row["video_id"]).emb.astype(np.float64)
            assert np.abs(np.linalg.norm(f, axis=1) - 1).min() > 0.5  # raw rows, not unit
            expected = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ text[: len(chosen)].T
            np.testing.assert_allclose(scores[row["video_id"]].score, expected.max(axis=1), atol=1e-5)
            assert list(scores[row["video_id"]].explanation) == [chosen[j] for j in expected.argmax(axis=1)]


def test_class_cosines_give_uekis_per_class_auc(tmp_path, tiny_encoder):
    """Table II as one evaluate: each class's AUC over its own videos plus the normal ones,
    ranked by the frame's cosine to the class's name; checked against scikit-learn by hand."""
    from sklearn.metrics import roc_auc_score

    from vadpipe.evaluate import evaluate
    from vadpipe.evaluate.run import EvalConfig

    classes = ["Arson", "Fighting", "RoadAccidents"]
    directions = dict(zip(classes, embed_prompts(tiny_encoder, ["arson", "fighting", "road accidents"], ("{}",))))
    normal = embed_prompts(tiny_encoder, ["people walking"], ("{}",))[0]
    cache, manifest = planted(tmp_path, normal, directions, n=12)
    head = get_head("zeroshot", class_sets=[]).fit(cache, manifest)
    assert head.class_texts_ == [("arson",), ("fighting",), ("road accidents",)]
    scores = head.score_videos(cache, manifest.ids())
    report = evaluate(scores, manifest, config=EvalConfig(plots=False))
    per_class = {c["class"]: c["subset_auc"] for c in report["recognition"]["classes"]}
    for j, c in enumerate(classes):
        vids = [e.video_id for e in manifest if e.label in (c, "normal")]
        y = np.concatenate([manifest[v].frame_labels(T) for v in vids])
        p = np.concatenate([scores[v].class_probs[:, j] for v in vids])
        assert per_class[c] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert per_class[c] >= 0.95
    assert report["recognition"]["subset_mauc"] == pytest.approx(np.mean(list(per_class.values())))


def test_coca_text_path(tmp_path):
    """CoCa (``coca_ViT-L-14`` in the paper) through a tiny CoCa config: featurize, fit, score."""
    import torch
    from PIL import Image

    from vadpipe.featurize import FeaturizeConfig, featurize
    from vadpipe.encoders import load_clip

    frames = tmp_path / "clip"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    manifest = Manifest([VideoEntry("clip", str(frames), "test", "Fighting", (Interval(2, 4),), num_frames=4)])
    key = "vadpipe-tiny-coca:random"
    summary = featurize(manifest, tmp_path / "c.zarr", FeaturizeConfig(encoder=key, device="cpu", workers=0))
    assert summary.done == ["clip"]

    from vadpipe.cache import FeatureCache

    cache = FeatureCache(tmp_path / "c.zarr")
    head = get_head("zeroshot").fit(cache, manifest)
    assert head.encoder == key
    s = head.score_videos(cache, ["clip"])["clip"]
    assert s.score.shape == (4,) and np.all((s.score >= -1) & (s.score <= 1))  # cosines
    assert s.class_probs.shape == (4, 1) and set(s.explanation) <= set(head.prompts_)

    # the stored prompt embeddings are CoCa's own text latent (CLS token appended, 76-token context)
    coca = load_clip(key)
    assert type(coca.model).__name__ == "CoCa" and coca.model.context_length == 76
    texts = list(load_prompt_set("ueki-generic").anomaly[:1])  # no template in cosine mode
    with torch.no_grad():
        tokens = coca.tokenizer(texts)
        assert tokens.shape == (1, 76)
        latent, _ = coca.model.text(tokens)  # (pooled CLS latent, token embeddings)
    latent = torch.nn.functional.normalize(latent, dim=-1).mean(0)
    np.testing.assert_allclose(head.prompt_emb_[0], (latent / latent.norm()).numpy(), atol=1e-5)


def test_text_is_encoded_up_to_the_last_end_of_text_token():
    """A causal tower that pools the end-of-text token gives the same features through the
    positions up to a batch's last end-of-text token as through all 77 (float rounding); a
    tower that pools otherwise (CoCa's appended CLS token) runs all its positions."""
    import torch

    from vadpipe.encoders import load_clip
    from vadpipe.encoders.text_tower import encode_tokens

    texts = ["riding a bike", "a person walking on the grass", "fighting"]
    enc = load_clip("vadpipe-tiny:random")
    tokens = enc.tokenizer(texts)
    with torch.inference_mode():
        full, cut = enc.model.encode_text(tokens), encode_tokens(enc.model, tokens)
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1] // 4  # the cut is real
    torch.testing.assert_close(cut, full, rtol=0, atol=1e-5)
    coca = load_clip("vadpipe-tiny-coca:random")
    assert encode_tokens(coca.model, coca.tokenizer(texts)) is None
    assert coca.encode_text(texts).shape == (3, coca.dim)


def test_a_text_only_encoder_is_the_same_text_tower_without_its_image_tower():
    """Heads load the cache's encoder for text only: open_clip builds it whole (the same seeded
    weights), then the image tower is let go; its text features are the full model's."""
    import numpy as np

    from vadpipe.encoders import load_clip
    from vadpipe.errors import VadpipeError

    texts = ["riding a bike", "a person walking on the grass"]
    for key in ("vadpipe-tiny:random", "vadpipe-tiny-coca:random"):
        full, text = load_clip(key), load_clip(key, image=False)
        assert text is not full and text.model.visual is None and full.model.visual is not None
        np.testing.assert_array_equal(text.encode_text(texts), full.encode_text(texts))
        assert (text.dim, text.preprocessing) == (full.dim, full.preprocessing)
        with pytest.raises(VadpipeError, match="text tower only"):
            text.encode_images(np.zeros((1, 3, full.preprocessing.size, full.preprocessing.size), np.uint8))
