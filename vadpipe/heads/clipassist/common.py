"""What the two heads of Dong 2024 share: the weak labels, the descriptions, the Adam loop.

Both heads train from the video-level labels (``normal`` or an anomaly class) of the
manifest's ``train`` videos, find each class's description(s) the same way
(:func:`vadpipe.heads.prompts.class_texts`: ``class_descriptions``, then the description
file, then ``class_sets``, then the class name), subsample long training videos and run
Adam over shuffled video batches. Choices shared by both:

* top-k: k = T // 16 + 1 frames of a T-frame video (VadCLIP's rule), unless ``topk``;
* training videos longer than ``max_frames`` (256) are uniformly subsampled;
* with no anomalous training videos the head still trains (normal videos only), and with
  no anomaly class anywhere in the manifest one class ``anomaly`` is used;
* training is seeded (``seed``) and deterministic on CPU. Where it runs is the run-time
  ``device`` (``auto``: the GPU when there is one, as for every head; vadpipe 0.2 trained this
  head on the CPU unless told otherwise -- ``--device cpu`` for that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, Scores
from vadpipe.heads.prompts import DEFAULT_CLASS_SETS, class_texts, load_prompt_set
from vadpipe.heads.training import load_module_state, module_state, seeded

log = logging.getLogger(__name__)


@dataclass
class DescriptionConfig:
    """Hyper-parameters both heads have (paper defaults: Adam, batch 64, lr 1e-5)."""

    descriptions: str | None = None  # prompt file; None: the head's own default set
    class_descriptions: dict[str, str | list[str]] = field(default_factory=dict)  # class -> description(s)
    class_sets: list[str] = field(default_factory=lambda: ["dong-categories", *DEFAULT_CLASS_SETS])
    topk: int | None = None  # frames per video in the top-k mean / MIL; None: T // 16 + 1
    max_frames: int = 256
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        if not self.lr > 0:
            raise VadpipeError(f"clipassist: lr must be > 0, got {self.lr}")
        for name in ("max_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise VadpipeError(f"clipassist: {name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise VadpipeError(f"clipassist: epochs must be >= 0, got {self.epochs}")
        if self.topk is not None and self.topk < 1:
            raise VadpipeError(f"clipassist: topk must be >= 1 or null, got {self.topk}")


class DescriptionHead(Head):
    """Base of ``clipassist`` and ``clipassist-frame``: reads the weakly labelled training
    set and the descriptions, then calls ``_fit_descriptions`` in a seeded RNG."""

    mode = ""  # "video" or "frame": what 0.2's single clipassist head called this head
    default_descriptions = ""

    def __init__(self, encoder: str | None = None, **params):
        mode = params.pop("mode", self.mode)
        if mode != self.mode:  # 0.2 had one head with a mode switch
            raise VadpipeError(
                f"clipassist: mode {mode!r}: Dong's two methods are two heads now, 'clipassist' (video mode) "
                f"and 'clipassist-frame' (frame mode)"
            )
        super().__init__(encoder, **params)

    def _fit(self, cache, manifest) -> None:
        from vadpipe.heads.text import text_encoder_for

        cfg = self.config
        data = self.training_set(cache, manifest)
        self.class_names_ = tuple(manifest.anomaly_classes) or ("anomaly",)
        if all(e.is_normal for e in data.entries):
            log.warning("clipassist: no anomalous training videos; training on normal videos only")
        index = {c: i + 1 for i, c in enumerate(self.class_names_)}
        labels = torch.tensor([0 if e.is_normal else index[e.label] for e in data.entries])  # 0 = normal
        videos = [subsample(v.emb, cfg.max_frames) for v in data.iter_videos()]
        encoder = text_encoder_for(cache, self.encoder)
        pset = load_prompt_set(cfg.descriptions or self.default_for(manifest))
        per_class = class_texts(self.class_names_, cfg.class_descriptions, pset, cfg.class_sets)
        with seeded(cfg.seed):
            generator = torch.Generator().manual_seed(cfg.seed)
            self._fit_descriptions(encoder, pset, per_class, videos, labels, self._device(), generator)

    def default_for(self, manifest) -> str:
        """The description file when none is given: ShanghaiTech's own for a ShanghaiTech
        manifest (Sec. 3.1.2: bicycles, vehicles and running are anomalies there), else the head's."""
        return "dong-shanghaitech" if (manifest.meta or {}).get("dataset") == "shanghaitech" else self.default_descriptions

    def _fit_descriptions(self, encoder, pset, per_class, videos, labels, device, generator) -> None:
        raise NotImplementedError  # pragma: no cover

    def _new_model(self, state: dict[str, np.ndarray]):
        """An empty fitted module shaped like the saved ``state`` (``load_state_dict`` fills it)."""
        raise NotImplementedError  # pragma: no cover

    def _scores(self, video, score: np.ndarray, class_probs: np.ndarray, probs: np.ndarray) -> Scores:
        """The video's Scores; each frame's explanation is its most probable text (``probs`` (T N))."""
        return Scores(
            video.frame_index,
            score.astype(np.float32),
            video.num_frames,
            class_probs=class_probs.astype(np.float32),
            class_names=self.class_names_,
            explanation=np.array(self.texts_, dtype=object)[probs.argmax(axis=1)],
        )

    def _state(self) -> dict[str, np.ndarray]:
        return module_state(self.model_)

    def _extra_config(self) -> dict:
        return {"texts": list(self.texts_), "final_loss": self.final_loss_}

    def _load_state(self, state, extra) -> None:
        self.texts_ = list(extra["texts"])
        self.final_loss_ = extra.get("final_loss")
        self.model_ = load_module_state(self._new_model(state), state).eval()

    @classmethod
    def _upgrade_v02(cls, meta, state):
        """0.2's config held both modes' fields and ``mode``: keep this head's own."""
        from dataclasses import fields

        own = {f.name for f in fields(cls.Config)}
        return {**meta, "config": {k: v for k, v in meta["config"].items() if k in own}}, state


def subsample(emb: np.ndarray, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` uniformly spaced frames (kept in the cache's float16)."""
    if len(emb) > max_frames:
        emb = emb[np.linspace(0, len(emb) - 1, max_frames).round().astype(int)]
    return np.ascontiguousarray(emb)


def pad_batch(videos: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos of different lengths -> ``x (B T D)`` zero-padded, ``valid (B T)``."""
    T = max(len(v) for v in videos)
    x = torch.zeros(len(videos), T, videos[0].shape[1])
    valid = torch.zeros(len(videos), T, dtype=torch.bool)
    for i, v in enumerate(videos):
        x[i, : len(v)] = torch.from_numpy(v)
        valid[i, : len(v)] = True
    return x.to(device), valid.to(device)


def fit_adam(params, batch_loss, num_videos: int, cfg: DescriptionConfig, generator: torch.Generator):
    """Adam (the paper's optimizer; no weight decay, no schedule) over ``cfg.epochs`` passes of
    shuffled video batches; ``batch_loss(indices)`` gives the loss of one batch. Returns the
    last batch's loss (None without any step). ``epochs=0`` trains nothing (CLIP's start, on
    purpose); otherwise a schedule too short to move the weights is refused
    (:func:`vadpipe.heads.training.check_schedule`)."""
    from vadpipe.heads.training import check_schedule

    per_epoch = -(-num_videos // cfg.batch_size)
    if cfg.epochs:
        check_schedule(
            "clipassist", [cfg.lr] * (cfg.epochs * per_epoch),
            f"{cfg.epochs} epochs of {per_epoch} step(s) ({num_videos} videos, batch {cfg.batch_size}) at lr {cfg.lr:g}",
            "raise epochs or lr (e.g. --param lr=1e-3), or lower batch_size; epochs=0 keeps CLIP's start on purpose",
        )
    opt = torch.optim.Adam(params, lr=cfg.lr)
    loss = None
    for _ in range(cfg.epochs):
        for idx in torch.randperm(num_videos, generator=generator).split(cfg.batch_size):
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return None if loss is None else loss.item()
