"""Training curve of the ``clipassist`` head (Dong 2024) at the paper's lr: how many epochs?

Dong 2024 gives Adam, batch 64, lr 1e-5 and no epoch count. Adam moves each weight by about
lr per step, so the number of steps (``ceil(videos / 64)`` per epoch: 26 on UCF-Crime's 1610
training videos) decides how far training gets. This benchmark measures, on a planted
weakly-labelled cache the size of UCF-Crime's training set, the held-out frame AUC, the
training loss and the drift of the trainable parameters after each epoch.

**Cache** (written once under ``--dir``, reused): UCF-Crime's counts -- 800 normal + 810
anomalous training videos (the 13 classes in turn; video-level labels only), 150 normal +
140 anomalous test videos (frame intervals) -- each ``--frames`` sampled frames (default 256,
``max_frames``, so training never subsamples and each test video is one graph), D = 512, under
``ViT-B-32:random``: a randomly initialised ViT-B-32 open_clip model (vadpipe rebuilds its text
tower from the cache recipe, offline; the head runs CoOp through it). Features are built on
that model's text embeddings of the head's own descriptions (``dong-categories``), ``e_k`` for
class k, ``e_n`` for ``normal``; ``m`` is their mean and ``d_k = unit(e_k - m)`` the part that
tells class k apart (every vector below is a unit vector, every coefficient fixed):

* a video's scene ``s_v = unit(g + 0.8 z_v)``: ``g`` shared, ``z_v`` random per video;
* frame t: ``s_v + 0.35 n_t`` (``n_t`` random per frame) + the shifts below; the head scales
  rows to unit length (featurize stores raw rows, recipe ``normalised: false``);
* **anomaly** (anomalous videos, one segment of T/8..T/2 frames): ``+ 0.6 a_c`` with
  ``a_c = unit(0.15 d_c + r_c)``, ``r_c`` a random direction orthogonal to every text
  embedding: the anomaly is only weakly aligned with its class's description, so the
  text alone does not find it;
* **nuisance 1, decoys** (half of all videos, normal ones included, one segment of
  T/8..T/4 frames): ``+ 0.6 d_k`` for a random class k -- exactly what a description-based
  zero-shot detector fires on, but normal;
* **nuisance 2, scene bias** (every video): ``+ 0.25 d_j`` for a random class j over the
  whole video (scenes that "look like" a class description).

At initialisation (epochs = 0: random CoOp context, temporal module = identity) the head is
close to chance (the decoys outrank most anomalies); the video labels let it learn that
``r_c`` is class c and that the decoys are normal.

**Measurement.** One ``get_head("clipassist", lr=..., epochs=max(EPOCHS)).fit(...)`` per
learning rate; after each epoch listed the scores of the test videos are computed from the
head's own modules at that point (``VideoModel``: the temporal module and the normalised CoOp
text embeddings, exactly what ``fit`` stores) and the frame AUC is taken. Training is seeded
and Adam has no schedule, so the head after epoch e of a longer fit *is* the head that
``epochs=e`` gives (same initialisation, same shuffles); epoch 0 is the ``epochs=0`` head. The
hook wraps the batch-loss closure that ``clipassist`` hands to ``fit_adam`` (it evaluates at
the first batch of the next epoch, before any step, and after ``fit`` for the last), so the
library's own training loop runs unchanged; at the end the fitted head is scored through the
public ``score_videos`` and its AUC must equal the last row. Drift: max |p - p0| over the
context vectors (init N(0, 0.02)) and over the temporal module's weights, p0 = epoch 0.

Speed: the CoOp prompts (14 classes) go through the 12-layer text tower forward and backward
at every step, whatever the video batch (cut after their end-of-text token by the prompt
learner). On 2 busy CPU cores a ViT-B-32 step takes seconds, so a CPU run uses a shorter
``--frames`` and fewer epochs; ``--device cuda`` runs the full size.

    python bench/clipassist_schedule.py [--frames 256] [--epochs 0,1,2,5,10,20,40,80]
        [--lr 1e-5] [--compare 1e-4:1,2 1e-3:1,2] [--device cpu] [--threads 2]
        [--budget-min 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from ucf_sized import CLASSES, counts, write_videos

SHIFT, ALIGN, DECOY, BIAS, NOISE, SCENE = 0.6, 0.15, 0.6, 0.25, 0.35, 0.8


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def build(root: Path, key: str, frames: int, scale: float, seed: int = 0) -> None:
    """The planted cache (module docstring) and its manifest."""
    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import Interval, Manifest, VideoEntry
    from vadpipe.encoders import load_clip
    from vadpipe.heads.prompts import load_prompt_set
    from vadpipe.heads.text import embed_prompts

    n, T = counts(scale), frames
    rng = np.random.default_rng(seed)
    enc = load_clip(key)
    D = enc.dim
    pset = load_prompt_set("dong-categories")
    texts = [", ".join(pset.normal)] + [", ".join((pset.classes[c],) if isinstance(pset.classes[c], str)
                                                  else pset.classes[c]) for c in CLASSES]
    e = embed_prompts(enc, texts, ("{}",)).astype(np.float64)  # (14 D), unit rows
    d = unit(e[1:] - e.mean(axis=0))  # (13 D): what tells each class apart
    q, _ = np.linalg.qr(e.T)  # (D 14): basis of the text span
    r = rng.normal(size=(len(CLASSES), D))
    r = unit(r - (r @ q) @ q.T)  # orthogonal to every text embedding
    a = unit(ALIGN * d + r)  # weakly aligned anomaly directions
    g = unit(rng.normal(size=D))
    cos = e @ e.T
    print(f"text embeddings of {key}: mean pairwise cos {cos[np.triu_indices(len(e), 1)].mean():.3f}; "
          f"cos(anomaly dir, own description) mean {np.mean(np.sum(a * e[1:], axis=1)):.3f}", flush=True)

    cache = FeatureCache(root / "cache.zarr", mode="a")
    cache.ensure_encoder(key, {**enc.recipe(), "sampling": {"mode": "planted-clipassist-schedule"},
                               "normalised": False})
    entries = []

    def segment(lo, hi):
        length = int(rng.integers(max(1, lo), max(2, hi) + 1))
        start = int(rng.integers(0, T - length + 1))
        return start, length

    def video(vid: str, split: str, label: str) -> None:
        emb = unit(g + SCENE * unit(rng.normal(size=D))) + NOISE * unit(rng.normal(size=(T, D)))
        emb += BIAS * d[rng.integers(len(CLASSES))]
        if rng.random() < 0.5:
            s, length = segment(T // 8, T // 4)
            emb[s : s + length] += DECOY * d[rng.integers(len(CLASSES))]
        intervals = ()
        if label != "normal":
            s, length = segment(T // 8, T // 2)
            emb[s : s + length] += SHIFT * a[CLASSES.index(label)]
            intervals = (Interval(s, s + length),)
        cache.write_video(key, vid, np.arange(T), np.arange(T) / 30.0, emb.astype(np.float16),
                          {"num_frames": T, "fps": 30.0})
        entries.append(VideoEntry(vid, f"{vid}.mp4", split, label, intervals if split == "test" else (),
                                  num_frames=T))

    write_videos(n, video)
    Manifest(entries).save(root / "manifest.csv")


# ------------------------------------------------------------------ the measured fit
class OutOfTime(Exception):
    pass


def frame_auc(manifest, scores) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([manifest[v].frame_labels(s.num_frames)[s.frame_index] for v, s in scores.items()])
    return float(roc_auc_score(y, np.concatenate([s.score for s in scores.values()])))


def measured_fit(cache, manifest, test_videos, lr: float, epochs: list[int], args) -> list[dict]:
    """One fit to max(epochs); a row (AUC, loss, drift, time) after each epoch in ``epochs``."""
    import torch
    import torch.nn.functional as F

    import vadpipe.heads.clipassist.video as video_mod
    from vadpipe.heads import get_head
    from vadpipe.heads.clipassist.video import VideoModel

    head = get_head("clipassist", lr=lr, epochs=max(epochs), batch_size=args.batch_size, seed=args.seed,
                    device=args.device)
    n_train = len(manifest.select(split="train"))
    per_epoch = math.ceil(n_train / args.batch_size)
    epochs = sorted({0, *epochs})  # epoch 0 (the epochs=0 head) is the reference of the drift
    rows, state = [], {"calls": 0, "losses": [], "last_epoch": [], "train_s": 0.0, "t": None}
    original = video_mod.fit_adam

    def evaluate(cells, epoch):
        net, prompts = cells["net"], cells["prompts"]
        train_s = state["train_s"] + (time.perf_counter() - state["t"] if state["t"] else 0.0)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            text = F.normalize(prompts(), dim=-1).cpu()
            if epoch == 0:
                state["ctx0"] = prompts.ctx.detach().cpu().clone()
                state["net0"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            # the head as epochs=epoch stores it; scored by its own _score_video (= score_videos)
            head.model_ = VideoModel(net, text)  # holds the training module itself, not a copy
            scores = {v.video_id: head._score_video(v) for v in test_videos}
            ctx_drift = float((prompts.ctx.detach().cpu() - state["ctx0"]).abs().max())
            drift = {k: float((v.detach().cpu() - state["net0"][k]).abs().max()) for k, v in net.state_dict().items()}
        net.train(was_training)
        losses = state["last_epoch"]  # the batch losses of the epoch just finished
        rows.append({
            "lr": lr, "epochs": epoch, "steps": epoch * per_epoch, "lr_sum": lr * epoch * per_epoch,
            "auc": frame_auc(manifest, scores),
            "loss_mean": float(np.mean(losses)) if losses else None,
            "loss_last": losses[-1] if losses else None,
            "ctx_drift": ctx_drift, "temporal_drift": max(drift.values()),
            "temporal_drift_by_part": {p: max(v for k, v in drift.items() if k.startswith(p))
                                       for p in ("local.", "gcn.")},
            "train_s": train_s,
        })
        r = rows[-1]
        print(f"  lr {lr:g} epoch {epoch:3d} steps {r['steps']:5d} AUC {r['auc']:.4f} "
              f"loss {r['loss_mean'] if r['loss_mean'] is None else round(r['loss_mean'], 4)} "
              f"drift ctx {ctx_drift:.2e} temporal {r['temporal_drift']:.2e} train {train_s:.0f} s", flush=True)
        state["train_s"] = train_s
        if epoch < max(epochs) and args.budget_min and train_s > args.budget_min * 60:
            raise OutOfTime(f"stopped after epoch {epoch}: {train_s:.0f} s of training > --budget-min")
        state["t"] = time.perf_counter()

    def fit_adam(params, batch_loss, num_videos, cfg, generator):
        def free(fn):  # a closure's free variables by name
            return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))

        outer = free(batch_loss)
        cells = {**free(outer["loss_of"]), **outer}  # net is loss_of's, prompts batch_loss's
        assert num_videos == n_train and cfg.batch_size == args.batch_size

        def hooked(idx):
            c = state["calls"]
            if c % per_epoch == 0:  # before the first step of epoch c // per_epoch + 1
                if c:
                    state["last_epoch"], state["losses"] = state["losses"], []
                if c // per_epoch in epochs:
                    evaluate(cells, c // per_epoch)
            state["calls"] += 1
            loss = batch_loss(idx)
            state["losses"].append(float(loss.detach()))
            return loss

        state["t"] = None
        out = original(params, hooked, num_videos, cfg, generator)
        state["last_epoch"] = state["losses"]
        evaluate(cells, max(epochs))  # epochs=0: the only row, no step was taken
        return out

    video_mod.fit_adam = fit_adam
    try:
        head.fit(cache, manifest)
    except OutOfTime as exc:
        print(f"  {exc}", flush=True)
        return rows
    finally:
        video_mod.fit_adam = original
    # the public path: the fitted head scored through score_videos gives the last row's AUC
    public = frame_auc(manifest, head.score_videos(cache, manifest.ids("test")))
    print(f"  public score_videos after fit(epochs={max(epochs)}): AUC {public:.4f} "
          f"(final_loss_ {head.final_loss_})", flush=True)
    rows[-1]["public_auc"] = public
    return rows


def table(rows: list[dict]) -> str:
    head = ("| lr | epochs | steps | sum of lr | frame AUC | train loss (epoch mean) | last batch loss "
            "| ctx drift | temporal drift (local / gcn) | train wall s |")
    out = [head, "|" + "---|" * 10]
    for r in rows:
        loss = "-" if r["loss_mean"] is None else f"{r['loss_mean']:.4f}"
        last = "-" if r["loss_last"] is None else f"{r['loss_last']:.4f}"
        parts = r["temporal_drift_by_part"]
        out.append(f"| {r['lr']:g} | {r['epochs']} | {r['steps']} | {r['lr_sum']:.2e} | {r['auc']:.4f} | {loss} "
                   f"| {last} | {r['ctx_drift']:.2e} | {r['temporal_drift']:.2e} ({parts['local.']:.1e} / "
                   f"{parts['gcn.']:.1e}) | {r['train_s']:.0f} |")
    return "\n".join(out)


def parse_epochs(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="ViT-B-32:random", help="open_clip MODEL:random the cache is written under")
    ap.add_argument("--frames", type=int, default=256, help="sampled frames per video (max_frames is 256)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of UCF-Crime's video counts")
    ap.add_argument("--epochs", default="0,1,2,5,10,20,40,80", help="epochs measured at --lr (one fit to the max)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--compare", nargs="*", default=["1e-4:1,2", "1e-3:1,2"], help="LR:EPOCHS,... fits to compare")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--budget-min", type=float, default=0, help="stop a fit at the first epoch boundary past this")
    ap.add_argument("--dir", default="/tmp/vadpipe-clipassist-schedule")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    import torch

    from vadpipe.cache import FeatureCache
    from vadpipe.data_manifests import load_manifest
    from vadpipe.heads.data import needs_normalising, read_video

    torch.set_num_threads(args.threads)
    root = Path(args.dir) / f"{args.encoder.replace(':', '-')}-T{args.frames}-s{args.scale:g}"
    if not (root / "manifest.csv").exists():
        t0 = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        build(root, args.encoder, args.frames, args.scale, args.seed)
        print(f"built the planted cache in {time.perf_counter() - t0:.0f} s: {root}", flush=True)
    cache, manifest = FeatureCache(root / "cache.zarr"), load_manifest(root / "manifest.csv")
    test_ids = manifest.ids("test")
    test_videos = [read_video(cache, {"emb": args.encoder}, v, needs_normalising(cache, args.encoder, "unit"))
                   for v in test_ids]
    n_train = len(manifest.select(split="train"))
    print(f"{n_train} training videos ({math.ceil(n_train / args.batch_size)} steps per epoch at batch "
          f"{args.batch_size}), {len(test_ids)} test videos, T = {args.frames}, D = {cache.recipe(args.encoder)['dim']}, "
          f"encoder {args.encoder}, device {args.device}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    runs = [(args.lr, parse_epochs(args.epochs))]
    for spec in args.compare or []:
        lr, _, ep = spec.partition(":")
        runs.append((float(lr), parse_epochs(ep)))
    rows = []
    for lr, epochs in runs:
        t0 = time.perf_counter()
        print(f"fit at lr {lr:g}, epochs {epochs}:", flush=True)
        rows += measured_fit(cache, manifest, test_videos, lr, epochs, args)
        print(f"  ({time.perf_counter() - t0:.0f} s with scoring)", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print()
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
