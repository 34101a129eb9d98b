"""Shared fixtures: the real footage in ../shared, synthetic data, planted-feature caches."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_encoder():
    from vadpipe.featurize.encoders import load_clip

    return load_clip(TINY)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """The demo's synthetic footpath scene, small: 3 train + 5 test clips of 60 frames."""
    from vadpipe.synth import make_demo_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_demo_dataset(root, num_train=3, num_frames=60)


def planted_cache(path: Path, manifest_rows: list[dict], dim: int = 64, seed: int = 0, key: str = TINY_KEY):
    """Write a cache of hand-built embeddings: rows give video_id and an ``emb`` array.

    The encoder recipe is vadpipe-tiny's, so heads that need the text tower can load it.
    """
    from vadpipe.cache import FeatureCache
    from vadpipe.featurize.encoders import load_clip

    enc = load_clip(TINY)
    cache = FeatureCache(path, mode="a")
    cache.ensure_encoder(key, {**enc.recipe(), "sampling": {"mode": "planted"}})
    for row in manifest_rows:
        emb = np.asarray(row["emb"], dtype=np.float32)
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
