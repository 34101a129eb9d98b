"""The parts of an open_clip text tower, and its forward cut after the end-of-text token.

A causal tower that pools the end-of-text token (CLIP's: ``argmax`` of the token ids, or the
``eos`` id) never lets the padding after that token reach the pooled feature, so a batch of
texts can run through only the positions up to its last end-of-text token: the same features
to float rounding, at a fraction of the 77 positions' cost (a Kinetics class name is ~6
tokens). :func:`text_tower` and :func:`pooled_positions` are shared with CoOp's prompt learner
(:mod:`vadpipe.heads.prompt_learner`); :func:`encode_tokens` is the cut forward.
"""

from __future__ import annotations

from vadpipe.errors import VadpipeError


def text_tower(clip_model) -> dict:
    """The parts of an open_clip text tower: a ``CLIP``'s, or the ``TextTransformer`` of a
    ``CustomTextCLIP`` or ``CoCa`` (whose CLS / padding mask open_clip builds from token ids)."""
    tower = getattr(clip_model, "text", None)
    if tower is not None and hasattr(tower, "token_embedding"):
        pool_type, eos_id = tower.pool_type, getattr(tower, "eos_id", None)
        cls_emb = getattr(tower, "cls_emb", None)
        extra_mask = None
        if cls_emb is not None or getattr(tower, "use_pad_mask", False):
            extra_mask = getattr(tower, "_build_additive_mask", None)
            if extra_mask is None:
                raise VadpipeError(
                    "CoOp prompt learning on a CoCa-style text tower needs open_clip's "
                    "TextTransformer._build_additive_mask, which this open_clip version lacks"
                )
    elif hasattr(clip_model, "token_embedding"):
        tower = clip_model
        pool_type, eos_id = clip_model.text_pool_type, getattr(clip_model, "text_eos_id", None)
        cls_emb = extra_mask = None
    else:
        raise VadpipeError(
            f"CoOp prompt learning needs an open_clip text transformer; {type(clip_model).__name__} "
            "has none (a Hugging Face text tower?)"
        )
    return {
        "token_embedding": tower.token_embedding,
        "positional_embedding": tower.positional_embedding,
        "transformer": tower.transformer,
        "ln_final": tower.ln_final,
        "text_projection": tower.text_projection,
        "attn_mask": getattr(tower, "attn_mask", None),
        "pool_type": pool_type,
        "eos_id": eos_id,
        "cls_emb": cls_emb,  # CoCa: a learned token appended after the text, pooled last
        "additive_mask": extra_mask,  # padding / CLS mask builder (token ids -> mask)
    }


def pooled_positions(tokens, parts: dict):
    """Where a causal tower that pools one token reads each prompt (``None``: the tower pools
    otherwise -- CoCa's appended CLS token, no causal mask -- and trimming would change it)."""
    if parts["cls_emb"] is not None or parts["attn_mask"] is None:
        return None
    if parts["pool_type"] == "argmax":
        return tokens.argmax(dim=-1)
    if parts["pool_type"] == "eos" and parts["eos_id"] is not None:
        return (tokens == parts["eos_id"]).int().argmax(dim=-1)
    return None


def encode_tokens(clip_model, tokens):
    """The text features of ``tokens`` ``(B L)`` through the positions up to the batch's last
    end-of-text token: ``(B E)``, or None where the tower pools otherwise (CoCa's CLS token, a
    padding mask, a Hugging Face tower), where the caller runs the model's own ``encode_text``."""
    import torch
    from open_clip.transformer import text_global_pool

    try:
        parts = text_tower(clip_model)
    except VadpipeError:
        return None
    end = pooled_positions(tokens, parts)
    if end is None or parts["additive_mask"] is not None:
        return None
    keep = int(end.max()) + 1
    tokens = tokens[:, :keep]
    cast = parts["transformer"].get_cast_dtype()
    x = parts["token_embedding"](tokens).to(cast) + parts["positional_embedding"][:keep].to(cast)  # (B L W)
    x = parts["transformer"](x, attn_mask=parts["attn_mask"][:keep, :keep])  # batch first
    x = text_global_pool(parts["ln_final"](x), tokens, parts["pool_type"], eos_token_id=parts["eos_id"])  # (B W)
    proj = parts["text_projection"]
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
