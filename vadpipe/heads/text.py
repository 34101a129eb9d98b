"""Text embeddings for heads, from the same open_clip model that built the cache.

Heads embed prompts at fit time and store the embeddings with their weights, so scoring
never needs the text tower.
"""

from __future__ import annotations

import logging

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.training import l2_normalize
from vadpipe.texts import check_template


log = logging.getLogger("vadpipe")


def warn_if_truncated(tokenizer, texts, where: str) -> list[str]:
    """Warn (one line each) about the texts longer than the tokenizer's context (77 tokens for
    CLIP): the text tower never sees their end. Returns them; tokenizers that cannot count
    (no ``encode``) are not checked."""
    encode, length = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
    if encode is None or not length:
        return []
    cut = []
    for text in texts:
        n = len(encode(text)) + 2  # start and end tokens
        if n > length:
            cut.append(text)
            log.warning("%s: %d tokens in %r; the text tower reads %d, the rest is cut", where, n,
                        text if len(text) < 80 else text[:77] + "...", length)
    return cut


def text_encoder_for(cache, encoder_key: str):
    """The :class:`~vadpipe.encoders.ClipEncoder` recorded in the cache recipe (CPU, fp32), built
    for its text tower only (its image tower let go: ``load_clip(image=False)``)."""
    from vadpipe.encoders import load_clip, spec_from_recipe

    recipe = cache.recipe(encoder_key)
    if recipe.get("imported") and not recipe.get("model"):
        raise VadpipeError(
            f"encoder {encoder_key!r} in {cache.path} was imported without an open_clip model; "
            "text prompts need one"
        )
    # the activation the cache's image features were made with (vadpipe < 0.4 built GELU for all)
    return load_clip(spec_from_recipe(recipe), device="cpu", precision="fp32", quick_gelu=recipe.get("quick_gelu", False),
                     image=False)


def embed_prompts(encoder, prompts: list[str], templates: tuple[str, ...]) -> np.ndarray:
    """Prompt ensembling: each prompt through every template, mean of the normalised
    embeddings, renormalised. Returns ``float32[len(prompts), D]``."""
    templates = tuple(templates) or ("{}",)
    for t in templates:
        check_template(t)
    texts = [t.format(p) for p in prompts for t in templates]
    warn_if_truncated(encoder.tokenizer, texts, "text prompt")
    emb = encoder.encode_text(texts).reshape(len(prompts), len(templates), -1).mean(axis=1)
    return l2_normalize(emb)


def embed_groups(encoder, groups, templates) -> np.ndarray:
    """One ensembled embedding per group of prompts (all prompts x templates): ``float32[G, D]``."""
    flat = [p for g in groups for p in g]
    emb = embed_prompts(encoder, flat, tuple(templates))  # (P D)
    starts = np.cumsum([0] + [len(g) for g in groups])
    out = np.stack([emb[a:b].mean(axis=0) for a, b in zip(starts[:-1], starts[1:])])  # (G D)
    return l2_normalize(out).astype(np.float32)
