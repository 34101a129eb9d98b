"""``clipassist``: CLIP-assisted detection with class descriptions, video mode (Dong 2024, Sec. 3.2).

Weak supervision: video-level labels of the manifest's ``train`` videos (see
:mod:`.common`). Each class (``normal`` first, then the anomaly classes) has a description
(``dong-categories``: Table 1 style) preceded by ``n_ctx`` = 16 class-specific learnable
context vectors, through the frozen text encoder (CoOp;
:class:`~vadpipe.heads.prompt_learner.PromptLearner`), giving class embeddings t_k (eq. 4).
Frames go through a *local transformer* (windows of ``window`` = 16 frames, ``layers`` = 1,
a learnable class token and position embeddings, eq. 5) and a *global temporal adapter*, a
lightweight GCN (eqs. 7-9)::

    f_g = ReLU([softmax(M_sim) f_l W_sim ; softmax(M_dis) f_l W_dis]),
    M_sim(i, j) = cos(f_l_i, f_l_j),  softmax(M_dis)(i, j) ∝ exp(-|i - j| / sigma)

The alignment map M(t, k) = cos(f_t, t_k); a class's similarity to the video is the mean
of its top-k frames; p = softmax(s / tau), tau = 0.07 (eq. 10); the loss is the cross
entropy of p with the video label plus lambda * sum_k max(0, cos(t_normal, t_k)) (eqs.
11-12). Frame scores come from the same map: p_t = softmax(M_t / tau), anomaly score
1 - p_t(normal), class probabilities p_t(k).

Paper defaults: context 16, window 16, 1 layer (Table 8), sigma 1, tau 0.07,
lambda 0.1 (printed "1 x 10 1", read as 1e-1 like the learning rate's "1 x 10 5" = 1e-5),
Adam, batch 64, lr 1e-5.

The paper's ablation rows are parameters: ``gcn=false`` -- Ours-Video(Local) and Table 10's
"w/o GCN"; ``temporal=false`` -- Table 10's "w/o Temporal Module" (the frames straight into
the alignment); ``classifier=true`` -- Tables 4-5's "CLIP + Classifier" (with
``temporal=false``) and "CLIP + Local + Global + Classifier": a linear classifier on the
(temporal module's) frame features in place of the text alignment, trained by binary cross
entropy on each video's top-k mean logit, score = its sigmoid (no classes, no texts);
``prompt_template="a photo of {}"`` with ``class_text="category"`` -- Table 6's hand-crafted
"a photo of [Category]" (no learned context: fixed text embeddings), ``class_text="category"``
alone -- "Learnable Prompt + [Category]"; ``shared_context=true`` -- Table 9's "Middle" (one
context shared by all descriptions; the paper's "End" is class-specific).

Choices where the paper is silent or ambiguous:

* eq. 7 ``[softmax(M_sim); softmax(M_dis)] f W`` is read as Wu et al. 2020's two graph
  convolutions concatenated along features (W_sim, W_dis: D -> D/2 each), followed by an
  output projection and a residual, f = f_l + W_out f_g, so the adapter returns D dims;
* eq. 9 prints M_dis = -|i - j| / sigma inside the softmax of eq. 7, which is exactly the
  row-normalised exp(-|i - j| / sigma) of Wu et al.; padded frames are masked out;
* the transformer's attention/MLP output projections and W_out start at zero, so the
  temporal module starts as the identity and training starts from CLIP's zero-shot
  alignment; frames enter the transformer scaled by sqrt(D) (unit scale per dimension);
  the class token takes part in each window's attention, its output is not used;
* a class with several descriptions gets one text: them joined with ", ";
* at scoring a video longer than ``max_frames`` is cut into chunks of ``max_frames``, each
  its own graph (as VadCLIP);
* a category's text (``class_text="category"``) is its name, CamelCase split ("road
  accidents"); the normal class's is "normal";
* ShanghaiTech: with no ``descriptions`` given, a ShanghaiTech manifest gets
  ``dong-shanghaitech`` (Sec. 3.1.2: bicycles, vehicles and running are anomalies there; its
  texts are vadpipe's), any other dataset ``dong-categories``;
* ``epochs`` (not in the paper): see :mod:`.common`.

Needs a CLIP-style text tower (CoOp): open_clip CLIP and CoCa towers both work. Saved:
the temporal module and the class text embeddings (:class:`VideoModel`'s ``state_dict``);
the context vectors only serve to compute those embeddings and are not saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Scores
from vadpipe.heads.clipassist.common import (
    DescriptionConfig,
    DescriptionHead,
    backward_in_micro_batches,
    fit_adam,
    pad_batch,
)
from vadpipe.heads.clipassist.net import TemporalModule, alignment_map, classifier_loss, video_loss
from vadpipe.heads.training import backward_rows, detached_rows
from vadpipe.texts import check_template

# videos whose temporal-module activations are held at once on a CPU, where RSS is the limit (a
# batch of 64 x 256 frames at 512-d: ~0.75 GB at once, ~0.05 GB in parts of 4; a GPU takes the batch),
# and class prompts whose text-tower activations are (16 context vectors + a description through
# ViT-B-32's 12 layers: ~14 MB a prompt). UCF-Crime size, 2 cores (docs/benchmarks.md): the whole
# batch 2,637 MiB; parts of 16, prompts at once 1,928 MiB, 3.6 s a step; 8 and 4: 1,689 MiB, 3.5 s;
# 4 and 2: 1,545 MiB (1.89x the features), 3.8 s
CPU_MICRO_BATCH = 4
CPU_PROMPT_CHUNK = 2


@dataclass
class ClipAssistConfig(DescriptionConfig):
    n_ctx: int = 16  # learnable context vectors per class (CoOp)
    window: int = 16  # frames per local-transformer window
    layers: int = 1  # local transformer layers
    dropout: float = 0.0
    sigma: float = 1.0  # range of the GCN's distance adjacency, in frames (eq. 9)
    tau: float = 0.07  # softmax temperature of the class similarities (eq. 10)
    lam: float = 0.1  # lambda: weight of the normal-vs-abnormal text contrast (eq. 12)
    gcn: bool = True  # the global temporal adapter (False: local transformer only)
    temporal: bool = True  # the temporal module (False: Table 10 "w/o Temporal Module")
    classifier: bool = False  # a linear classifier instead of the text alignment (Tables 4-5 baselines)
    class_text: str = "description"  # description (Table 1 style) or category (the class name)
    prompt_template: str | None = None  # e.g. "a photo of {}": fixed prompts, no learned context (Table 6)
    shared_context: bool = False  # one context for all classes (Table 9 "Middle")

    def __post_init__(self):
        super().__post_init__()
        for name in ("sigma", "tau"):
            if not getattr(self, name) > 0:
                raise VadpipeError(f"clipassist: {name} must be > 0, got {getattr(self, name)}")
        for name in ("n_ctx", "window", "layers"):
            if getattr(self, name) < 1:
                raise VadpipeError(f"clipassist: {name} must be >= 1, got {getattr(self, name)}")
        if self.lam < 0 or not 0 <= self.dropout < 1:
            raise VadpipeError("clipassist: lam must be >= 0, dropout in [0, 1)")
        if self.class_text not in ("description", "category"):
            raise VadpipeError(f"clipassist: class_text must be description or category, got {self.class_text!r}")
        if self.prompt_template is not None:
            check_template(self.prompt_template, where="clipassist: ")


class VideoModel(nn.Module):
    """A fitted ``clipassist``: the temporal module and one text embedding per class (normal
    first), or -- the classifier baselines -- a linear classifier instead of the texts."""

    def __init__(self, temporal: TemporalModule, text: torch.Tensor | None, classifier: nn.Linear | None = None):
        super().__init__()
        self.temporal = temporal
        self.register_buffer("text", text)  # (C+1 D), unit rows; None with a classifier
        self.classifier = classifier

    def class_probs(self, f: np.ndarray, max_frames: int, tau: float) -> np.ndarray:
        """softmax(M_t / tau) per frame ``(T C+1)`` -- or, with a classifier, ``(T 2)``: 1 - p, p
        -- the video cut into chunks of ``max_frames``."""
        out = []
        width = 2 if self.classifier is not None else len(self.text)
        with torch.no_grad():
            for start in range(0, len(f), max_frames):
                x = torch.from_numpy(f[start : start + max_frames])[None]  # (1 T D)
                valid = torch.ones(x.shape[:2], dtype=torch.bool)  # (1 T)
                h = self.temporal(x, valid)  # (1 T D)
                if self.classifier is not None:
                    p = torch.sigmoid(self.classifier(h)[0])  # (T 1)
                    out.append(torch.cat([1 - p, p], dim=-1).numpy())
                else:
                    out.append((alignment_map(h, self.text)[0] / tau).softmax(dim=-1).numpy())  # (T C+1)
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)


class ClipAssistHead(DescriptionHead):
    name = "clipassist"
    Config = ClipAssistConfig
    mode = "video"
    default_descriptions = "dong-categories"

    def _fit_texts(self, text_encoder, pset, per_class, device):
        """``None`` (the classifier baselines: no texts), fixed text embeddings
        (``prompt_template``) or the prompt learner (holding its own copy of the text tower)."""
        from vadpipe.heads.prompt_learner import PromptLearner
        from vadpipe.heads.prompts import class_prompt
        from vadpipe.heads.text import embed_prompts

        cfg = self.config
        if cfg.classifier:  # the "CLIP + Classifier" baselines: no texts at all
            self.texts_ = ["normal", "anomaly"]
            return None
        if cfg.class_text == "category":
            self.texts_ = ["normal"] + [class_prompt(c) for c in self.class_names_]
        else:
            if not pset.normal:
                raise VadpipeError(f"{pset.path}: clipassist needs a 'normal' description")
            self.texts_ = [", ".join(pset.normal)] + [", ".join(t) for t in per_class]
        if cfg.prompt_template is not None:  # hand-crafted prompts: fixed text embeddings
            return torch.from_numpy(embed_prompts(text_encoder(), self.texts_, (cfg.prompt_template,))).to(device)  # (C D)
        # the prompt learner first, then the module: the seeded draws of vadpipe 0.2
        encoder = text_encoder()
        return PromptLearner(encoder.model, encoder.tokenizer, self.texts_, n_ctx=cfg.n_ctx,
                             shared_context=cfg.shared_context).to(device).train()

    def _fit_descriptions(self, texts, videos, frames, labels, device, generator) -> None:
        cfg = self.config
        dim = int(videos.parts[0].shape[1])  # the cache's feature width (= its text tower's)

        def temporal_module() -> TemporalModule:
            net = TemporalModule(dim, cfg.window, cfg.layers, cfg.sigma, cfg.dropout, cfg.gcn and cfg.temporal,
                                 local=cfg.temporal)
            return net.to(device).train()

        cpu = torch.device(device).type == "cpu"
        micro, prompt_chunk = (CPU_MICRO_BATCH, CPU_PROMPT_CHUNK) if cpu else (None, None)
        if texts is None:  # the "CLIP + Classifier" baselines
            net, linear = temporal_module(), nn.Linear(dim, 1).to(device)
            anomalous = labels > 0

            def classifier_loss_of(part, _):
                x, valid = pad_batch([videos[i] for i in part], device)  # (B T D), (B T)
                return classifier_loss(linear(net(x, valid))[..., 0], valid, anomalous[part].to(device), cfg.topk)

            def classifier_batch_loss(idx):
                return backward_in_micro_batches(idx, classifier_loss_of, None, micro)

            self.final_loss_ = fit_adam([*net.parameters(), *linear.parameters()], classifier_batch_loss, len(videos),
                                        cfg, generator)
            self.model_ = VideoModel(net.eval().cpu(), None, linear.eval().cpu()).eval()
            return
        net = temporal_module()
        if isinstance(texts, torch.Tensor):  # fixed prompts
            prompts, params = (lambda: texts), list(net.parameters())
            if not params and cfg.epochs != 0:
                raise VadpipeError("clipassist: fixed prompts (prompt_template) without a temporal module leave nothing "
                                   "to train; pass epochs=0 for CLIP with these prompts")
        else:  # the prompt learner
            prompts, params = texts, [p for p in [*net.parameters(), *texts.parameters()] if p.requires_grad]

        def loss_of(part, text):
            x, valid = pad_batch([videos[i] for i in part], device)  # (B T D), (B T)
            align = alignment_map(net(x, valid), text)  # (B T C)
            return video_loss(align, valid, labels[part].to(device), text, cfg.tau, cfg.lam, cfg.topk)

        def batch_loss(idx):
            if prompt_chunk is None or isinstance(texts, torch.Tensor):
                return backward_in_micro_batches(idx, loss_of, prompts(), micro)  # (C D): the prompts once a step
            # a CPU: the prompts too run (and backpropagate) a few at a time
            n = texts.n_cls
            text = detached_rows(texts, n, prompt_chunk)  # (C D), a leaf
            loss = backward_in_micro_batches(idx, loss_of, text, micro)
            if text.grad is not None:
                backward_rows(texts, n, text.grad, prompt_chunk)
            return loss

        self.final_loss_ = fit_adam(params, batch_loss, len(videos), cfg, generator)
        net.eval()
        with torch.no_grad():
            text = F.normalize(prompts(), dim=-1).cpu()  # (C D)
        self.model_ = VideoModel(net.cpu(), text).eval()

    @property
    def net_(self) -> TemporalModule:
        return self.model_.temporal

    def _score_video(self, video) -> Scores:
        f = video.emb.astype(np.float32)  # (T D)
        probs = self.model_.class_probs(f, self.config.max_frames, self.config.tau)  # (T C+1), normal first
        if self.model_.classifier is not None:  # no classes: the anomaly probability only
            return Scores(video.frame_index, probs[:, 1].astype(np.float32), video.num_frames)
        return self._scores(video, 1.0 - probs[:, 0], probs[:, 1:], probs)

    @classmethod
    def _upgrade_v02(cls, meta, state):
        """0.2 saved ``net.*``, ``text_emb`` and the never-read ``ctx``."""
        meta, state = super()._upgrade_v02(meta, state)
        renamed = {("temporal." + k[4:] if k.startswith("net.") else k): v for k, v in state.items() if k != "ctx"}
        renamed["text"] = renamed.pop("text_emb")
        return meta, renamed

    def _new_model(self, state) -> VideoModel:
        cfg = self.config
        if "classifier.weight" in state:
            dim, text, linear = state["classifier.weight"].shape[1], None, nn.Linear(state["classifier.weight"].shape[1], 1)
        else:
            dim, text, linear = state["text"].shape[1], torch.zeros(state["text"].shape), None
        temporal = TemporalModule(dim, cfg.window, cfg.layers, cfg.sigma, cfg.dropout, cfg.gcn and cfg.temporal,
                                  local=cfg.temporal)
        return VideoModel(temporal, text, linear)
