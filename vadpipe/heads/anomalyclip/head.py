"""``anomalyclip``: weakly-supervised detection and recognition (Zanella et al. 2024).

Defaults follow the authors' code (lucazanella/AnomalyCLIP @ 6e58b6e), which produced the
published numbers, where it and the paper's text differ; each difference from the text is
an option. ``preset=ucf_crime|shanghaitech|xd_violence`` loads the per-dataset values of
the authors' configs (lr 1e-5 / 5e-4 / 5e-6, 50 / 100 / 50 epochs, warm-up 5 / 10 / 5
epochs, embedding 256 / 256 / 128, depth 1 / 2 / 1, S(x) concatenated for ShanghaiTech);
no preset = UCF-Crime's values.

1. Recentring (eq. 1): m = mean CLIP feature over every sampled frame of the normal training
   videos; each frame becomes x = f - m. ``geometry="raw"`` (default): on the image
   encoder's raw output, as the authors' ``clip_model.visual`` features -- a cache of unit
   rows (vadpipe 0.2, ``cache import --normalise``) is refused with one line;
   ``geometry="unit"``: vadpipe 0.2's variant on unit rows.
2. Directions (eq. 2): per anomaly class, CoOp context vectors (8, class-specific,
   N(0, 0.02)) before the class text -- the class name with ``_`` -> space, as the authors'
   label files spell it (``class_text="words"``: CamelCase split, "road accidents") -- run
   through the frozen text tower of the cache's own open_clip model, whose final projection
   is fine-tuned (Table 7's best row). ``raw``: d_c = E_T - m on the tower's raw output
   (the code); ``unit``: d_c = E_T/||E_T|| - m.
3. Selector (eqs. 3-5): S(x)_c = BN(x . d_c / ||d_c||), batch norm without affine
   parameters; a segment's likelihood is the sum over its frames.
4. Temporal model (eq. 6): an axial transformer over (segments x frames) of x (with S(x)
   concatenated for ShanghaiTech), sigmoid output p_A.
5. Aggregation: p_N = 1 - p_A, p(c|A) = softmax(S(x)), p_{A,c} = p_A p(c|A).
6. Training (eqs. 7-14): clips of S = 32 segments x F = 16 consecutive sampled frames,
   balanced batches of 64 (32 anomalous + 32 normal videos), MIL top-K / bottom-K (K = 3) by
   the selector on the labelled class after masking 70% of the segments; AdamW (0.9, 0.999
   -- torch's default, which the code runs; the paper prints 0.98 -- eps 1e-8, weight decay
   0.2 on every tensor); the authors' schedule, stepped once per epoch: warm-up from lr 0
   (epoch 0 trains at lr 0) over ``warmup_epochs``, then cosine (``schedule="step"``: the
   text's 10% warm-up per step). Loss aggregation as the code (``losses="code"``: L_N^DIR
   by the max over classes, smoothness summed over the whole anomalous half of the batch;
   ``"paper"``: eqs. 10 and 13 as printed; :mod:`.losses`).
7. Inference over a whole video of T sampled frames: loop-pad it to J*S*F frames,
   J = ceil(T / (S*F)), split it into S blocks of J*F consecutive frames; pass j feeds the
   j-th run of F frames of every block, so the J passes cover every frame once.

Choices where the paper and code leave room (and why):

* Frames are the cache's *sampled* frames: a segment is F consecutive samples. The authors
  sample every frame (``stride: 1``); featurize with ``--stride 1`` to match.
* Training clips are drawn as the authors' dataset draws them
  (:func:`~vadpipe.heads.anomalyclip.train.training_clip_indices`).
* An epoch is ``max(#anomalous, #normal) // (B/2)`` steps (two loaders with ``drop_last``,
  Lightning's max-size cycle), at least one; each step draws B/2 anomalous and B/2 normal
  videos from per-epoch shuffles (the smaller set cycles). ``steps`` overrides the total.
* A schedule whose learning rates sum below 1e-3 cannot move the weights off their
  initialisation, so training refuses it with a hint (on tens of videos the UCF-Crime
  schedule is 50 steps at <= 1e-5 -- raise ``lr`` or ``epochs``);
  :func:`vadpipe.heads.training.check_schedule`.
* Masking keeps each segment with probability 0.3 but always keeps at least K of them (the
  code can pick a masked segment when fewer survive; P ~ 0.1%); one mask serves top-K and
  bottom-K. Normal clips rank segments by the selector summed over classes (as the code).
* The axial transformer is lucidrains' ``AxialImageTransformer`` as the authors configure it
  (reversible, axial position embeddings N(0, 1) -- ``pos_init_std`` -- attention along
  segments and along frames, two feed-forward blocks of 3x3 convolutions, classifier
  LayerNorm + Linear), written with ordinary autograd: same outputs with copied weights (a
  test against the ``axial-attention`` package), no reversible memory saving.
* The seed is vadpipe's (``seed=0``); the authors' 1024 drives another RNG stream anyway.
* On a GPU training holds the training videos' features in memory (as stored, float16); on
  a CPU, where a step takes seconds, each batch's videos are read from the cache instead (64
  reads, ~30 ms of a ~17 s step; nothing held: 700 MiB less at UCF-Crime size; the same
  arrays, so the same run). Either way they are read after the prompt learner is built (the
  text model's build, the whole CLIP model for a moment, never meets them).
* A step backpropagates the temporal model ``clip_chunk`` clips at a time ("auto": 8 on a
  CPU, the whole batch on a GPU): the selector's batch norm couples the batch, so it runs
  once on all of it; the temporal model reads each clip alone, so its activations are
  recomputed a chunk at a time (:func:`~.train.training_step`; the gradients are the whole
  batch's to float rounding). At batch 64 on 2 CPU cores: 0.45 instead of 1.3 GB of
  activations, for a 17% longer step -- the trade the authors' reversible network makes too.

Saved: :class:`~vadpipe.heads.anomalyclip.net.AnomalyClipNet`'s ``state_dict`` -- the
prototype, the directions (so scoring needs no text model), the selector's batch-norm
statistics and the temporal model. The learned context vectors and text projection only
serve to compute the directions: they are not saved. The authors' released checkpoints
(``last.ckpt`` + ``ncentroid.pt``) become a run folder with
:mod:`vadpipe.heads.anomalyclip.checkpoint` (``vadpipe convert anomalyclip``).

Modules: :mod:`.config` (hyper-parameters, presets), :mod:`.net` (the network),
:mod:`.losses` (eqs. 5-14), :mod:`.train` (clip layouts, schedule, loop), :mod:`.checkpoint`
(the authors' checkpoints), :mod:`.head` (this head).
"""

from __future__ import annotations

import numpy as np
import torch

from vadpipe.errors import VadpipeError
from vadpipe.heads.anomalyclip.config import AnomalyClipConfig
from vadpipe.heads.anomalyclip.net import AnomalyClipNet
from vadpipe.heads.anomalyclip.train import inference_clip_indices, train_anomalyclip
from vadpipe.heads.base import Head, Scores
from vadpipe.heads.data import ReadRows
from vadpipe.heads.training import load_module_state, module_state, seeded
from vadpipe.memory import release_free_heap


def class_text(name: str, style: str) -> str:
    """A class's text in its prompt: ``name`` -- the class as the authors' label files spell it
    when it is one of theirs (vadpipe's ``CarAccident`` is their ``Car_accident``), with ``_`` ->
    space as their ``name.replace("_", " ")`` ("RoadAccidents", "Car accident"), else the
    manifest's name so; ``words`` -- CamelCase split, lower case ("road accidents")."""
    import re

    from vadpipe.heads.anomalyclip.config import AUTHORS_CLASSES
    from vadpipe.heads.prompts import class_prompt

    if style == "words":
        return class_prompt(name)
    key = re.sub(r"[^0-9a-z]", "", name.lower())
    theirs = {re.sub(r"[^0-9a-z]", "", c.lower()): c for names in AUTHORS_CLASSES.values() for c in names}
    return theirs.get(key, name).replace("_", " ")


def holds_training_videos(device: str) -> bool:
    """Whether training holds the training videos' features (a GPU, whose steps are short next to
    reading 64 videos from the cache) or reads each batch's videos from the cache (a CPU: ~30
    ms of a ~17 s step, and the features -- 700 MiB at UCF-Crime size -- are not held)."""
    return torch.device(device).type != "cpu"


class AnomalyClipHead(Head):
    name = "anomalyclip"
    Config = AnomalyClipConfig

    @property
    def geometry(self) -> str:  # raw (authors' code) or unit: how the head reads the cache's rows
        return self.config.geometry

    def _geometry_hint(self) -> str:
        return " (or pass --param geometry=unit for vadpipe 0.2's unit-sphere variant)"

    def _fit(self, cache, manifest) -> None:
        from vadpipe.heads.prompt_learner import PromptLearner
        from vadpipe.heads.text import text_encoder_for

        cfg = self.config
        data = self.training_set(cache, manifest)
        normal = [e for e in data.entries if e.is_normal]
        anomalous = [e for e in data.entries if not e.is_normal]
        if not normal or not anomalous:
            raise VadpipeError(
                f"anomalyclip: weak supervision needs normal and anomalous training videos; the manifest "
                f"has {len(normal)} normal and {len(anomalous)} anomalous (split=train)"
            )
        self.class_names_ = tuple(manifest.anomaly_classes)
        unknown = sorted(set(cfg.class_descriptions) - set(self.class_names_))
        if unknown:
            raise VadpipeError(
                f"anomalyclip: class_descriptions names unknown class(es) {', '.join(unknown)} "
                f"(the manifest's: {', '.join(self.class_names_)})"
            )
        self.class_texts_ = [cfg.class_descriptions.get(c, class_text(c, cfg.class_text)) for c in self.class_names_]
        class_index = {c: i for i, c in enumerate(self.class_names_)}

        # the text side before the data: the text model's build (the whole CLIP model, for a
        # moment) never meets the held training features, and its freed heap is handed back
        encoder = text_encoder_for(cache, self.encoder)
        text_dim = encoder.dim
        device = self._device()
        rng = np.random.default_rng(cfg.seed)
        with seeded(cfg.seed):
            prompts = PromptLearner(
                encoder.model, encoder.tokenizer, self.class_texts_, n_ctx=cfg.n_ctx,
                shared_context=cfg.shared_context, init_std=cfg.ctx_init_std,
                train_projection=cfg.finetune_text_projection,
            ).to(device)
            del encoder  # the learner holds its own copy of the text tower (text_encoder_for does not cache it)
            release_free_heap()
            hold = holds_training_videos(device)  # reading draws no random number
            videos = data.videos if hold else data.iter_videos()  # read once and held, or one pass
            if any(len(v.emb) == 0 for v in videos):
                raise VadpipeError("anomalyclip: a training video has no sampled frames in the cache")
            if hold:  # (T D) each, read once and held
                normal_feats = [v.emb for e, v in zip(data.entries, data.videos) if e.is_normal]
                anomalous_feats = [v.emb for e, v in zip(data.entries, data.videos) if not e.is_normal]
            else:  # read for each batch
                normal_feats, anomalous_feats = ReadRows(data, normal), ReadRows(data, anomalous)
            prototype = data.normal_mean()  # eq. 1, (D)
            if text_dim != prototype.shape[0]:
                raise VadpipeError(
                    f"anomalyclip: the text tower of {self.encoder} gives {text_dim}-d features, "
                    f"the cache holds {prototype.shape[0]}-d ones"
                )
            net = AnomalyClipNet(prototype.shape[0], len(self.class_names_), cfg)
            net.prototype.copy_(torch.from_numpy(prototype.astype(np.float32)))
            net.to(device)
            history = train_anomalyclip(
                net, prompts, anomalous_feats, [class_index[e.label] for e in anomalous], normal_feats,
                cfg, device, rng,
            )
        self.net_ = net.eval()
        self.history_ = history
        self.train_summary_ = {"class_texts": list(self.class_texts_), "training_steps": len(history),
                               "final_losses": history[-1]}

    # ------------------------------------------------------------------ scoring
    def _score_video(self, video) -> Scores:
        p_a, p_ac = self._score_frames(video.emb)
        return Scores(video.frame_index, p_a, video.num_frames, class_probs=p_ac, class_names=self.class_names_)

    def _score_frames(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p_A ``float32[T]`` and p_{A,c} ``float32[T, C]`` of one video's features ``(T D)``."""
        cfg = self.config
        T = len(emb)
        if T == 0:
            return np.zeros(0, np.float32), np.zeros((0, len(self.class_names_)), np.float32)
        device = next(self.net_.parameters()).device
        idx = inference_clip_indices(T, cfg.num_segments, cfg.frames_per_segment)  # (J S F)
        feats = torch.from_numpy(np.asarray(emb, dtype=np.float32))  # (T D)
        p_a, p_ac = [], []
        with torch.inference_mode():
            for start in range(0, len(idx), self.score_batch_size):
                chunk = torch.from_numpy(idx[start : start + self.score_batch_size])  # (j S F)
                sel, logit = self.net_(feats[chunk].to(device))  # (j S F C), (j S F)
                p = torch.sigmoid(logit)  # (j S F)
                p_a.append(p.cpu())
                p_ac.append((p.unsqueeze(-1) * torch.softmax(sel, dim=-1)).cpu())  # (j S F C)
        # back to frame order: (J S F) -> (S J F) -> flat, the first T entries are frames 0..T-1
        p_a = torch.cat(p_a).transpose(0, 1).reshape(-1)[:T]  # (T)
        p_ac = torch.cat(p_ac).transpose(0, 1).reshape(-1, len(self.class_names_))[:T]  # (T C)
        return p_a.numpy().astype(np.float32), p_ac.numpy().astype(np.float32)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, np.ndarray]:
        return module_state(self.net_)

    def _extra_config(self) -> dict:
        return dict(self.train_summary_)

    @classmethod
    def _upgrade_v02(cls, meta, state):
        """0.2 also saved the context vectors and text projection (``prompt.*``, never read) and
        not the selector's ``num_batches_tracked`` (unused: its momentum is fixed)."""
        state = {k: v for k, v in state.items() if not k.startswith("prompt.")}
        state["selector.bn.num_batches_tracked"] = np.zeros((), np.int64)
        return meta, state

    @classmethod
    def _upgrade_v03(cls, meta):
        """Before 0.4 the head trained on unit rows with the paper's loss text, a per-step
        schedule, CamelCase-split class texts and N(0, 0.02) positions; its config now says so."""
        meta = super()._upgrade_v03(meta)
        before = dict(geometry="unit", losses="paper", schedule="step", class_text="words", pos_init_std=0.02,
                      beta2=0.98)
        return {**meta, "config": {**before, **meta.get("config", {})}}

    def _load_state(self, state, extra) -> None:
        dim, num_classes = state["prototype"].shape[0], state["directions"].shape[0]
        net = load_module_state(AnomalyClipNet(dim, num_classes, self.config), state)
        self.net_ = net.to(self._device()).eval()
        self.class_texts_ = list(extra.get("class_texts", []))
        self.history_ = []
        self.train_summary_ = dict(extra)
