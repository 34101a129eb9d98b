"""Shared fixtures: the real footage in ../shared, synthetic data, planted-feature caches."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
ANNOTATIONS = SHARED / "data" / "annotations"
TINY = "vadpipe-tiny"
TINY_KEY = "vadpipe-tiny:random"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster than two, and far faster on a
    busy machine (threads spinning for cores), with identical results."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def require_shared(*parts: str) -> Path:
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (the ../shared checkout)")
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (a Zarr store) by relative path: two runs wrote the same bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# the real clips in ../shared/data/videos, by the video ids tests give them: (path, split)
SHARED_CLIPS = {
    "ped2_test": ("ucsd_ped2/testing/frames/01", "test"),
    "avenue21": ("avenue/testing_videos/21.avi", "test"),
    "avenue08": ("avenue/testing_videos/08.avi", "test"),
    "ped2_train": ("ucsd_ped2/training/frames/01", "train"),
    "avenue12": ("avenue/training_videos/12.avi", "train"),
}


def shared_clips_manifest(path: Path, *video_ids: str) -> Path:
    """A manifest of the named real clips (all labelled normal), saved at ``path``."""
    from vadpipe.data_manifests import Manifest, VideoEntry

    videos = require_shared("videos")
    Manifest([VideoEntry(v, str(videos / SHARED_CLIPS[v][0]), SHARED_CLIPS[v][1], "normal")
              for v in video_ids]).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder():
    from vadpipe.encoders import load_clip

    return load_clip(TINY)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """The demo's synthetic footpath scene, small: 3 train + 5 test clips of 60 frames."""
    from vadpipe.synth import make_demo_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_demo_dataset(root, num_train=3, num_frames=60)


def planted_cache(path: Path, manifest_rows: list[dict], dim: int = 64, seed: int = 0, key: str = TINY_KEY,
                  normalised: bool = False):
    """Write a cache of hand-built embeddings: rows give video_id and an ``emb`` array.

    The encoder recipe is vadpipe-tiny's, so heads that need the text tower can load it.
    ``normalised``: rows scaled to unit length (as vadpipe 0.2 stored them); by default kept as
    given (as featurize stores the model's output now); the recipe says which.
    """
    from vadpipe.cache import FeatureCache
    from vadpipe.encoders import load_clip

    enc = load_clip(TINY)
    cache = FeatureCache(path, mode="a")
    cache.ensure_encoder(key, {**enc.recipe(), "sampling": {"mode": "planted"}, "normalised": normalised})
    for row in manifest_rows:
        emb = np.asarray(row["emb"], dtype=np.float32)
        if normalised:
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        T = len(emb)
        cache.write_video(
            key, row["video_id"], np.arange(T), np.arange(T) / 25.0, emb.astype(np.float16),
            {"num_frames": T, "fps": 25.0},
        )
    return FeatureCache(path)


def unit(v):
    """Rows of ``v`` scaled to unit length."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def frame_auc(manifest, scores):
    """ROC AUC of the sampled frames' scores against the manifest's frame labels."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([manifest[v].frame_labels(s.num_frames)[s.frame_index] for v, s in scores.items()])
    return roc_auc_score(y, np.concatenate([s.score for s in scores.values()]))


def assert_same_arrays(a_path, b_path, key: str = TINY_KEY) -> None:
    """Two caches hold the same content under ``key`` (recipe, done videos, attributes, arrays),
    whatever their backend or byte layout (Zarr vs HDF5, a file rewritten after a kill)."""
    from vadpipe.cache import FeatureCache

    with FeatureCache(a_path) as a, FeatureCache(b_path) as b:
        assert a.video_ids(key) == b.video_ids(key)
        assert a.recipe(key) == b.recipe(key)
        for vid in a.video_ids(key):
            fa, fb = a.read(key, vid), b.read(key, vid)
            for name in ("frame_index", "pts", "emb"):
                np.testing.assert_array_equal(getattr(fa, name), getattr(fb, name))
            assert fa.attrs == fb.attrs


def make_tiny_blip2(path):
    """A randomly initialised BLIP-2 (ViT/Q-Former/OPT, hidden 32, 2 layers) with open_clip's BPE
    vocabulary as its tokenizer, written with ``save_pretrained`` like a real checkpoint."""
    import open_clip
    import torch
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor,
                              CLIPTokenizer, OPTConfig)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, initializer_range=1.0)
    text = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, word_embed_proj_dim=32,
                     vocab_size=len(tokenizer), max_position_embeddings=128, init_std=0.5,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
        qformer_config={**tiny, "encoder_hidden_size": 32, "vocab_size": 100},
        text_config=text.to_dict(), num_query_tokens=4, initializer_range=1.0,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Blip2ForConditionalGeneration(config)  # large init: answers depend on the image
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
