"""AnomalyCLIP's MIL selection and training losses (Zanella et al. 2024, eqs. 5-14).

Shapes: a batch of ``B`` clips, each ``S`` segments of ``F`` frames; ``C`` anomaly classes.
``sel`` holds the selector's likelihoods S(x) (after batch norm), ``logit`` the temporal
model's pre-sigmoid output, so p_A = sigmoid(logit). Log-probabilities are computed from
logits (``logsigmoid``, ``log_softmax``) rather than as ``log(p)``: the same quantities,
without the clamping that ``log`` of a saturated sigmoid needs.

Each loss is its own function of the frames it acts on (unit-tested one by one);
:func:`anomalyclip_loss` selects those frames (MIL top-K / bottom-K) and adds them up, eq. 14.

Two terms are aggregated differently in the authors' code (``src/models/components/loss.py``
@ 6e58b6e) and the paper's text; ``losses="code"`` (default: it produced the published
numbers) or ``"paper"`` chooses:

* L_N^DIR (eq. 10): the code takes the **max over classes** of each normal frame's S(x),
  then the mean over frames (``nsimilarity.max(dim=1)[0].mean()``); the text averages over
  frames and classes.
* L_smo (eq. 13): both square the differences (the printed plain sum telescopes to
  p_last - p_first); the code **sums** them over the flattened anomalous half of the batch
  (B/2 * S * F scores, the B/2 - 1 boundaries between clips included, the last score
  paired with itself), the text's reading is one sum per clip, averaged over clips -- 32x weaker at B/2 = 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- MIL selection
def segment_likelihood(sel: torch.Tensor) -> torch.Tensor:
    """Eq. 5: a segment's likelihood is the sum over its frames. (B S F C) -> (B S C)."""
    return sel.sum(dim=2)


def keep_mask(scores: torch.Tensor, mask_ratio: float, k: int) -> torch.Tensor:
    """Random segment masking before MIL selection (paper App. A: 70% masked).

    ``scores`` are uniform draws ``(B S)``; a segment is kept when its draw is at least
    ``mask_ratio``. The ``k`` segments with the largest draws are always kept, so every
    clip still offers ``k`` candidates (the paper does not say what happens otherwise).
    """
    keep = scores >= mask_ratio  # (B S)
    top = scores.topk(k, dim=1).indices  # (B k)
    return keep.scatter(1, top, True)


def select_segments(seg_scores: torch.Tensor, keep: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    """Indices ``(B k)`` of the ``k`` kept segments with the largest (or smallest) score."""
    fill = float("-inf") if largest else float("inf")
    masked = seg_scores.masked_fill(~keep, fill)  # (B S)
    return masked.topk(k, dim=1, largest=largest).indices  # (B k)


def gather_segments(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` (B S F ...) at segment indices ``idx`` (B k) -> (B k F ...)."""
    shape = idx.shape + (1,) * (x.dim() - 2)
    return x.gather(1, idx.view(shape).expand(-1, -1, *x.shape[2:]))


# ---------------------------------------------------------------- loss terms
def loss_anomalous_direction(sel_top: torch.Tensor) -> torch.Tensor:
    """Eq. 7, L_A^DIR: minus the mean selector likelihood of the labelled class over the
    frames of the top-K segments. ``sel_top`` (Ba K F): already indexed by each clip's class."""
    return -sel_top.mean()


def loss_anomalous_top(logit_top: torch.Tensor, sel_top: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 8, L_A+: cross-entropy on p_{A,c} = p_A * softmax(S(x))_c over the top-K frames.

    ``logit_top`` (Ba K F), ``sel_top`` (Ba K F C) all classes, ``labels`` (Ba) class index.
    """
    log_p_class = F.log_softmax(sel_top, dim=-1)  # (Ba K F C)
    idx = labels.view(-1, 1, 1, 1).expand(-1, *sel_top.shape[1:3], 1)  # (Ba K F 1)
    log_p_ac = F.logsigmoid(logit_top) + log_p_class.gather(-1, idx).squeeze(-1)  # (Ba K F)
    return -log_p_ac.mean()


def loss_normal_frames(logit: torch.Tensor) -> torch.Tensor:
    """Eqs. 9 and 11 (L_A-, L_N+): cross-entropy towards p_N = 1 - p_A on the given frames."""
    return -F.logsigmoid(-logit).mean()


def loss_normal_direction(sel_normal: torch.Tensor, mode: str = "code") -> torch.Tensor:
    """Eq. 10, L_N^DIR over the frames of normal clips ``(Bn S F C)``: ``code`` -- mean over
    frames of the max over classes; ``paper`` -- mean over frames and classes."""
    return sel_normal.max(dim=-1).values.mean() if mode == "code" else sel_normal.mean()


def loss_sparsity(logit_anomalous: torch.Tensor) -> torch.Tensor:
    """Eq. 12: mean p_A over all frames of the anomalous clips ``(Ba S F)``."""
    return torch.sigmoid(logit_anomalous).mean()


def loss_smoothness(logit_anomalous: torch.Tensor, mode: str = "code") -> torch.Tensor:
    """Eq. 13 with squared differences over the anomalous clips ``(Ba S F)``: ``code`` -- one
    sum over all their scores flattened (clip boundaries included); ``paper`` -- each clip's
    sum over its S*F frames, averaged over clips."""
    if mode == "code":
        p = torch.sigmoid(logit_anomalous).reshape(-1)  # (Ba*S*F)
        return (p[1:] - p[:-1]).pow(2).sum()
    p = torch.sigmoid(logit_anomalous).flatten(1)  # (Ba S*F)
    return (p[:, 1:] - p[:, :-1]).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------- the objective
def anomalyclip_loss(
    sel: torch.Tensor,
    logit: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
    k: int,
    lambda_sparsity: float,
    lambda_smoothness: float,
    mode: str = "code",
) -> dict[str, torch.Tensor]:
    """Eq. 14 on one balanced batch.

    ``sel`` (B S F C) selector likelihoods, ``logit`` (B S F) temporal logits, ``labels``
    (B) class index of anomalous clips and -1 for normal ones, ``keep`` (B S) segments that
    survive the random masking. Top-K / bottom-K segments of an anomalous clip are ranked by
    the selector on its labelled class (eq. 5); those of a normal clip (eq. 11, where the
    paper names no class) by the selector summed over classes, as in the authors' code.
    ``mode``: the aggregation of L_N^DIR and L_smo (module docstring). Returns every term and ``total``.
    """
    anomalous = labels >= 0  # (B)
    if not anomalous.any() or anomalous.all():
        raise ValueError("a training batch needs both anomalous and normal clips")
    with torch.no_grad():
        seg = segment_likelihood(sel)  # (B S C)
    a_labels = labels[anomalous]  # (Ba)
    a_seg = seg[anomalous].gather(2, a_labels.view(-1, 1, 1).expand(-1, seg.shape[1], 1)).squeeze(2)  # (Ba S)
    a_top = select_segments(a_seg, keep[anomalous], k, largest=True)  # (Ba K)
    a_bottom = select_segments(a_seg, keep[anomalous], k, largest=False)  # (Ba K)
    n_top = select_segments(seg[~anomalous].sum(-1), keep[~anomalous], k, largest=True)  # (Bn K)

    a_sel, a_logit = sel[anomalous], logit[anomalous]  # (Ba S F C), (Ba S F)
    a_sel_top = gather_segments(a_sel, a_top)  # (Ba K F C)
    a_sel_top_c = a_sel_top.gather(-1, a_labels.view(-1, 1, 1, 1).expand(-1, *a_sel_top.shape[1:3], 1)).squeeze(-1)
    terms = {
        "anomalous_direction": loss_anomalous_direction(a_sel_top_c),
        "anomalous_top": loss_anomalous_top(gather_segments(a_logit, a_top), a_sel_top, a_labels),
        "anomalous_bottom": loss_normal_frames(gather_segments(a_logit, a_bottom)),
        "normal_direction": loss_normal_direction(sel[~anomalous], mode),
        "normal_top": loss_normal_frames(gather_segments(logit[~anomalous], n_top)),
        "sparsity": loss_sparsity(a_logit),
        "smoothness": loss_smoothness(a_logit, mode),
    }
    total = sum(v for name, v in terms.items() if name not in ("sparsity", "smoothness"))
    terms["total"] = total + lambda_sparsity * terms["sparsity"] + lambda_smoothness * terms["smoothness"]
    return terms
