"""open_clip image/text encoders, loaded from an :class:`~vadpipe.encoders.spec.EncoderSpec`.

``load_clip("ViT-B-16:openai")`` builds the model through open_clip's own factory
(``create_model_and_transforms``), the tiny configs shipped with vadpipe included (they
take exactly the same path as a real model). Random weights are deterministic: the model is
built under ``torch.manual_seed(0)`` in a forked RNG, so the image tower used at featurize
time and the text tower a head uses later are the same network. torch and open_clip are
imported when a model is loaded, not when this module is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vadpipe.encoders.device import check_precision, resolve_device, torch_dtype
from vadpipe.encoders.preprocessing import Preprocessing
from vadpipe.encoders.spec import CONFIG_DIR, RANDOM_SEED, RANDOM_TAG, TINY, EncoderSpec, parse_encoder
from vadpipe.errors import VadpipeError, one_line


def register_tiny_config() -> None:
    """Make ``vadpipe-tiny`` (and any other JSON under model_configs/) known to open_clip."""
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


@dataclass
class ClipEncoder:
    """A loaded open_clip model with vadpipe's preprocessing and its recipe."""

    spec: EncoderSpec
    model: object
    tokenizer: object
    preprocessing: Preprocessing
    device: str
    precision: str
    dim: int
    quick_gelu: bool = False  # the text and image towers' activation (OpenAI's weights: QuickGELU)
    image: bool = True  # False: built for its text tower only, the image tower let go (load_clip(image=False))

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def dtype(self):
        return torch_dtype(self.precision)

    def recipe(self) -> dict:
        """What a cache records about this encoder: enough to rebuild it."""
        import open_clip
        import torch

        return {
            "encoder_key": self.key,
            "model": self.spec.model,
            "pretrained": self.spec.tag,
            "checkpoint_path": self.spec.checkpoint,
            "checkpoint_sha256": self.spec.checkpoint_sha256,
            "random_seed": RANDOM_SEED if self.spec.tag == RANDOM_TAG else None,
            "dim": self.dim,
            "quick_gelu": self.quick_gelu,
            "preprocessing": self.preprocessing.as_dict(),
            "open_clip_version": open_clip.__version__,
            "torch_version": torch.__version__,
        }

    def encode_images(self, batch) -> np.ndarray:
        """``uint8 (B, 3, s, s)`` -> the model's image features as it outputs them, ``float16[B, D]``
        (not L2-normalised: methods that need unit vectors normalise, others keep the norm)."""
        import torch

        if not self.image:
            raise VadpipeError(f"encoder {self.key} was loaded for its text tower only (load_clip(image=False))")
        with torch.inference_mode():
            x = self.preprocessing.normalize(batch, self.dtype, self.device)
            feats = self.model.encode_image(x).float()  # (B D)
        return feats.cpu().numpy().astype(np.float16)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Strings -> L2-normalised ``float32[N, D]`` (the model's own tokenizer), in batches
        so thousands of captions never go through the text tower at once; a causal tower runs
        only up to each batch's last end-of-text token (:mod:`vadpipe.encoders.text_tower`)."""
        import torch

        from vadpipe.encoders.text_tower import encode_tokens

        texts = list(texts)
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
                feats = encode_tokens(self.model, tokens)  # cut after the end-of-text token
                if feats is None:  # a tower that pools otherwise: all its positions
                    feats = self.model.encode_text(tokens)
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
                out.append(feats.cpu().numpy().astype(np.float32))
        return np.concatenate(out)


def load_clip(spec: str | EncoderSpec, device: str = "cpu", precision: str = "fp32",
              quick_gelu: bool | None = None, image: bool = True) -> ClipEncoder:
    """Build the open_clip model of ``spec`` on ``device`` in ``precision`` (eval mode).

    ``image=False``: for text only (the heads' prompts), not cached: a head lets the model go
    once it has its text features. The model is built and loaded whole,
    through open_clip's factory as always (every checkpoint format, the same seeded random
    weights), then its image tower is let go before the cast and the move to ``device``: a
    head holds the text tower only (ViT-B-32: 242 of 577 MiB in fp32; ViT-L-14: 472 of
    1,631). The build itself still peaks at the whole model (plus, for a checkpoint, its state
    dict while open_clip loads it): reading only the text weights would mean restating
    open_clip's loaders and conversions, which vadpipe does not do."""
    spec = spec if isinstance(spec, EncoderSpec) else parse_encoder(spec)
    quick_gelu = quick_gelu_for(spec) if quick_gelu is None else quick_gelu
    if not image:  # built anew, and let go with the caller's last reference (not held by the cache)
        return _build_clip(spec, device, precision, quick_gelu, image=False)
    return _load_clip_cached(spec, device, precision, quick_gelu)


def _build_clip(spec: EncoderSpec, device: str, precision: str, quick_gelu: bool,
                image: bool = True) -> ClipEncoder:
    import open_clip
    import torch

    check_precision(precision)
    device = resolve_device(device)
    register_tiny_config()
    if spec.model not in open_clip.list_models():
        raise VadpipeError(
            f"unknown open_clip model {spec.model!r} (e.g. ViT-B-16, ViT-B-32, coca_ViT-L-14, {TINY})"
        )
    if spec.tag.startswith("file-") and spec.checkpoint is None:
        raise VadpipeError(
            f"encoder {spec.key!r} was loaded from a checkpoint file: pass MODEL:/path/to/file"
        )
    if spec.tag not in (RANDOM_TAG,) and spec.checkpoint is None:
        known = open_clip.list_pretrained_tags_by_model(spec.model)
        if spec.tag not in known:
            raise VadpipeError(
                f"unknown weights tag {spec.tag!r} for {spec.model} (known: {', '.join(known) or 'none'}; "
                f"or a checkpoint path, or 'random')"
            )
    root_logger = logging.getLogger()
    level = root_logger.level
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            if spec.tag == RANDOM_TAG:  # open_clip warns "no pretrained weights": that is the point
                root_logger.setLevel(logging.ERROR)
            model, _, _ = open_clip.create_model_and_transforms(spec.model, pretrained=spec.pretrained,
                                                                force_quick_gelu=quick_gelu)
        except RuntimeError as exc:
            hint = ""
            if "download" in str(exc).lower():
                hint = (" -- offline? pass a local checkpoint (MODEL:/path/to/file) or, for a check of the"
                        " pipeline only, vadpipe-tiny")
            raise VadpipeError(f"could not load encoder {spec.key}{hint}: {one_line(exc, 200)}") from None
        finally:
            root_logger.setLevel(level)
    model.eval()
    cfg = open_clip.get_model_preprocess_cfg(model)
    if not image:
        model.visual = None  # CLIP, CustomTextCLIP and CoCa encode text without it
    model = model.to(device=device, dtype=torch_dtype(precision))
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pre = Preprocessing(
        size=size,
        mean=tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
    )
    tokenizer = open_clip.get_tokenizer(spec.model)
    dim = int(open_clip.get_model_config(spec.model)["embed_dim"])
    quick = quick_gelu or bool(open_clip.get_model_config(spec.model).get("quick_gelu", False))
    return ClipEncoder(spec, model, tokenizer, pre, device, precision, dim, quick, image)


_load_clip_cached = lru_cache(maxsize=4)(_build_clip)  # featurize and the demo reuse a loaded image encoder


def quick_gelu_for(spec: EncoderSpec) -> bool:
    """Whether ``spec``'s weights were trained with QuickGELU (OpenAI's CLIP: ``openai`` tags,
    per open_clip's pretrained config). open_clip 3 builds its configs with GELU and only warns
    when a tag says otherwise; vadpipe builds the activation the weights were trained with. A
    local checkpoint or random weights follow the model config (``ViT-B-16-quickgelu`` names
    set it)."""
    import open_clip

    if spec.tag == RANDOM_TAG or spec.checkpoint is not None:
        return False
    return bool((open_clip.get_pretrained_cfg(spec.model, spec.tag) or {}).get("quick_gelu", False))
