"""open_clip's image preprocessing on uint8 tensors, as the decode workers run it.

Same steps as ``open_clip.image_transform(..., is_train=False)``: resize (shortest side to
``size`` with bicubic + antialias, as PIL; or ``squash`` to size x size), centre crop, scale
to [0, 1], normalise by mean/std. Resize and crop run on CPU in the decode workers, on
batches of uint8 frames; normalisation runs on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

from vadpipe.errors import VadpipeError

CROPS = ("center", "full", "pad")


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
    crop: str = "center"  # center (open_clip's), full (the whole frame squashed), pad (letterboxed)

    def __post_init__(self):  # one error when the model loads, not one failed video per video
        if self.interpolation not in ("bicubic", "bilinear"):
            raise VadpipeError(f"interpolation {self.interpolation!r} is not supported (bicubic, bilinear)")
        if self.resize_mode not in ("shortest", "squash"):
            raise VadpipeError(f"resize mode {self.resize_mode!r} is not supported (shortest, squash)")
        if self.crop not in CROPS:
            raise VadpipeError(f"crop {self.crop!r} is not supported ({', '.join(CROPS)})")

    def as_dict(self) -> dict:
        """The recipe's ``preprocessing``; ``crop`` appears only when it is not ``center`` (groups
        written before it existed are centre crops and compare equal)."""
        out = {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "implementation": "vadpipe uint8 tensor resize (torch antialias, PIL fixed point) + center crop",
        }
        if self.crop != "center":
            out["crop"] = self.crop
        return out

    def resize_crop_batch(self, frames):
        """``uint8 tensor (B, H, W, 3)`` (frames of one size) -> ``uint8 (B, 3, size, size)``.

        ``crop``: ``center`` -- open_clip's (short side to ``size``, centre square: a 16:9 frame
        loses 44% of its width); ``full`` -- the whole frame squashed to a square; ``pad`` -- the
        whole frame, long side to ``size``, letterboxed with black (open_clip's ``longest``)."""
        h, w = frames.shape[1:3]
        s = self.size
        if self.resize_mode == "squash" or self.crop == "full":
            return self._resize(frames, s, s).contiguous()
        if self.crop == "pad":
            return self._letterbox(frames)
        # torchvision/PIL rule: the short side becomes s, the long side int(s * long / short)
        if h <= w:
            new_h, new_w = s, int(s * w / h)
        else:
            new_h, new_w = int(s * h / w), s
        img = self._resize(frames, new_h, new_w) if (new_h, new_w) != (h, w) else frames.permute(0, 3, 1, 2)
        top = int(round((new_h - s) / 2.0))
        left = int(round((new_w - s) / 2.0))
        return img[:, :, top : top + s, left : left + s].contiguous()

    def resize_square(self, frames):
        """Square ``uint8 (B, n, n, 3)`` -> ``uint8 (B, 3, size, size)`` (object crops)."""
        n = frames.shape[1]
        if n == self.size:
            return frames.permute(0, 3, 1, 2).contiguous()
        return self._resize(frames, self.size, self.size).contiguous()

    def _letterbox(self, frames):
        import torch

        h, w = frames.shape[1:3]
        s = self.size
        new_h, new_w = (s, max(1, round(w * s / h))) if h >= w else (max(1, round(h * s / w)), s)
        img = self._resize(frames, new_h, new_w) if (new_h, new_w) != (h, w) else frames.permute(0, 3, 1, 2)
        out = torch.zeros((len(frames), 3, s, s), dtype=torch.uint8)
        top, left = (s - new_h) // 2, (s - new_w) // 2
        out[:, :, top : top + new_h, left : left + new_w] = img
        return out

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
