"""Encoder names and cache keys, without torch.

An encoder is named ``MODEL:TAG``:

* ``ViT-B-16:openai`` -- open_clip model name and pretrained tag (downloaded by open_clip
  on first use, or found in its cache);
* ``ViT-B-16:/path/to/checkpoint.pt`` -- a local checkpoint file (machines without
  internet); the cache key becomes ``ViT-B-16:file-<sha256[:12]>`` so two different files
  never share a key, and the recipe records the path and full hash;
* ``MODEL:random`` -- random weights from a fixed seed (benchmarks: the cost of a model
  does not depend on its weights);
* ``vadpipe-tiny`` -- a tiny open_clip config shipped with vadpipe (embed 64, 2 layers,
  64 px), random weights from a fixed seed: the offline encoder of tests and CI.

Everything here is string and file logic: parsing a name, the key a cache files it under,
the spec that rebuilds a cache's encoder from its recorded recipe, and a model's embedding
size read from its open_clip JSON config. None of it imports torch or open_clip, so cache
tools and ``vadpipe --help`` stay instant.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vadpipe.errors import VadpipeError

TINY = "vadpipe-tiny"
RANDOM_TAG = "random"
RANDOM_SEED = 0
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed ``MODEL:TAG``. ``key`` names the encoder's subtree in the cache."""

    model: str
    tag: str  # pretrained tag, "random", or "file-<sha>" for a checkpoint file
    checkpoint: str | None = None  # absolute path when tag is a file
    checkpoint_sha256: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.tag}"

    @property
    def pretrained(self) -> str | None:
        """What open_clip's ``pretrained=`` gets."""
        if self.tag == RANDOM_TAG:
            return None
        return self.checkpoint or self.tag


def parse_encoder(spec: str) -> EncoderSpec:
    """``MODEL[:TAG]`` -> :class:`EncoderSpec`; a bad name is a one-line error."""
    spec = (spec or "").strip()
    if not spec:
        raise VadpipeError("empty encoder name (expected MODEL:TAG, e.g. ViT-B-16:openai)")
    model, sep, tag = spec.partition(":")
    if not sep:
        if model != TINY:
            raise VadpipeError(
                f"encoder {spec!r} has no weights tag: write MODEL:TAG (e.g. {model}:openai), "
                f"MODEL:/path/to/checkpoint.pt, or {model}:random for random weights"
            )
        tag = RANDOM_TAG
    if not model or not tag:
        raise VadpipeError(f"bad encoder name {spec!r} (expected MODEL:TAG)")
    if tag.startswith("file-"):  # an existing cache key; weights must then come from a path
        return EncoderSpec(model, tag)
    if os.sep in tag or tag.startswith(".") or Path(tag).suffix in _CHECKPOINT_SUFFIXES:
        path = Path(tag).expanduser().resolve()
        if not path.is_file():
            raise VadpipeError(f"encoder {spec!r}: checkpoint file {path} not found")
        sha = sha256(path)
        return EncoderSpec(model, f"file-{sha[:12]}", str(path), sha)
    return EncoderSpec(model, tag)


def canonical_key(spec: str) -> str:
    """The cache key of an encoder name: ``vadpipe-tiny`` -> ``vadpipe-tiny:random``,
    ``MODEL:/path/ckpt.pt`` -> ``MODEL:file-<sha>``; a key passes through unchanged."""
    return parse_encoder(spec).key


def spec_from_recipe(recipe: dict) -> EncoderSpec:
    """The :class:`EncoderSpec` that rebuilds a cache's encoder from its recorded recipe.

    A checkpoint file must still exist at the recorded path with the recorded hash, so a
    head's text tower is the very network that embedded the frames.
    """
    model, tag = recipe.get("model"), recipe.get("pretrained")
    if not model or not tag:
        raise VadpipeError("cache recipe lacks model/pretrained: was it imported without a model name?")
    path = recipe.get("checkpoint_path")
    if not tag.startswith("file-"):
        return EncoderSpec(model, tag)
    if not path or not Path(path).is_file():
        raise VadpipeError(
            f"encoder {model}:{tag} was built from checkpoint {path}, which is not there any more"
        )
    sha = sha256(Path(path))
    if sha != recipe.get("checkpoint_sha256"):
        raise VadpipeError(f"checkpoint {path} changed since the cache was built (sha256 differs)")
    return EncoderSpec(model, tag, path, sha)


def model_config(model: str) -> dict | None:
    """The open_clip JSON config of ``model`` (vadpipe's own first, then open_clip's), read
    from its file without importing open_clip; None when no config of that name exists."""
    dirs = [CONFIG_DIR]
    found = importlib.util.find_spec("open_clip")
    if found is not None and found.submodule_search_locations:
        dirs += [Path(p) / "model_configs" for p in found.submodule_search_locations]
    for folder in dirs:
        path = folder / f"{model}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return None
    return None


def embed_dim(model: str) -> int | None:
    """The embedding size of an open_clip model name (None when it is not one)."""
    cfg = model_config(model)
    return int(cfg["embed_dim"]) if cfg and "embed_dim" in cfg else None


def trained_with_quick_gelu(spec: EncoderSpec) -> bool:
    """Without torch: whether features of ``spec`` come from QuickGELU towers -- OpenAI's weights
    (tag ``openai``) and ``*-quickgelu`` models (for ``cache import``, which records it; loading a
    model asks open_clip's pretrained config, :func:`vadpipe.encoders.clip.quick_gelu_for`)."""
    return spec.checkpoint is None and (spec.tag == "openai" or spec.model.lower().endswith("-quickgelu"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
