"""Report figures (PNG): a score timeline per video, pooled ROC and PR curves.

matplotlib is imported inside the functions and drawn through the Agg canvas of a
``Figure`` object (no pyplot, no global backend switch), so importing vadpipe stays fast
and plotting works headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vadpipe.evaluate.protocol import fmt

_MAX_CURVE_POINTS = 20_000  # a pooled curve over millions of frames is thinned for drawing


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _thin(*curves: np.ndarray) -> list[np.ndarray]:
    n = len(curves[0])
    if n <= _MAX_CURVE_POINTS:
        return list(curves)
    keep = np.unique(np.linspace(0, n - 1, _MAX_CURVE_POINTS).round().astype(np.int64))
    return [c[keep] for c in curves]


def plot_timeline(path: Path, scores: np.ndarray, gt_spans: list[tuple[int, int, str]], title: str,
                  first_frame: int = 0, evidence: list | None = None) -> Path:
    """Expanded score per frame (``scores[0]`` is frame ``first_frame``) with the ground-truth
    spans (in frames) shaded and labelled. ``evidence`` (heads scoring objects): ``(Evidence,
    RGB frame or None)`` pairs, marked on the timeline and shown below it with the object's box."""
    rows = 2 if evidence else 1
    fig = _figure(10, 2.6 if rows == 1 else 6.2)
    ax = fig.add_subplot(rows, 1, 1) if rows == 1 else fig.add_axes((0.07, 0.66, 0.915, 0.28))
    frames = first_frame + np.arange(len(scores))
    for i, (start, end, text) in enumerate(gt_spans):
        ax.axvspan(start - 0.5, end - 0.5, color="tab:red", alpha=0.22, lw=0,
                   label="ground truth" if i == 0 else None)
        ax.annotate(text, xy=((start + end) / 2, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, -2), textcoords="offset points", ha="center", va="top",
                    fontsize=7, color="tab:red")
    ax.step(frames, scores, where="mid", color="tab:blue", lw=1.0, label="score")  # one value per frame
    ax.set_xlim(first_frame - 0.5, first_frame + max(len(scores) - 0.5, 0.5))
    ax.set_xlabel("frame")
    ax.set_ylabel("anomaly score")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3, lw=0.5)
    if not evidence:
        fig.subplots_adjust(left=0.07, right=0.985, bottom=0.2, top=0.88)  # fixed: tight_layout is slow
        return _save(fig, path)
    from matplotlib.patches import Rectangle

    width = 0.915 / len(evidence)
    for i, (ev, rgb) in enumerate(evidence):
        ax.axvline(ev.frame, color="tab:orange", lw=0.8, ls=":")
        ax.annotate(str(i + 1), xy=(ev.frame, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                    textcoords="offset points", fontsize=7, color="tab:orange")
        sub = fig.add_axes((0.07 + i * width, 0.04, width - 0.01, 0.5))
        sub.set_axis_off()
        x1, y1, x2, y2 = ev.box
        if rgb is not None:
            sub.imshow(rgb)
            sub.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="tab:orange", lw=1.5))
        else:
            sub.text(0.5, 0.5, "(video not readable here)", ha="center", va="center", fontsize=7)
        sub.set_title(f"{i + 1}: frame {ev.frame}, score {ev.score:.3g}\n{ev.explanation[:60]}", fontsize=7)
    return _save(fig, path)


def plot_roc(path: Path, labels: np.ndarray, scores: np.ndarray, auc: float) -> Path:
    """Pooled frame-level ROC curve."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = _thin(fpr, tpr)
    fig = _figure(4.8, 4.6)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:blue", lw=1.5, label=f"micro AUC = {fmt(auc)}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    _square_axes(ax, "false positive rate", "true positive rate", f"ROC, {len(labels):,} frames pooled")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_pr(path: Path, labels: np.ndarray, scores: np.ndarray, ap: float) -> Path:
    """Pooled frame-level precision-recall curve, with the positive rate as chance level."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    precision, recall = _thin(precision, recall)
    rate = float(np.mean(labels))
    fig = _figure(4.8, 4.6)
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", color="tab:blue", lw=1.5, label=f"AP = {fmt(ap)}")
    ax.axhline(rate, color="grey", lw=0.8, ls="--", label=f"chance = {rate:.3f}")
    _square_axes(ax, "recall", "precision", f"precision-recall, {len(labels):,} frames pooled")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _square_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, lw=0.5)
