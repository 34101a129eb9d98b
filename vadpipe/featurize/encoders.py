"""open_clip image/text encoders named ``MODEL:TAG``.

* ``ViT-B-16:openai`` -- open_clip model name and pretrained tag (downloaded by open_clip
  on first use, or found in its cache);
* ``ViT-B-16:/path/to/checkpoint.pt`` -- a local checkpoint file (machines without
  internet); the cache key becomes ``ViT-B-16:file-<sha256[:12]>`` so two different files
  never share a key, and the recipe records the path and full hash;
* ``MODEL:random`` -- random weights from a fixed seed (benchmarks: the cost of a model
  does not depend on its weights);
* ``vadpipe-tiny`` -- a tiny open_clip config shipped with vadpipe (embed 64, 2 layers,
  64 px), random weights from a fixed seed: the offline encoder of tests and CI. It goes
  through exactly the same ``open_clip.create_model_and_transforms`` path as a real model.

Random weights are deterministic: the model is built under ``torch.manual_seed(0)`` in a
forked RNG, so the image tower used at featurize time and the text tower used by a head
later are the same network.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError

TINY = "vadpipe-tiny"
RANDOM_TAG = "random"
RANDOM_SEED = 0
PRECISIONS = ("fp32", "bf16", "fp16")
_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"


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


def register_tiny_config() -> None:
    """Make ``vadpipe-tiny`` (and any other JSON under model_configs/) known to open_clip."""
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


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
    looks_like_path = os.sep in tag or tag.startswith(".") or Path(tag).suffix in (
        ".pt", ".pth", ".bin", ".safetensors",
    )
    if looks_like_path:
        path = Path(tag).expanduser().resolve()
        if not path.is_file():
            raise VadpipeError(f"encoder {spec!r}: checkpoint file {path} not found")
        sha = _sha256(path)
        return EncoderSpec(model, f"file-{sha[:12]}", str(path), sha)
    return EncoderSpec(model, tag)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Preprocessing:
    """open_clip's image preprocessing, applied to uint8 tensors instead of PIL images.

    Same steps as ``open_clip.image_transform(..., is_train=False)``: resize (shortest side
    to ``size`` with bicubic + antialias, as PIL; or ``squash`` to size x size), centre crop,
    scale to [0, 1], normalise by mean/std. The resize keeps uint8 (PIL's own fixed-point
    algorithm, see :meth:`_resize`) so a batch of frames waiting for the model costs
    3 x size^2 bytes each.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self):  # one error when the model loads, not one failed video per video
        if self.interpolation not in ("bicubic", "bilinear"):
            raise VadpipeError(f"interpolation {self.interpolation!r} is not supported (bicubic, bilinear)")
        if self.resize_mode not in ("shortest", "squash"):
            raise VadpipeError(f"resize mode {self.resize_mode!r} is not supported (shortest, squash)")

    def as_dict(self) -> dict:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "implementation": "vadpipe uint8 tensor resize (torch antialias, PIL fixed point) + center crop",
        }

    def resize_crop(self, rgb: np.ndarray):
        """``uint8[H, W, 3]`` -> ``uint8 tensor (3, size, size)``."""
        import torch

        return self.resize_crop_batch(torch.from_numpy(np.array(rgb, order="C"))[None])[0]  # a writable copy

    def resize_crop_batch(self, frames):
        """``uint8 tensor (B, H, W, 3)`` (frames of one size) -> ``uint8 (B, 3, size, size)``."""
        h, w = frames.shape[1:3]
        s = self.size
        if self.resize_mode == "squash":
            return self._resize(frames, s, s).contiguous()
        # torchvision/PIL rule: the short side becomes s, the long side int(s * long / short)
        if h <= w:
            new_h, new_w = s, int(s * w / h)
        else:
            new_h, new_w = int(s * h / w), s
        img = self._resize(frames, new_h, new_w) if (new_h, new_w) != (h, w) else frames.permute(0, 3, 1, 2)
        top = int(round((new_h - s) / 2.0))
        left = int(round((new_w - s) / 2.0))
        return img[:, :, top : top + s, left : left + s].contiguous()

    def _resize(self, frames, new_h: int, new_w: int):
        """``(B, H, W, 3)`` uint8 CPU tensor -> ``(B, 3, new_h, new_w)`` uint8, antialiased like PIL.

        torch's native uint8 kernel on the channels-last view: PIL's fixed-point algorithm
        (mean |difference| to PIL ~0.004 grey levels on landscape frames, ~0.13 otherwise) and
        5-10x faster than torchvision's tensor resize, which converts to float (mean
        |difference| ~0.15). Frames are resized in the decode workers, on CPU.
        """
        import torch.nn.functional as F

        img = frames.permute(0, 3, 1, 2)  # a channels-last view: what the uint8 kernel wants
        return F.interpolate(img, size=(new_h, new_w), mode=self.interpolation, antialias=True)

    def normalize(self, batch, dtype, device):
        """``uint8 (B, 3, s, s)`` -> normalised float tensor on ``device``."""
        import torch

        x = batch.to(device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


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
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

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
            "preprocessing": self.preprocessing.as_dict(),
            "open_clip_version": open_clip.__version__,
            "torch_version": torch.__version__,
        }

    def encode_images(self, batch) -> np.ndarray:
        """``uint8 (B, 3, s, s)`` -> L2-normalised ``float16[B, D]``."""
        import torch

        with torch.inference_mode():
            x = self.preprocessing.normalize(batch, self.dtype, self.device)
            feats = self.model.encode_image(x).float()  # (B D)
            feats = torch.nn.functional.normalize(feats, dim=-1)
        return feats.cpu().numpy().astype(np.float16)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Strings -> L2-normalised ``float32[N, D]`` (the model's own tokenizer), in batches
        so thousands of captions never go through the text tower at once."""
        import torch

        texts = list(texts)
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
                feats = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
                out.append(feats.cpu().numpy().astype(np.float32))
        return np.concatenate(out)


def load_clip(spec: str | EncoderSpec, device: str = "cpu", precision: str = "fp32") -> ClipEncoder:
    """Build the open_clip model of ``spec`` on ``device`` in ``precision`` (eval mode)."""
    return _load_clip_cached(spec if isinstance(spec, EncoderSpec) else parse_encoder(spec), device, precision)


@lru_cache(maxsize=4)
def _load_clip_cached(spec: EncoderSpec, device: str, precision: str) -> ClipEncoder:
    import open_clip
    import torch

    if precision not in PRECISIONS:
        raise VadpipeError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
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
            model, _, _ = open_clip.create_model_and_transforms(spec.model, pretrained=spec.pretrained)
        except RuntimeError as exc:
            hint = ""
            if "download" in str(exc).lower():
                hint = (" -- offline? pass a local checkpoint (MODEL:/path/to/file) or, for a check of the"
                        " pipeline only, vadpipe-tiny")
            raise VadpipeError(f"could not load encoder {spec.key}{hint}: {' '.join(str(exc).split())[:200]}") from None
        finally:
            root_logger.setLevel(level)
    model.eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = model.to(device=device, dtype=dtype)
    cfg = open_clip.get_model_preprocess_cfg(model)
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
    return ClipEncoder(spec, model, tokenizer, pre, device, precision, dim)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when present, else cpu; an unavailable cuda is a clear error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VadpipeError(f"device {device!r} requested but CUDA is not available here")
    return device


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
    sha = _sha256(Path(path))
    if sha != recipe.get("checkpoint_sha256"):
        raise VadpipeError(f"checkpoint {path} changed since the cache was built (sha256 differs)")
    return EncoderSpec(model, tag, path, sha)


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: fp16 on CUDA; bf16 on a CPU with native bf16 (AVX512-BF16 / AMX), where it
    runs ~4x faster than fp32; fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if _cpu_has_bf16() else "fp32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
