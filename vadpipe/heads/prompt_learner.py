"""CoOp prompt learning (Zhou et al. 2022) on a frozen open_clip text tower.

A prompt for class c is ``[SOS] ctx_1 ... ctx_n <class text tokens> . [EOT]``: the ``n``
context vectors are learned (class-specific by default, or one set shared by all classes),
initialised N(0, 0.02); the class text's token embeddings are fixed buffers. The prompt runs
through the text transformer of the same open_clip model that embedded the frames (batch
first, causal ``attn_mask`` passed explicitly), then ``ln_final``, the feature at the
end-of-text token (the tower's own pooling: ``argmax`` of the token ids for CLIP; CoCa's
appended CLS token) and the final text projection. Only the context vectors learn, plus the text projection when
``train_projection`` (AnomalyCLIP's best row, Table 7).

The tower is deep-copied and frozen, so the shared encoder object that other code holds is
never modified and no gradient is computed for its weights. A causal tower that pools the
end-of-text token (CLIP's) never lets the padding after it reach the pooled feature, so the
prompts are cut after the last end-of-text token (``trim``; about half the cost of a step at
77 tokens, the same features to float rounding), and on open_clip's plain blocks packed
(:func:`vadpipe.encoders.text_tower.packed_forward`): each prompt through its own positions
only, a shared context (with SOS) once, the last block at the pooled row only -- Gao's 400
prompts 13.3 s -> 4.3 s a step on 2 cores, features and gradients the padded batch's to
float rounding (``packed=False`` on an instance runs the padded batch). Heads store the resulting text
features (not the context), so scoring needs no text model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vadpipe.encoders.text_tower import packable, packed_forward
from vadpipe.encoders.text_tower import pooled_positions as _pooled_positions
from vadpipe.encoders.text_tower import text_tower as _text_tower
from vadpipe.errors import VadpipeError

CTX_PLACEHOLDER = "X"


class PromptLearner(nn.Module):
    """Learned prompts -> text features ``(n_cls, embed_dim)`` (not normalised).

    ``texts`` are the class texts (a bare class name or a user description per class);
    ``tokenizer`` is the model's own open_clip tokenizer.
    """

    def __init__(
        self,
        clip_model,
        tokenizer,
        texts: list[str],
        n_ctx: int = 8,
        shared_context: bool = False,
        init_std: float = 0.02,
        train_projection: bool = False,
        trim: bool = True,
    ):
        super().__init__()
        if not texts:
            raise VadpipeError("prompt learner: no class texts given")
        if n_ctx < 1:
            raise VadpipeError(f"prompt learner: n_ctx must be >= 1, got {n_ctx}")
        parts = _text_tower(clip_model)
        from vadpipe.heads.text import warn_if_truncated

        placeholder = " ".join([CTX_PLACEHOLDER] * n_ctx)
        prompts = [f"{placeholder} {t}." for t in texts]
        warn_if_truncated(tokenizer, prompts, f"prompt with {n_ctx} learned context vectors")
        tokens = tokenizer(prompts)  # (C L)
        with torch.no_grad():
            emb = parts["token_embedding"](tokens).float()  # (C L W)
        end = _pooled_positions(tokens, parts)
        if trim and end is not None:  # padding after the last end-of-text token: never pooled, never attended
            keep = max(int(end.max()) + 1, 1 + n_ctx + 1)
            tokens, emb = tokens[:, :keep], emb[:, :keep]
        width = emb.shape[-1]
        self.n_cls, self.n_ctx, self.shared_context = len(texts), n_ctx, shared_context
        self.pool_type, self.eos_id = parts["pool_type"], parts["eos_id"]
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)  # SOS, (C 1 W)
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx :].clone(), persistent=False)  # class, '.', EOT
        ctx = torch.empty((n_ctx, width) if shared_context else (self.n_cls, n_ctx, width))
        nn.init.normal_(ctx, std=init_std)
        self.ctx = nn.Parameter(ctx)  # (C n W) or (n W)

        self.transformer = copy.deepcopy(parts["transformer"]).float().requires_grad_(False)
        self.ln_final = copy.deepcopy(parts["ln_final"]).float().requires_grad_(False)
        pos = parts["positional_embedding"].detach().float().clone()
        self.register_buffer("positional_embedding", pos, persistent=False)  # (L W)
        cls_emb = parts["cls_emb"]
        cls_emb = None if cls_emb is None else cls_emb.detach().float().clone()
        self.register_buffer("cls_emb", cls_emb, persistent=False)  # (W) or None
        seq_len = tokens.shape[1] + (cls_emb is not None)
        mask = parts["attn_mask"]
        if mask is not None:
            mask = mask.detach()[:seq_len, :seq_len].clone()  # (L L)
        if parts["additive_mask"] is not None:  # depends on the token ids only: build it once
            with torch.no_grad():
                extra = parts["additive_mask"](tokens, seq_len, torch.float32)  # (C*heads L L)
            mask = extra if mask is None else mask.unsqueeze(0) + extra
        self.register_buffer("attn_mask", mask, persistent=False)
        proj = parts["text_projection"]
        if proj is None:
            raise VadpipeError("prompt learner: this text tower has no text projection")
        if isinstance(proj, nn.Linear):
            weight, bias = proj.weight.detach().t(), proj.bias
        else:
            weight, bias = proj.detach(), None
        self.text_projection = nn.Parameter(weight.float().clone(), requires_grad=train_projection)  # (W E)
        self.register_buffer(
            "text_projection_bias", None if bias is None else bias.detach().float().clone(), persistent=False
        )
        self.transformer.eval()
        self.ln_final.eval()
        # packed: each prompt through its own positions only, a shared context once (text_tower.packed_forward)
        self.packed = bool(trim and end is not None and cls_emb is None and parts["additive_mask"] is None
                           and packable(self.transformer))
        if self.packed:  # each prompt's own rows: after the shared SOS + context, or whole; up to its EOT
            self.register_buffer("lengths", end - n_ctx if shared_context else end + 1, persistent=False)  # (C)

    def train(self, mode: bool = True) -> "PromptLearner":
        super().train(mode)
        self.transformer.eval()  # the frozen tower never runs in training mode (dropout etc.)
        self.ln_final.eval()
        return self

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The text features of every class ``(C E)``, or of the classes ``rows`` only ``(R E)``
        (each prompt is its own sequence, so a subset is the same rows of the whole)."""
        from open_clip.transformer import text_global_pool

        if self.packed:
            return self._forward_packed(rows)
        pick = slice(None) if rows is None else rows
        ctx, tokens, mask = self.ctx, self.tokens[pick], self.attn_mask
        n = len(tokens)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(n, -1, -1)  # (C n W)
        else:
            ctx = ctx[pick]
        if rows is not None and mask is not None and mask.dim() == 3:  # per prompt (C*heads L L): its own
            mask = mask.view(self.n_cls, -1, *mask.shape[1:])[rows].flatten(0, 1)
        x = torch.cat([self.token_prefix[pick], ctx, self.token_suffix[pick]], dim=1)  # (C L W)
        if self.cls_emb is not None:
            x = torch.cat([x, self.cls_emb.view(1, 1, -1).expand(n, 1, -1)], dim=1)  # (C L+1 W)
        x = x + self.positional_embedding[: x.shape[1]]  # (C L W)
        x = self.transformer(x, attn_mask=mask)  # (C L W), batch first
        if self.cls_emb is not None:  # CoCa: the appended CLS token, normalised after pooling
            x = self.ln_final(x[:, -1])  # (C W)
        else:
            x = self.ln_final(x)  # (C L W)
            x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)  # (C W)
        return self._project(x)

    def _forward_packed(self, rows: torch.Tensor | None) -> torch.Tensor:
        pick = slice(None) if rows is None else rows
        pos, start, suffix = self.positional_embedding, 1 + self.n_ctx, self.token_suffix[pick]
        if self.shared_context:  # SOS + the one context run once, then each prompt's own tokens
            shared = torch.cat([self.token_prefix[0], self.ctx]) + pos[:start]  # (1+n W)
            own = suffix + pos[start : self.tokens.shape[1]]  # (C S W)
        else:  # each prompt whole
            own = torch.cat([self.token_prefix[pick], self.ctx[pick], suffix], dim=1) + pos[: self.tokens.shape[1]]
            shared = own[0, :0]  # (0 W)
        x = packed_forward(self.transformer, shared, own, self.lengths[pick])  # (C W): the end-of-text rows
        return self._project(self.ln_final(x))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.text_projection  # (C E)
        if self.text_projection_bias is not None:
            x = x + self.text_projection_bias
        return x
