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

Memory (UCF-Crime size, docs/benchmarks.md: ``clipassist`` 2,637 MiB in 0.5.1, 1,924 in 0.5.2,
1,545 in 0.5.3; ``clipassist-frame`` 2,151 -> 1,343): the texts come first (the text model's
build never meets the held frames); the kept frames stay as the cache stores them, float16
(:class:`~vadpipe.heads.data.StoredRows`, normalised one video at a time: the same values);
on a CPU a batch backpropagates ``CPU_MICRO_BATCH`` videos at a time
(:func:`backward_in_micro_batches`) and ``clipassist``'s class prompts run ``CPU_PROMPT_CHUNK``
at a time (:func:`vadpipe.heads.training.backward_in_chunks`' pieces): the same gradients to
float rounding; freed heap is handed back after each step.

How long to train (the paper gives Adam, batch 64, lr 1e-5, no epoch count). With Adam a weight
moves by about lr per step, so the budget is a number of optimiser steps, not epochs: an epoch
is 26 steps on UCF-Crime's 1610 training videos, 4 on ShanghaiTech's 238. ``steps`` = 520 by
default (``epochs`` = None: as many epochs as that takes; 20 on UCF-Crime, 130 on
ShanghaiTech), chosen from a measured curve (``bench/clipassist_schedule.py``: a planted
weakly-labelled cache of UCF-Crime's size, 1610 + 290 videos, 32 frames each, text tower of a
randomly initialised ViT-B-32; zero-shot AUC 0.53). Held-out frame AUC of ``clipassist`` at
lr 1e-5 after 1, 2, 4, 6, 8, 10, 15, 20 epochs of 26 steps: 0.64, 0.69, 0.73, 0.84, 0.94, 0.97,
0.997, 0.9995 (training loss 3.1 -> 0.08); at lr 1e-4, 1 and 2 epochs (the same sums of lr as
10 and 20 epochs at 1e-5): 0.90, 0.9955 -- the curve follows the sum of the learning rates and
levels off at about 5e-3 (520 steps at 1e-5). vadpipe 0.2's 10 epochs stopped at 0.97 there,
and gave ShanghaiTech's 238 videos 40 steps (between 1 and 2 epochs of this curve). A schedule whose rates sum below 1e-3 is refused
(:func:`vadpipe.heads.training.check_schedule`); ``epochs=0`` keeps CLIP's start on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, Scores
from vadpipe.heads.data import StoredRows
from vadpipe.heads.prompts import DEFAULT_CLASS_SETS, class_texts, load_prompt_set
from vadpipe.heads.training import load_module_state, module_state, seeded
from vadpipe.memory import release_free_heap

log = logging.getLogger(__name__)


@dataclass
class DescriptionConfig:
    """Hyper-parameters both heads have (paper defaults: Adam, batch 64, lr 1e-5)."""

    descriptions: str | None = None  # prompt file; None: the head's own default set
    class_descriptions: dict[str, str | list[str]] = field(default_factory=dict)  # class -> description(s)
    class_sets: list[str] = field(default_factory=lambda: ["dong-categories", *DEFAULT_CLASS_SETS])
    topk: int | None = None  # frames per video in the top-k mean / MIL; None: T // 16 + 1
    max_frames: int = 256
    epochs: int | None = None  # None: as many as ``steps`` takes on the data given
    steps: int = 520  # optimiser steps when epochs is None: a measured curve (module docstring)
    batch_size: int = 64
    lr: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        if not self.lr > 0:
            raise VadpipeError(f"clipassist: lr must be > 0, got {self.lr}")
        for name in ("max_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise VadpipeError(f"clipassist: {name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 0:
            raise VadpipeError(f"clipassist: epochs must be >= 0, got {self.epochs}")
        if self.steps < 1:
            raise VadpipeError(f"clipassist: steps must be >= 1, got {self.steps}")
        if self.topk is not None and self.topk < 1:
            raise VadpipeError(f"clipassist: topk must be >= 1 or null, got {self.topk}")


class DescriptionHead(Head):
    """Base of ``clipassist`` and ``clipassist-frame``: reads the descriptions, then in a seeded
    RNG builds the text side (``_fit_texts``), reads the weakly labelled training set and calls
    ``_fit_descriptions``."""

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
        data = self.training_set(cache, manifest, stored=True)  # the kept frames stay float16 (StoredRows)
        self.class_names_ = tuple(manifest.anomaly_classes) or ("anomaly",)
        if all(e.is_normal for e in data.entries):
            log.warning("clipassist: no anomalous training videos; training on normal videos only")
        index = {c: i + 1 for i, c in enumerate(self.class_names_)}
        labels = [0 if e.is_normal else index[e.label] for e in data.entries]  # 0 = normal
        pset = load_prompt_set(cfg.descriptions or self.default_for(manifest))
        per_class = class_texts(self.class_names_, cfg.class_descriptions, pset, cfg.class_sets)
        with seeded(cfg.seed):
            generator = torch.Generator().manual_seed(cfg.seed)
            # the texts before the data: the text model's build (the whole CLIP model, for a
            # moment) never meets the held frames, and its freed heap is handed back first
            texts = self._fit_texts(lambda: text_encoder_for(cache, self.encoder), pset, per_class, self._device())
            release_free_heap()
            videos, frames = [], []
            for video in data.iter_videos():  # a video's frames, or (unit=object) all its object rows
                emb, frame = subsample_frames(video, cfg.max_frames)
                videos.append(emb)
                frames.append(frame)
            if self.unit == "object":
                keep = [i for i, v in enumerate(videos) if len(v)]
                if len(keep) < len(videos):
                    log.warning("clipassist: %d training video(s) have no object under %s; trained without them",
                                len(videos) - len(keep), self.objects_key_)
                if not keep:
                    raise VadpipeError(f"{self.name}: unit=object found no object in the training videos "
                                       f"under {self.objects_key_!r}")
                videos, frames, labels = [videos[i] for i in keep], [frames[i] for i in keep], [labels[i] for i in keep]
            videos, labels = StoredRows(videos, data.normalise), torch.tensor(labels)  # each video's rows as read
            self._fit_descriptions(texts, videos, frames, labels, self._device(), generator)

    def default_for(self, manifest) -> str:
        """The description file when none is given: ShanghaiTech's own for a ShanghaiTech
        manifest (Sec. 3.1.2: bicycles, vehicles and running are anomalies there), else the head's."""
        return "dong-shanghaitech" if (manifest.meta or {}).get("dataset") == "shanghaitech" else self.default_descriptions

    def _fit_texts(self, text_encoder, pset, per_class, device):
        """The text side, before the training videos are read: the texts (``self.texts_``) and
        what training needs of them (fixed embeddings, a prompt learner). ``text_encoder()``
        builds the cache's text model (not cached: hold it no longer than needed). Draws from
        the seeded RNG before the training side does, as vadpipe 0.2 did."""
        raise NotImplementedError  # pragma: no cover

    def _fit_descriptions(self, texts, videos, frames, labels, device, generator) -> None:
        """Fit on ``videos`` (each ``(R D)`` rows) whose row r lies on frame ``frames[i][r]``
        (0..F-1; the identity for whole frames, repeated values for a frame's objects), with
        ``texts`` from :meth:`_fit_texts`."""
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


def subsample_frames(video, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of at most ``max_frames`` uniformly spaced frames of ``video`` (kept in the cache's
    float16) and each row's frame among those kept (0..F-1). A video of whole frames has one row
    a frame; an object unit has a row per object, so a frame's objects stay together."""
    frames, frame = np.unique(video.frame_index, return_inverse=True)
    rows = np.arange(len(frame))
    if len(frames) > max_frames:
        kept = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        rows = np.flatnonzero(np.isin(frame, kept))
        frame = np.searchsorted(kept, frame[rows])
    return np.ascontiguousarray(video.emb[rows]), frame.astype(np.int64)


def pad_batch(videos: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos of different lengths -> ``x (B T D)`` zero-padded, ``valid (B T)``."""
    T = max(len(v) for v in videos)
    x = torch.zeros(len(videos), T, videos[0].shape[1])
    valid = torch.zeros(len(videos), T, dtype=torch.bool)
    for i, v in enumerate(videos):
        x[i, : len(v)] = torch.from_numpy(v)
        valid[i, : len(v)] = True
    return x.to(device), valid.to(device)


def schedule(cfg: DescriptionConfig, num_videos: int) -> tuple[int, int]:
    """``(epochs, steps per epoch)`` on ``num_videos`` training videos: ``cfg.epochs``, or as many
    epochs as ``cfg.steps`` steps take (batches of ``cfg.batch_size``, the last one short)."""
    per_epoch = -(-num_videos // cfg.batch_size)
    return (cfg.epochs if cfg.epochs is not None else -(-cfg.steps // per_epoch)), per_epoch


def backward_in_micro_batches(idx: torch.Tensor, loss_of, text: torch.Tensor | None, micro: int | None) -> torch.Tensor:
    """The batch ``idx``'s loss and its backward, ``micro`` videos at a time (``None``: at once).

    ``loss_of(part, text)`` is the mean loss of the videos ``part`` (eq. 12's cross entropy,
    or the classifiers' BCE: means over videos) given the class embeddings ``text`` (or None);
    the batch's is the videos-weighted mean of its parts'. ``text`` (a prompt learner's
    output) runs once: each part backpropagates to a detached copy, whose summed gradient
    then goes through the learner once. The videos are independent sequences (masked to their
    own frames), so the gradients are the whole batch's to float rounding, while the temporal
    module's activations are held for ``micro`` videos only (64 x 256 frames: ~0.75 GB at
    once at 512-d). Returns the (detached) loss."""
    leaf = None if text is None else text.detach().requires_grad_(text.requires_grad)
    parts = [idx] if micro is None else idx.split(micro)
    total = 0.0
    for part in parts:
        loss = loss_of(part, leaf) * (len(part) / len(idx))
        loss.backward()
        total = total + loss.detach()
    if leaf is not None and leaf.grad is not None:
        text.backward(leaf.grad)
    return total


def fit_adam(params, batch_loss, num_videos: int, cfg: DescriptionConfig, generator: torch.Generator):
    """Adam (the paper's optimizer; no weight decay, no schedule) over passes of shuffled video
    batches -- ``cfg.epochs`` of them, or (``epochs=None``) as many as ``cfg.steps`` optimiser
    steps take on ``num_videos`` videos; ``batch_loss(indices)`` gives the loss of one batch
    and has backpropagated it (:func:`backward_in_micro_batches`).
    Returns the last batch's loss (None without any step). ``epochs=0`` trains nothing (CLIP's
    start, on purpose); otherwise a schedule too short to move the weights is refused
    (:func:`vadpipe.heads.training.check_schedule`)."""
    from vadpipe.heads.training import check_schedule

    epochs, per_epoch = schedule(cfg, num_videos)
    if epochs:
        check_schedule(
            "clipassist", [cfg.lr] * (epochs * per_epoch),
            f"{epochs} epochs of {per_epoch} step(s) ({num_videos} videos, batch {cfg.batch_size}) at lr {cfg.lr:g}",
            "raise epochs or lr (e.g. --param lr=1e-3), or lower batch_size; epochs=0 keeps CLIP's start on purpose",
        )
    if not epochs:
        return None
    opt = torch.optim.Adam(params, lr=cfg.lr)
    loss = None
    for _ in range(epochs):
        for idx in torch.randperm(num_videos, generator=generator).split(cfg.batch_size):
            opt.zero_grad()
            loss = batch_loss(idx)
            opt.step()
            release_free_heap()  # the step's activations, freed: glibc keeps them as heap otherwise
    return None if loss is None else loss.item()
