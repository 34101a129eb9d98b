"""Text embeddings for heads, from the same open_clip model that built the cache.

Heads embed prompts at fit time and store the embeddings with their weights, so scoring
never needs the text tower.
"""

from __future__ import annotations

import numpy as np

from vadpipe.errors import VadpipeError


def text_encoder_for(cache, encoder_key: str):
    """The :class:`~vadpipe.featurize.encoders.ClipEncoder` recorded in the cache recipe (CPU, fp32)."""
    from vadpipe.featurize.encoders import load_clip, spec_from_recipe

    recipe = cache.recipe(encoder_key)
    if recipe.get("imported") and not recipe.get("model"):
        raise VadpipeError(
            f"encoder {encoder_key!r} in {cache.path} was imported without an open_clip model; "
            "text prompts need one"
        )
    return load_clip(spec_from_recipe(recipe), device="cpu", precision="fp32")


def embed_prompts(encoder, prompts: list[str], templates: tuple[str, ...]) -> np.ndarray:
    """Prompt ensembling: each prompt through every template, mean of the normalised
    embeddings, renormalised. Returns ``float32[len(prompts), D]``."""
    if not templates:
        templates = ("{}",)
    for t in templates:
        if "{}" not in t:
            raise VadpipeError(f"prompt template {t!r} has no '{{}}' placeholder")
    texts = [t.format(p) for p in prompts for t in templates]
    emb = encoder.encode_text(texts).reshape(len(prompts), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True).clip(1e-12)
