"""``s3m``: VLAVAD (Li & Jiang 2024): a Selective Prompt Adapter + a Sequence State Space Module.

Trained on normal videos only. Two scores per sampled frame, fused:

* **SPA, static score A_s** (sec. 3.3.1). The cache's captioner group holds each frame's
  BLIP-2 answer to every question (``vadpipe featurize --captioner``). For each question,
  the distribution of its normalised answers over all normal training frames is counted;
  the question whose ``spa_top_k`` most frequent answers cover the largest share of the
  frames ("the prompt that concentrates normal samples") is selected (``spa_select`` > 1
  keeps the best few and averages their scores). A frame's static score is the rarity of
  its answer, A_s = 1 / (1 + n(a)), where n(a) is how often the training frames gave that
  answer. The paper scores the reciprocal of the frequency; the +1 keeps an answer never
  seen in training finite (score 1, the maximum) without changing the ranking of seen ones.
  An unseen answer is scored through its nearest seen answer a* (cosine of their CLIP text
  embeddings, the ``text_emb`` of the cache): n(a) = n(a*) * w with
  w = clip((cos - f) / (1 - f), 0, 1), f = ``spa_similarity_floor`` (0.8). A paraphrase of a
  common answer (cos near 1) is as common as it; an answer far from everything seen
  (cos <= f) counts as never seen. This rule is vadpipe's: the paper scores "the reciprocal of
  the frequency" and does not address unseen answers; ``spa_unseen="exact"`` is its literal
  reading (any answer not seen verbatim, after normalisation, is never seen). Its effect
  could not be measured here (no BLIP-2 weights, no GPU): ``bench/spa_unseen.py`` sweeps it
  on a real captioned cache.
* **S3M, temporal score A_t** (sec. 3.3.2). A stack of ``layers`` S4D layers
  (:mod:`vadpipe.heads.s4d`; pre-LayerNorm residual blocks) reads the last ``past`` (L_p)
  embeddings of a sequence and predicts the next ``future`` (L_f); trained with MSE on the
  windows of normal training videos only. Input embeddings are standardised with the
  training mean and one global scale (geometry kept); the network predicts the change from
  the last observed embedding (its output layer starts at zero, so an untrained model
  repeats the last frame). Sequences are the SPA-selected question's answer embeddings
  (the mean of the selected questions' embeddings, renormalised, when ``spa_select`` > 1),
  or the CLIP image embeddings when the cache holds no captions (``input="auto"``, the
  default; ``"captions"`` requires them, ``"image"`` always uses the image embeddings).
  Sequences are in sampled frames (stride k: L_p = 20 covers 20k source frames). Every
  sample s >= 1 is predicted from the L_p samples before it, the video's first sample
  repeated where the video is shorter (so short videos and video starts are scored, and
  training sees the same padding). A_t(t) = mean over the windows that predict t (up to
  L_f of them, one per horizon) of the squared error, averaged over dimensions, in
  standardised units; the first sample takes the second's value.
* **Fusion** (sec. 3.3.3): A = Gaussian_sigma(w_s A_s + lambda A_t), lambda = ``temporal_weight``
  = 0.1, w_s = ``static_weight`` = 1 (0: Table 2's S3M-only row), sigma = ``sigma`` in source frames (converted to samples with the video's median
  stride). Without captions A_s = 0. ``temporal_weight=0`` skips S3M (the SPA-only ablation).
  Each frame's explanation is its answer to the selected question.

Defaults are the paper's ShanghaiTech setting (L_p = 20, L_f = 4, 3 layers, lr 5e-2,
sigma = 12); ``preset=ped2|avenue|shanghaitech`` gives each dataset's (Ped2/Avenue:
``past=10, future=2, lr=0.5, sigma=6``), with ``input="captions"``. The paper's questions are
VLAVAD's three (``vadpipe.featurize.captioner.VLAVAD_QUESTIONS``); its captioning settings
(prompt, length, decoding) are not given, vadpipe's are recorded in the captioner's recipe. The paper does
not name the optimizer, width or training length: vadpipe uses AdamW (grad-norm clip 1,
warm-up + cosine), the SSM step/decay parameters in their own group with ``ssm_lr`` = 1e-3 and
no weight decay (as state-spaces/s4), width 128, state size 64, 20 epochs of batches of 64
windows (each epoch a seeded permutation, so training is deterministic on CPU), cut at
``max_steps`` = 1000 optimiser steps. A step costs the same whatever the data, so without the
cut a UCF-Crime-sized training set (800 normal videos x ~440 samples: 352k windows) takes 110k
steps (2.6 h on 2 CPU cores at 0.5.0's 0.086 s a step, 55 min at 0.5.3's 0.030 s). The cut
comes from a measured curve
(``bench/s3m_schedule.py``: 200 normal videos x 440 samples of planted dynamics on 16 scenes,
D = 512, 88k windows; held-out frame AUC of A_t after 125, 250, 500, 1000, 2000 steps of 64
windows: 0.977, 0.986, 0.987, 0.989, 0.991; 0.063 s a step on 2 cores): the curve is flat
from about 500 steps, and 1000 steps take about a minute. Small sets (Ped2: ~1.9k windows,
600 steps for 20 epochs) never reach the cut; ``max_steps=null`` trains every epoch.

Objects (``unit=object``, VLAVAD's own setting, sec. 3.2-3.3.3): SPA on each object row's
answers (a captioner group built on the objects group: ``featurize --objects ... --captioner``),
S3M over each track's sequence (its answers' embeddings, or its crop embeddings without
captions), and per frame A = Gauss(max_i A_s(i) + lambda max_i A_t(i)) over the frame's
objects (:meth:`S3MHead._score_objects`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, ObjectUnits, Scores
from vadpipe.heads.data import object_units
from vadpipe.heads.s4d import S4D, param_groups
from vadpipe.heads.training import l2_normalize, load_module_state, module_state, seeded, warmup_cosine
from vadpipe.vectors import stack_rows

INPUTS = ("auto", "captions", "image")
UNSEEN = ("nearest", "exact")
# VLAVAD sec. 4.2: "3 layers, with 10 input frames and 2 predicted frames for Avenue and Ped2, and 20 input
# frames and 4 predicted frames for the ShanghaiTech. The learning rate was set to 5e-1 for Avenue and Ped2, and
# 5e-2 for ShanghaiTech ... the lambda were set to 0.1 ... sigma values of 6, 6, and 12". input="captions": a
# preset run without captions fails instead of reading image embeddings (not a paper number).
PRESETS: dict[str, dict] = {
    "ped2": dict(past=10, future=2, layers=3, lr=5e-1, temporal_weight=0.1, sigma=6.0, input="captions"),
    "avenue": dict(past=10, future=2, layers=3, lr=5e-1, temporal_weight=0.1, sigma=6.0, input="captions"),
    "shanghaitech": dict(past=20, future=4, layers=3, lr=5e-2, temporal_weight=0.1, sigma=12.0, input="captions"),
}


@dataclass
class S3MConfig(ObjectUnits):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS

    preset: str | None = None  # ped2, avenue, shanghaitech: the paper's per-dataset setting (sec. 4.2)
    input: str = "auto"  # S3M sequences: auto (captions if any), captions, image
    caption_encoder: str | None = "auto"  # captioner key; "auto": the one built on the CLIP key; None: ignore captions
    spa_top_k: int = 5
    spa_select: int = 1
    spa_similarity_floor: float = 0.8
    spa_unseen: str = "nearest"  # nearest: vadpipe's rule for unseen answers; exact: unseen = never seen
    past: int = 20  # L_p
    future: int = 4  # L_f
    layers: int = 3
    d_model: int = 128
    d_state: int = 64
    dropout: float = 0.0
    lr: float = 5e-2
    ssm_lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    epochs: int = 20  # passes over the training windows ...
    max_steps: int | None = 1000  # ... but at most this many optimiser steps (None: no cap; docstring)
    temporal_weight: float = 0.1  # lambda
    static_weight: float = 1.0  # weight of A_s (0: the S3M-only ablation of Table 2)
    sigma: float = 12.0  # Gaussian smoothing of the fused score, in source frames (0: none)
    seed: int = 0

    def __post_init__(self):
        if self.input not in INPUTS:
            raise VadpipeError(f"s3m: unknown input {self.input!r} (choose from {', '.join(INPUTS)})")
        for name in ("spa_top_k", "spa_select", "past", "future", "layers", "d_model", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise VadpipeError(f"s3m: {name} must be >= 1, got {getattr(self, name)}")
        if self.d_state < 2 or self.temporal_weight < 0 or self.sigma < 0:
            raise VadpipeError("s3m: needs d_state >= 2 and temporal_weight, sigma >= 0")
        if not 0 <= self.spa_similarity_floor < 1:
            raise VadpipeError(f"s3m: spa_similarity_floor must be in [0, 1), got {self.spa_similarity_floor}")
        if self.spa_unseen not in UNSEEN:
            raise VadpipeError(f"s3m: spa_unseen must be one of {', '.join(UNSEEN)}, got {self.spa_unseen!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise VadpipeError(f"s3m: max_steps must be >= 1 or null, got {self.max_steps}")
        if self.static_weight < 0:
            raise VadpipeError(f"s3m: static_weight must be >= 0, got {self.static_weight}")


class S3MNet(nn.Module):
    """``(B, L_p, D)`` past embeddings -> ``(B, L_f, D)`` predicted future, standardised units."""

    def __init__(self, dim: int, future: int, d_model: int, d_state: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.future = future
        self.register_buffer("center", torch.zeros(dim))  # (D) training mean
        self.register_buffer("scale", torch.ones(()))  # training RMS deviation
        self.encoder = nn.Linear(dim, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.layers = nn.ModuleList(S4D(d_model, d_state, dropout) for _ in range(layers))
        self.decoder = nn.Linear(d_model, future * dim)
        nn.init.zeros_(self.decoder.weight)  # start as "the future repeats the last frame"
        nn.init.zeros_(self.decoder.bias)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        """``(B Lp D)`` past embeddings -> ``(B Lf D)`` predicted future (standardised)."""
        z = self.standardise(past)  # (B Lp D)
        return self.predict(self.encoder(z), z[:, -1])

    def predict(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """From encoded windows ``x (B Lp H)`` and their last standardised input ``(B D)``."""
        *inner, top = zip(self.norms, self.layers)
        for norm, layer in inner:
            x = x + layer(norm(x))  # (B Lp H)
        norm, layer = top
        h = x[:, -1] + layer(norm(x), last=True)  # (B H): the decoder reads the last state only
        return last[:, None] + self.decoder(h).view(len(x), self.future, -1)  # (B Lf D)


def windows(length: int, past: int, future: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of every window of a sequence of ``length``: one per predicted sample s >= 1.

    Returns ``past_idx (W, L_p)`` (samples s-L_p .. s-1, clamped at 0: the first sample
    repeated), ``target_idx (W, L_f)`` (s .. s+L_f-1, clamped at the end) and
    ``mask (W, L_f)`` (False where the target runs past the end).
    """
    s = np.arange(1, length)[:, None]  # (W 1)
    past_idx = np.clip(s + np.arange(-past, 0), 0, None)  # (W Lp)
    target = s + np.arange(future)  # (W Lf)
    return past_idx, np.minimum(target, max(length - 1, 0)), target < length


def train_s3m(net: S3MNet, sequences: list[np.ndarray], cfg: S3MConfig, device: str) -> list[float]:
    """Fit ``net`` (standardisation + weights) to predict the normal ``sequences``; returns the losses.

    The rows are held in float16 (half the memory of float32; each batch's windows are gathered
    and cast on the device), stacked while ``sequences`` is emptied (each video let go once
    copied: the caller must not need them after); the mean and scale are summed in float64.
    ``cfg.epochs`` shuffled passes over the windows, cut at ``cfg.max_steps`` steps."""
    dim = sequences[0].shape[1]
    total, count = np.zeros(dim), 0
    for seq in sequences:
        total += seq.sum(axis=0, dtype=np.float64)
        count += len(seq)
    center = total / max(count, 1)
    sq = sum(float(((seq.astype(np.float64) - center) ** 2).sum()) for seq in sequences)
    net.center.copy_(torch.from_numpy(center.astype(np.float32)))
    net.scale.fill_(float(np.sqrt(sq / max(count, 1) / dim)) or 1.0)
    parts, offset = [], 0
    for seq in sequences:
        p, t, m = windows(len(seq), cfg.past, cfg.future)
        parts.append((p + offset, t + offset, m))
        offset += len(seq)
    past_idx, target_idx, mask = (torch.from_numpy(np.concatenate(x)).to(device) for x in zip(*parts))
    if not len(past_idx):
        raise VadpipeError("s3m: the normal training videos have no sample to predict (each needs 2+ samples)")
    X = torch.from_numpy(stack_rows(sequences, np.float16)).to(device)  # (N D); empties ``sequences``
    net.to(device).train()
    opt = torch.optim.AdamW(param_groups(net, cfg.lr, cfg.ssm_lr, cfg.weight_decay))
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = -(-len(past_idx) // cfg.batch_size)
    total_steps = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.epochs * per_epoch, cfg.max_steps)
    epochs = -(-total_steps // per_epoch)
    order = torch.cat([torch.randperm(len(past_idx), generator=gen) for _ in range(epochs)])
    batches = order.split(cfg.batch_size)[:total_steps]
    warmup = max(1, len(batches) // 20)
    losses = []
    for step, rows in enumerate(batches):
        factor = warmup_cosine(step, len(batches), warmup)
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * factor
        rows = rows.to(device)  # (B)
        pred = net(X[past_idx[rows]].float())  # (B Lf D)
        err = ((pred - net.standardise(X[target_idx[rows]].float())) ** 2).mean(-1)  # (B Lf)
        m = mask[rows].float()  # (B Lf)
        loss = (err * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


@torch.no_grad()
def prediction_error(net: S3MNet, seq: np.ndarray, past: int, chunk: int = 1024) -> np.ndarray:
    """A_t of each sample of one sequence ``(T, D)`` -> ``float32[T]`` (see the module docstring)."""
    T = len(seq)
    if T < 2:
        return np.zeros(T, dtype=np.float32)
    device = net.center.device
    Z = net.standardise(torch.from_numpy(np.asarray(seq, dtype=np.float32)).to(device))  # (T D)
    E = net.encoder(Z)  # (T H): each sample encoded once, not once per window that reads it
    past_idx, target_idx, mask = windows(T, past, net.future)
    err = []
    for i in range(0, len(past_idx), chunk):
        p = torch.from_numpy(past_idx[i : i + chunk]).to(device)  # (w Lp)
        pred = net.predict(E[p], Z[p[:, -1]])  # (w Lf D)
        target = Z[torch.from_numpy(target_idx[i : i + chunk]).to(device)]  # (w Lf D)
        err.append(((pred - target) ** 2).mean(-1).cpu().numpy())  # (w Lf)
    err = np.concatenate(err)  # (W Lf)
    sums = np.bincount(target_idx[mask], weights=err[mask], minlength=T)
    counts = np.bincount(target_idx[mask], minlength=T)
    score = sums / np.maximum(counts, 1)
    score[0] = score[1]
    return score.astype(np.float32)


class AnswerTable(nn.Module):
    """SPA's memory of one selected question: how often each normal training answer was given,
    and its CLIP text embedding (for answers never seen in training)."""

    def __init__(self, num_answers: int, dim: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_answers))  # (U)
        self.register_buffer("emb", torch.zeros(num_answers, dim))  # (U D), unit rows


class S3MModel(nn.Module):
    """What a fitted ``s3m`` head keeps: the SPA tables (``spa``) and the S3M network (``net``,
    absent with ``temporal_weight=0``); its ``state_dict`` is the checkpoint."""

    def __init__(self, tables: list[tuple[int, int]], net: S3MNet | None):
        super().__init__()
        self.spa = nn.ModuleList(AnswerTable(u, d) for u, d in tables)
        self.net = net


class S3MHead(Head):
    name = "s3m"
    Config = S3MConfig
    object_mode = "tracks"  # unit=object: S3M over each track's crop embeddings (VLAVAD sec. 3.3)
    inputs = ("emb", "captions")

    # ------------------------------------------------------------ fit
    def _fit(self, cache, manifest) -> None:
        cfg = self.config
        if cfg.input == "captions" and self.caption_key_ is None:
            raise VadpipeError(f"s3m: input='captions' but cache {cache.path} has no captions for {self.encoder!r}")
        self.input_ = "captions" if self.caption_key_ and cfg.input != "image" else "image"
        if self.caption_key_ is None and cfg.temporal_weight == 0:
            raise VadpipeError("s3m: no captions and temporal_weight=0 leave nothing to score")
        captions, images = [], []  # read once, one video at a time; image rows kept in float16
        for video in self.training_set(cache, manifest, normal=True).iter_videos():
            if self.caption_key_:
                captions.append(video.captions)
            if self.input_ == "image" and cfg.temporal_weight > 0:
                images.append(np.asarray(video.emb, dtype=np.float16))
        tables = self._fit_spa(cache, captions) if self.caption_key_ else []
        net = None
        if cfg.temporal_weight > 0:
            sequences = images if self.input_ == "image" else [self._caption_sequence(c) for c in captions]
            del captions
            self.dim_ = int(sequences[0].shape[1])
            with seeded(cfg.seed):
                net = self._new_net()
            self.losses_ = train_s3m(net, sequences, cfg, self._device())
            net.cpu()
        else:
            self.dim_ = 0
        self.model_ = S3MModel([tuple(emb.shape) for _, emb in tables], net)
        for table, (counts, emb) in zip(self.model_.spa, tables):
            table.counts.copy_(torch.from_numpy(counts))
            table.emb.copy_(torch.from_numpy(emb))

    def _fit_spa(self, cache, captions) -> list[tuple[np.ndarray, np.ndarray]]:
        """Select the question(s) whose normal answers concentrate most; count their answers.
        Returns each selected question's answer counts ``(U)`` and embeddings ``(U D)``."""
        cfg = self.config
        text = np.concatenate([c.text for c in captions])  # (N Q)
        emb = np.concatenate([c.text_emb for c in captions])  # (N Q D)
        mass = []
        for q in range(text.shape[1]):
            _, counts = np.unique(text[:, q], return_counts=True)
            mass.append(float(np.sort(counts)[::-1][: cfg.spa_top_k].sum() / len(text)))
        self.spa_concentration_ = mass
        self.spa_questions_ = [int(q) for q in np.argsort(-np.asarray(mass), kind="stable")[: cfg.spa_select]]
        questions = cache.recipe(self.caption_key_).get("questions") or []
        self.spa_question_texts_ = [questions[q] if q < len(questions) else f"question {q}"
                                    for q in self.spa_questions_]
        self.spa_answers_, tables = [], []
        for q in self.spa_questions_:
            answers, first, counts = np.unique(text[:, q], return_index=True, return_counts=True)
            self.spa_answers_.append(answers.tolist())
            tables.append((counts.astype(np.float32), l2_normalize(emb[first, q].astype(np.float32))))  # (U), (U D)
        return tables

    def _new_net(self) -> S3MNet:
        cfg = self.config
        return S3MNet(self.dim_, cfg.future, cfg.d_model, cfg.d_state, cfg.layers, cfg.dropout)

    def _sequence(self, video) -> np.ndarray:
        """What S3M reads: the selected questions' answer embeddings, or the image embeddings."""
        if self.input_ == "captions":
            return self._caption_sequence(video.captions)
        return video.emb.astype(np.float32)  # (T D)

    def _caption_sequence(self, captions) -> np.ndarray:
        """The mean of the selected questions' answer embeddings, renormalised ``(T D)``."""
        return l2_normalize(captions.text_emb[:, self.spa_questions_].mean(axis=1).astype(np.float32))

    # ------------------------------------------------------------ score
    def _score_video(self, video) -> Scores:
        static, temporal, explanation = self._parts(video)
        return Scores(video.frame_index, self._fuse(static, temporal, video.frame_index), video.num_frames,
                      explanation=explanation)

    def _parts(self, video) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """SPA's A_s, S3M's A_t (zeros where a part is off) and the explanation of each sample."""
        T = len(video.frame_index)
        static = np.zeros(T, dtype=np.float32)
        explanation = None
        if self.caption_key_:
            static = self._static_scores(video.captions.text, video.captions.text_emb)
            explanation = np.array(video.captions.text[:, self.spa_questions_[0]], dtype=object)
        temporal = np.zeros(T, dtype=np.float32)
        if self.model_.net is not None:
            temporal = prediction_error(self.model_.net, self._sequence(video), self.config.past)
        return static, temporal, explanation

    def _fuse(self, static: np.ndarray, temporal: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
        """Gauss(w_s A_s + lambda A_t) along the sampled frames (sigma in source frames)."""
        cfg = self.config
        score = cfg.static_weight * static + cfg.temporal_weight * temporal  # float32, as vadpipe 0.2 added them
        if cfg.sigma > 0 and len(score) > 1:
            from scipy.ndimage import gaussian_filter1d

            step = float(np.median(np.diff(frame_index))) or 1.0
            score = gaussian_filter1d(score.astype(np.float64), sigma=cfg.sigma / step, mode="nearest")
        return score.astype(np.float32)

    def _score_objects(self, video) -> Scores:
        """VLAVAD sec. 3.3.3 on objects: A = Gauss(max_i A_s(i) + lambda max_i A_t(i)) -- each part
        maxed over the frame's objects, fused, then smoothed along the video's frames; A_t of an
        object is its own track's prediction error. An object row's own score (kept with the
        scores) is its unsmoothed w_s A_s + lambda A_t."""
        obj = video.objects
        n = len(obj.frame_index)
        static, temporal = np.zeros(n), np.zeros(n)
        explanation = np.empty(n, dtype=object) if self.caption_key_ else None
        for rows, unit in object_units(video, self.object_mode) if n else []:
            static[rows], temporal[rows], why = self._parts(unit)
            if explanation is not None:
                explanation[rows] = why
        cfg = self.config
        row_score = cfg.static_weight * static + cfg.temporal_weight * temporal
        frame = self._fuse(self._max_per_frame(video, static).astype(np.float32),
                           self._max_per_frame(video, temporal).astype(np.float32), video.frame_index)
        rows = Scores(obj.frame_index, row_score, video.num_frames, explanation=explanation)
        return self._objects_result(video, rows, frame)

    def _object_floor(self, cache, manifest) -> float:
        """A frame with no object: 0, the bottom of both A_s (1 / (1 + n) > 0) and A_t (an error)."""
        return 0.0

    def _static_scores(self, text: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """SPA's A_s of each frame from its answers ``str[T, Q]`` and their embeddings ``[T, Q, D]``."""
        floor = self.config.spa_similarity_floor
        total = np.zeros(len(text), dtype=np.float64)
        for j, q in enumerate(self.spa_questions_):
            table = self.model_.spa[j]
            counts, seen_emb = table.counts.numpy(), table.emb.numpy()
            lookup = dict(zip(self.spa_answers_[j], counts))
            n = np.array([lookup.get(a, np.nan) for a in text[:, q]], dtype=np.float64)  # (T)
            unseen = np.isnan(n)
            if unseen.any() and self.config.spa_unseen == "exact":
                n[unseen] = 0.0  # never seen: the rarest, A_s = 1
            elif unseen.any():
                cos = l2_normalize(np.asarray(text_emb[unseen, q], np.float32)) @ seen_emb.T  # (t U)
                nearest = cos.argmax(axis=1)
                weight = np.clip((cos.max(axis=1) - floor) / (1 - floor), 0, 1)
                n[unseen] = counts[nearest] * weight
            total += 1.0 / (1.0 + n)
        return (total / len(self.spa_questions_)).astype(np.float32)

    # ------------------------------------------------------------ save / load
    def _state(self) -> dict[str, np.ndarray]:
        return module_state(self.model_)

    def _extra_config(self) -> dict:
        extra = {"caption_key": self.caption_key_, "input": self.input_, "dim": self.dim_}
        if self.caption_key_:
            extra.update({
                "spa_questions": self.spa_questions_,
                "spa_question_texts": self.spa_question_texts_,
                "spa_concentration": self.spa_concentration_,
                "spa_answers": self.spa_answers_,
            })
        return extra

    @classmethod
    def _upgrade_v02(cls, meta, state):
        """0.2 named the SPA tables ``spa.counts.<j>`` / ``spa.emb.<j>``; the module names them
        ``spa.<j>.counts`` / ``spa.<j>.emb``."""
        renamed = {}
        for k, v in state.items():
            parts = k.split(".")
            renamed[f"spa.{parts[2]}.{parts[1]}" if parts[0] == "spa" else k] = v
        return meta, renamed

    def _load_state(self, state, extra) -> None:
        self.caption_key_, self.input_, self.dim_ = extra["caption_key"], extra["input"], int(extra["dim"])
        if self.caption_key_:
            self.spa_questions_ = [int(q) for q in extra["spa_questions"]]
            self.spa_question_texts_ = extra["spa_question_texts"]
            self.spa_concentration_ = extra["spa_concentration"]
            self.spa_answers_ = extra["spa_answers"]
        tables = [tuple(state[f"spa.{j}.emb"].shape) for j in range(len(extra.get("spa_questions", [])))]
        self.model_ = load_module_state(S3MModel(tables, self._new_net() if self.dim_ else None), state).eval()
