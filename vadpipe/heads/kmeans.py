"""``kmeans``: responses to action prompts, cosine k-means on normal responses (Gao et al. 2024).

Each sampled frame (or short clip: the mean of ``window`` neighbouring frame embeddings,
renormalised) is described by its **response vector** (eq. 8): its cosine similarity to each
of N action prompts, by default the 400 Kinetics-400 class names. Normal training responses
are grouped by **spherical k-means** (cosine similarity, k-means++ initialisation) into M
normal modes; a frame's anomaly score is ``1 - max_m cos(response, centre_m)`` (eq. 9).
Optionally (``learn_prompts=True``: the paper's method) a CoOp context shared by all
prompts is learned first, "to enhance each normal sample's maximal response" (sec. 3.3): each normal
sample's pseudo-label is its best-matching plain prompt (eq. 4) and the context is trained
with the NCE / cross-entropy loss of eq. 3 over all N prompts, temperature 0.1, AdamW,
lr 2e-4, batch 128 (sec. 4.2). Text directions (plain or learned) are computed at fit time
with the cache's own open_clip model and stored with the head; scoring needs no text model.

Defaults and choices where the paper leaves room or its setting is unavailable:

* Features are the cache's per-frame CLIP embeddings; the paper's action-pretrained TFC
  clip encoder (9-frame clips) is not available, ``window`` mean-pools neighbouring
  sampled frames instead (default 1: frame-level).
* ``num_centers`` = 10 (the paper's value for Ped2 and Avenue; it uses 20 for ShanghaiTech:
  pass ``num_centers=20`` for large multi-scene datasets).
* Plain prompts (and the pseudo-labels) use the template "a video of {}."; the paper does
  not say. Learned prompts are ``[SOS] ctx_1..ctx_n <action> . [EOT]`` with n_ctx = 8 shared
  context vectors in front of the action (CoOp's "end" class position, via
  :class:`~vadpipe.heads.prompt_learner.PromptLearner`); eq. 5 draws the action between
  context vectors, a placement difference we accept to share one prompt learner.
* ``learn_prompts`` defaults to False although the paper learns the context (its presets
  turn it on): each step runs all N prompts through the text transformer forward and
  backward, a cost that does not shrink with the data (~0.4 TFLOP a step for ViT-B text
  towers with 400 prompts, packed: about 3 s a step, 10-12 minutes for 200 steps on 2 CPU
  cores, even for ten videos, where fixed prompts take seconds); and the paper pairs it with
  an action-pretrained encoder we do not have. ``prompt_steps`` (not given in the
  paper) = 200. The steps' samples are drawn up front (the same seeded draws as drawing step
  by step), so the normal videos are read three times -- to count the samples, to keep only
  the drawn ones (at most 200 x 128 of UCF-Crime's 353k normal frames), and for the
  responses after learning -- instead of holding every pooled sample (vadpipe 0.5.0).
* k-means++ samples each new centre with probability proportional to ``1 - max cos`` to
  the chosen ones (= half the squared Euclidean distance on the unit sphere, the usual D^2
  weighting); ``n_init`` = 5 restarts, the one with the highest total cosine is kept; an
  emptied cluster is re-seeded with the worst-fitting sample. Lloyd steps stop when the labels
  stop changing or when a step raises the total cosine by less than ``tol`` = 1e-5 of it (as
  scikit-learn's ``tol``, on the objective). Measured on the normal training frames of a
  UCF-Crime-shaped cache (``bench/bench_heads.py --scale 0.05``: 18,297 samples, 400
  responses, k = 10): the five restarts took 54, 67, 100 (cap), 100 (cap), 52 steps to a fixed
  point, mostly moving 1-14 labels a step; with ``tol`` 1e-5 they stop after 17, 39, 29, 25, 26
  steps (2.7x fewer) with a total cosine within 1.6e-4 of the fixed point's (``tol=0``: run to
  the fixed point, as vadpipe 0.4).
* The explanation of a frame is its best-responding prompt.
* ``preset=ped2|avenue|shanghaitech``: the paper's per-dataset settings (10 / 10 / 20 centres,
  learned prompts, 9-frame clips as ``window=9``). The paper scores detected objects (an
  unnamed detector): ``unit=object`` (its recipes do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import Head, ObjectUnits, Scores
from vadpipe.heads.prompts import load_prompt_list
from vadpipe.heads.training import l2_normalize, seeded
from vadpipe.memory import release_free_heap
from vadpipe.vectors import normalize_rows_, stack_rows

DEFAULT_PROMPTS = "kinetics400"
DEFAULT_TEMPLATES = ("a video of {}.",)
# prompts whose tower activations are held at once on a CPU, where RSS is the limit (Gao's 400
# through ViT-B-32: ~1.2 GB at once, ~0.25 GB in chunks of 100, for ~+40% a step; a GPU takes all)
CPU_PROMPT_CHUNK = 100
# Gao et al. 2024 sec. 4.2: "we set the number of cluster centers to 10 for the Ped2 dataset and Avenue dataset
# while 20 for the Shanghai Tech dataset"; learned prompts (AdamW, lr 0.0002, batch 128); clips of 9 frames
# (window=9 mean-pools 9 sampled frames: an approximation of the action-pretrained 9-frame clip encoder)
PRESETS: dict[str, dict] = {
    name: dict(num_centers=centres, learn_prompts=True, lr=2e-4, batch_size=128, temperature=0.1, window=9)
    for name, centres in (("ped2", 10), ("avenue", 10), ("shanghaitech", 20))
}


@dataclass
class KMeansConfig(ObjectUnits):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS

    preset: str | None = None  # ped2, avenue, shanghaitech: the paper's per-dataset setting (sec. 4.2)
    prompts: str | list[str] = DEFAULT_PROMPTS  # a built-in set, a text file (one per line), or a list
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    num_centers: int = 10  # M: 10 for Ped2/Avenue, 20 for ShanghaiTech (sec. 4.2)
    window: int = 1  # sampled frames mean-pooled into one clip (1 = frame-level)
    learn_prompts: bool = False  # the paper learns them; costly on CPU (see the module docstring)
    n_ctx: int = 8
    prompt_steps: int = 200
    batch_size: int = 128
    lr: float = 2e-4
    temperature: float = 0.1  # sigma of eq. 3
    n_init: int = 5
    max_iter: int = 100
    tol: float = 1e-5  # stop Lloyd steps when the total cosine rises by less than this fraction (docstring)
    seed: int = 0

    def __post_init__(self):
        if not self.tol >= 0:
            raise VadpipeError(f"kmeans: tol must be >= 0, got {self.tol}")
        for name in ("num_centers", "window", "n_ctx", "batch_size", "n_init", "max_iter"):
            if getattr(self, name) < 1:
                raise VadpipeError(f"kmeans: {name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_steps < 0:
            raise VadpipeError(f"kmeans: prompt_steps must be >= 0, got {self.prompt_steps}")
        if self.temperature <= 0 or self.lr <= 0:
            raise VadpipeError("kmeans: temperature and lr must be > 0")


def pool_window(emb: np.ndarray, window: int) -> np.ndarray:
    """Mean of the L2-normalised embeddings in a centred window of ``window`` samples
    (truncated at the ends of the video), renormalised. ``(T D) -> (T D)``."""
    x = l2_normalize(emb.astype(np.float32))  # (T D)
    if window <= 1 or len(x) == 0:
        return x
    T = len(x)
    csum = np.concatenate([np.zeros((1, x.shape[1]), np.float32), np.cumsum(x, axis=0)])  # (T+1 D)
    t = np.arange(T)
    lo, hi = np.maximum(t - (window - 1) // 2, 0), np.minimum(t + window // 2 + 1, T)
    return l2_normalize((csum[hi] - csum[lo]) / (hi - lo)[:, None])


def spherical_kmeans(
    x: np.ndarray, k: int, n_init: int = 5, max_iter: int = 100, seed: int = 0, tol: float = 0.0,
    copy: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means of the rows of ``x`` (normalised here): ``(centres (k D), labels (n))``.

    k-means++ seeding with weights ``1 - max cos``; Lloyd steps (assign to the most similar
    centre, centre = normalised sum of its members) until the labels stop changing or the total
    cosine rises by less than ``tol`` of itself; the best of ``n_init`` seeded restarts by total
    cosine similarity. ``copy=False`` normalises a float32 ``x`` in place (the caller's rows).
    """
    from scipy.sparse import csr_matrix

    x = np.asarray(x, np.float32)
    if copy or not x.flags.writeable:
        x = l2_normalize(x)  # (n D)
    else:
        normalize_rows_(x)  # as l2_normalize, without a copy
    n = len(x)
    if n < k:
        raise VadpipeError(f"kmeans: {n} normal training samples are fewer than num_centers={k}")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        centres = _kmeans_pp(x, k, rng)  # (k D)
        labels = np.full(n, -1)
        objective = -np.inf
        for _ in range(max_iter):
            sim = x @ centres.T  # (n k)
            new_labels = sim.argmax(axis=1)
            if np.array_equal(new_labels, labels):
                break
            previous, objective = objective, float(sim[np.arange(n), new_labels].sum())
            if objective - previous < tol * abs(objective):
                break  # the centres barely improve any more
            labels = new_labels
            members = csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
            sums = np.asarray(members @ x)  # (k D)
            counts = np.bincount(labels, minlength=k)
            fit = sim[np.arange(n), labels]
            for m in np.flatnonzero(counts == 0):  # re-seed an empty cluster with the worst-fitting sample
                worst = int(fit.argmin())
                sums[m], fit[worst] = x[worst], np.inf
            centres = l2_normalize(sums)
        sim = x @ centres.T  # (n k)
        labels = sim.argmax(axis=1)
        total = float(sim.max(axis=1).sum())
        if best is None or total > best[0]:
            best = (total, centres, labels)
    return best[1], best[2]


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    chosen = [int(rng.integers(n))]
    best_sim = x @ x[chosen[0]]  # (n)
    for _ in range(1, k):
        weight = np.clip(1.0 - best_sim, 0.0, None).astype(np.float64)
        total = weight.sum()
        i = int(rng.choice(n, p=weight / total)) if total > 0 else int(rng.integers(n))
        chosen.append(i)
        best_sim = np.maximum(best_sim, x @ x[i])
    return x[chosen].copy()


class KMeansHead(Head):
    name = "kmeans"
    Config = KMeansConfig

    @property
    def object_mode(self) -> str:
        """unit=object: objects one by one; with ``window`` > 1, Gao's object clip -- the mean over
        ``window`` sampled frames of the object's own track (9 = +-4), so one track at a time."""
        return "tracks" if self.config.window > 1 else "rows"

    def _fit(self, cache, manifest) -> None:
        from vadpipe.heads.text import embed_prompts, text_encoder_for

        cfg = self.config
        self.prompts_ = load_prompt_list(cfg.prompts)
        encoder = text_encoder_for(cache, self.encoder)
        plain = embed_prompts(encoder, self.prompts_, tuple(cfg.templates))  # (N D)
        self.ctx_, self.prompt_losses_ = None, []  # the context is for inspection: scoring uses prompt_emb_
        training = self.training_set(cache, manifest, normal=True)

        def pooled():  # the normal samples, video by video (read from the cache on each pass)
            return (pool_window(v.emb, cfg.window) for v in training.iter_videos())

        if cfg.learn_prompts and cfg.prompt_steps > 0:
            from vadpipe.heads.prompt_learner import PromptLearner

            with seeded(cfg.seed):  # the context's N(0, 0.02) init
                learner = PromptLearner(encoder.model, encoder.tokenizer, self.prompts_, n_ctx=cfg.n_ctx,
                                        shared_context=True)
            del encoder  # the learner holds its own copy of the text tower
            n = sum(len(rows) for rows in pooled())  # a first pass counts the samples
            self._check_samples(n)
            draws = draw_batches(n, cfg)
            needed = np.unique(np.concatenate(draws))  # the only samples the steps read
            feats = stack_rows(pick_rows(pooled(), needed))  # (u D)
            pseudo = (feats @ plain.T).argmax(axis=1)  # eq. 4: best plain prompt of each drawn sample
            batches = [np.searchsorted(needed, d) for d in draws]
            self.prompt_emb_, self.ctx_, self.prompt_losses_ = learn_prompt_context(
                learner, feats, pseudo, batches, cfg, self._device()
            )
            del learner, feats
        else:
            del encoder  # the text model is let go before the data are read (text_encoder_for does not cache it)
            self.prompt_emb_ = plain
        release_free_heap()  # the text tower's (and the steps') freed heap, before the responses are stacked
        # the responses of each video as it is read: the pooled rows are never all held
        responses = stack_rows(self.response_vectors(rows) for rows in pooled())
        self._check_samples(len(responses))
        self.centers_, _ = spherical_kmeans(
            responses, cfg.num_centers, cfg.n_init, cfg.max_iter, cfg.seed, cfg.tol, copy=False
        )  # (M N)

    def _check_samples(self, n: int) -> None:
        """k-means needs at least ``num_centers`` normal training samples."""
        k = self.config.num_centers
        if n < k:
            raise VadpipeError(f"kmeans: {n} normal training samples are fewer than num_centers={k}")

    def response_vectors(self, emb: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Eq. 8, as a transform (scikit-learn's ``transform``): the cosine of each (normalised)
        embedding ``(T D)`` to each prompt direction, ``(T N)``, ``chunk`` rows at a time (no
        normalised copy of all the rows). Scoring is ``score_videos``."""
        if len(emb) <= chunk:
            return l2_normalize(np.asarray(emb, np.float32)) @ self.prompt_emb_.T
        out = np.empty((len(emb), len(self.prompt_emb_)), np.float32)
        for i in range(0, len(emb), chunk):
            out[i : i + chunk] = l2_normalize(np.asarray(emb[i : i + chunk], np.float32)) @ self.prompt_emb_.T
        return out

    def _score_video(self, video) -> Scores:
        responses = self.response_vectors(pool_window(video.emb, self.config.window))  # (T N)
        closeness = l2_normalize(responses) @ self.centers_.T  # (T M)
        score = 1.0 - closeness.max(axis=1) if len(responses) else np.zeros(0, np.float32)  # eq. 9
        explanation = np.array(self.prompts_, dtype=object)[responses.argmax(axis=1)] if len(responses) else None
        return Scores(video.frame_index, score.astype(np.float32), video.num_frames, explanation=explanation)

    def _state(self) -> dict[str, np.ndarray]:
        return {"prompt_emb": self.prompt_emb_.astype(np.float32), "centers": self.centers_.astype(np.float32)}

    def _extra_config(self) -> dict:
        return {"prompts": self.prompts_, "prompt_losses": [round(v, 6) for v in self.prompt_losses_]}

    @classmethod
    def _upgrade_v02(cls, meta, state):
        return meta, {k: v for k, v in state.items() if k != "ctx"}  # 0.2 saved the context, never read

    def _load_state(self, state, extra) -> None:
        self.prompt_emb_, self.centers_ = state["prompt_emb"], state["centers"]
        self.prompts_ = list(extra["prompts"])
        self.prompt_losses_ = list(extra.get("prompt_losses", []))


def draw_batches(n: int, cfg: KMeansConfig) -> list[np.ndarray]:
    """The samples of each prompt-learning step: ``prompt_steps`` seeded draws of
    ``batch_size`` of the ``n`` normal samples without replacement (the draws vadpipe 0.5.0
    made step by step)."""
    rng = np.random.default_rng(cfg.seed)
    return [rng.choice(n, size=min(cfg.batch_size, n), replace=False) for _ in range(cfg.prompt_steps)]


def pick_rows(parts, rows: np.ndarray):
    """The rows numbered ``rows`` (sorted) of the concatenation of ``parts``, part by part."""
    offset = 0
    for part in parts:
        lo, hi = np.searchsorted(rows, [offset, offset + len(part)])
        yield part[rows[lo:hi] - offset]
        offset += len(part)


def learn_prompt_context(learner, feats: np.ndarray, pseudo: np.ndarray, batches: list[np.ndarray],
                         cfg: KMeansConfig, device: str = "cpu"):
    """Train ``learner``'s CoOp context, shared by all prompts, so each normal sample responds
    most to its pseudo-label prompt (eq. 3-6). Step ``i`` reads the rows ``batches[i]`` of
    ``feats``: only the drawn samples are held (200 steps of 128 read at most 25.6k of
    UCF-Crime's 353k normal frames); on a CPU the prompts' backward runs ``CPU_PROMPT_CHUNK`` at a
    time (:func:`~vadpipe.heads.training.backward_in_chunks`). Returns the normalised text directions ``(N D)``, the
    context ``(n_ctx W)`` and the loss of each logged step (first and every 20th)."""
    import torch
    import torch.nn.functional as F

    from vadpipe.heads.training import backward_in_chunks, decay_groups

    learner = learner.to(device).train()
    opt = torch.optim.AdamW(decay_groups(learner.named_parameters(), cfg.lr, 0.0))  # no decay (sec. 4.2 gives none)
    x = torch.from_numpy(np.ascontiguousarray(feats, np.float32)).to(device)  # (u D)
    y = torch.from_numpy(pseudo.astype(np.int64)).to(device)  # (u)
    losses: list[float] = []
    chunk = CPU_PROMPT_CHUNK if torch.device(device).type == "cpu" else None
    for step, batch in enumerate(batches):
        idx = torch.from_numpy(batch).to(device)

        def loss_of(text):  # (N E) -> the step's cross-entropy (eq. 6)
            logits = x[idx] @ F.normalize(text, dim=-1).T / cfg.temperature  # (B N)
            return F.cross_entropy(logits, y[idx])

        opt.zero_grad(set_to_none=True)
        loss = backward_in_chunks(learner, learner.n_cls, loss_of, chunk)
        opt.step()
        if step % 20 == 0 or step == len(batches) - 1:
            losses.append(loss.item())
    with torch.no_grad():
        text = F.normalize(learner.eval()(), dim=-1)  # (N D)
    return text.cpu().numpy().astype(np.float32), learner.ctx.detach().cpu().numpy(), losses
