"""``clipassist-frame``: CLIP-assisted detection with situation descriptions, frame mode (Dong 2024, Sec. 3.3).

Weak supervision: video-level labels of the manifest's ``train`` videos (see
:mod:`.common`). Normal and abnormal descriptions (``dong-situations``: Table 2, plus one
description per manifest class) are embedded once by the frozen text encoder. Each
description k has a diagonal A_k (init identity) and a bias b_k (init 0):
W(f, t_k) = f^T A_k t_k / m + b_k, m = 0.01 (eq. 13); p = softmax over all descriptions;
anomaly score = the sum over abnormal descriptions (eq. 14); class probability = the sum
over a class's descriptions. Trained with InfoNCE (eq. 15); an optional majority vote over
``vote_window`` neighbouring frames. Each frame's explanation is its most probable description.

Choices where the paper is silent or ambiguous:

* weak supervision (the paper does not say how frames of anomalous training videos are
  labelled): every frame of a normal video is normal; the top-k frames of an anomalous
  video by the current anomaly score (MIL) are anomalous. In eq. 15 the positive set of a
  normal frame is the normal descriptions, of an anomalous frame its class's descriptions
  plus the unclassed abnormal ones; the rest are negatives. Loss weights
  lambda_j = 1 / (frames counted in that video), so each video weighs the same;
* majority vote: the score of frame t becomes the fraction of frames in the centred window
  whose score exceeds ``vote_threshold`` (its majority decision is that fraction > 0.5);
* a description shared by two classes (RoadAccidents / CarAccident) is kept once per class.

Object-centric mode (Sec. 3.3, 4.5, Table 7): ``--param unit=object`` scores each detected
object's crop embedding (an objects group, ``vadpipe featurize --objects DETECTOR``; the
paper's "at most 20" objects a frame is the detector's ``max_objects=20``) with the same
similarity, and a frame scores its most anomalous object ("the frame will be classified as
abnormal when one detected object is abnormal"); a frame with no object gets the lowest object
score of the normal training videos. The vote, if any, runs on those frame scores. Training
(the paper gives none for this mode; vadpipe's reading): every object of a normal video is
normal; in an anomalous video the MIL top-k are frames, not rows -- k = F // 16 + 1 of its F
frames with objects, each frame ranked by its most anomalous object, and that object is the
frame's positive (an anomalous frame has at least one anomalous object, not all of them).
Training videos in which nothing was detected are left out (with a warning).

Works with any open_clip text tower, CoCa included. Saved: :class:`FrameModel`'s
``state_dict`` (description embeddings, A_k, b_k, the owner of each description).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from vadpipe.errors import VadpipeError
from vadpipe.heads.base import ObjectUnits, Scores
from vadpipe.heads.clipassist.common import DescriptionConfig, DescriptionHead, fit_adam
from vadpipe.heads.clipassist.net import DiagonalSimilarity, info_nce, majority_vote, topk_counts
from vadpipe.texts import check_template


@dataclass
class ClipAssistFrameConfig(ObjectUnits, DescriptionConfig):
    templates: list[str] = field(default_factory=lambda: ["{}"])
    m: float = 0.01  # the similarity's temperature (eq. 13)
    vote_window: int = 0  # 0 or 1: no vote; else an odd number of frames
    vote_threshold: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if not self.m > 0:
            raise VadpipeError(f"clipassist: m must be > 0, got {self.m}")
        if self.vote_window < 0 or (self.vote_window > 1 and self.vote_window % 2 == 0):
            raise VadpipeError(f"clipassist: vote_window must be 0, 1 or odd, got {self.vote_window}")
        for t in self.templates:
            check_template(t, where="clipassist: ")


class FrameModel(nn.Module):
    """A fitted ``clipassist-frame``: eq. 13's similarity and the owner of each description
    (-1 normal, 0 unclassed abnormal, c >= 1 anomaly class c)."""

    def __init__(self, sim: DiagonalSimilarity, owner: torch.Tensor):
        super().__init__()
        self.sim = sim
        self.register_buffer("owner", owner)  # (N) int64


class ClipAssistFrameHead(DescriptionHead):
    name = "clipassist-frame"
    Config = ClipAssistFrameConfig
    mode = "frame"
    default_descriptions = "dong-situations"
    object_mode = "rows"  # unit=object: each object's crop against the descriptions (Sec. 4.5)

    def _fit_texts(self, text_encoder, pset, per_class, device):
        from vadpipe.heads.text import embed_prompts

        cfg = self.config
        # descriptions: normal, unclassed abnormal, then each class's; one entry per (text, owner),
        # so two classes sharing a description (RoadAccidents / CarAccident) each keep it
        entries = dict.fromkeys((t, -1) for t in pset.normal)  # -1 normal, 0 unclassed abnormal, c >= 1 class c
        entries.update(dict.fromkeys((t, 0) for t in pset.anomaly if (t, -1) not in entries))
        for c, texts in enumerate(per_class, start=1):
            if not texts:
                raise VadpipeError(f"clipassist: class {self.class_names_[c - 1]!r} has no description")
            entries.update(dict.fromkeys((t, c) for t in texts))
        if not any(o == -1 for _, o in entries):
            raise VadpipeError(f"{pset.path}: clipassist-frame needs 'normal' descriptions")
        self.texts_ = [t for t, _ in entries]
        owner = torch.tensor([o for _, o in entries], dtype=torch.int64)  # (N)
        text = torch.from_numpy(embed_prompts(text_encoder(), self.texts_, tuple(cfg.templates)))  # (N D)
        return text, owner

    def _fit_descriptions(self, texts, videos, frames, labels, device, generator) -> None:
        cfg = self.config
        text, owner = texts
        sim = DiagonalSimilarity(text, cfg.m).to(device)
        owner_t = owner.to(device)

        def batch_loss(idx):
            loss = 0.0
            for i in idx.tolist():
                logits = sim(torch.from_numpy(videos[i]).to(device, torch.float32))  # (R N)
                loss = loss + self._video_loss(logits, int(labels[i]), owner_t, frames[i])
            loss = loss / len(idx)
            loss.backward()
            return loss.detach()

        self.final_loss_ = fit_adam(list(sim.parameters()), batch_loss, len(videos), cfg, generator)
        self.model_ = FrameModel(sim.cpu(), owner)

    def _video_loss(self, logits: torch.Tensor, label: int, owner: torch.Tensor, frame: np.ndarray) -> torch.Tensor:
        """Eq. 15 on one weakly labelled video: all its rows if normal, its top-k frames' if anomalous
        (``frame``: each row's frame; a frame of objects is ranked and represented by its best row)."""
        R = logits.shape[0]
        if label == 0:
            positive = (owner == -1)[None].expand(R, -1)  # (R N)
            return info_nce(logits, positive, torch.full((R,), 1.0 / R, device=logits.device))
        with torch.no_grad():
            score = logits.softmax(dim=-1)[:, owner >= 0].sum(dim=-1)  # (R)
        F = int(frame.max()) + 1
        k = int(topk_counts(torch.ones(1, F, dtype=torch.bool), self.config.topk)[0])
        if self.unit == "frame":  # one row a frame
            top = score.topk(k).indices  # (k)
        else:
            s = score.cpu().numpy()
            order = np.lexsort((s, frame))  # by frame, then score: a frame's last row is its best
            best = np.empty(F, dtype=np.int64)
            best[frame[order]] = order
            top = torch.from_numpy(best[np.argsort(-s[best], kind="stable")[:k]]).to(logits.device)  # (k)
        positive = ((owner == 0) | (owner == label))[None].expand(k, -1)  # (k N)
        return info_nce(logits[top], positive, torch.full((k,), 1.0 / k, device=logits.device))

    @property
    def sim_(self) -> DiagonalSimilarity:
        return self.model_.sim

    @property
    def desc_owner_(self) -> np.ndarray:
        return self.model_.owner.numpy()

    def _score_object_unit(self, unit) -> Scores:
        """Each row alone, without the vote (which runs on the frame scores)."""
        f = unit.emb.astype(np.float32)  # (R D)
        with torch.no_grad():
            probs = self.model_.sim(torch.from_numpy(f)).softmax(dim=-1).numpy()  # (R N), one column per text
        owner = self.desc_owner_
        class_probs = np.stack([probs[:, owner == c].sum(axis=1) for c in range(1, len(self.class_names_) + 1)], 1)
        return self._scores(unit, probs[:, owner >= 0].sum(axis=1), class_probs, probs)

    def _score_video(self, video) -> Scores:
        s = self._score_object_unit(video)  # a frame is a row
        s.score = majority_vote(s.score, self.config.vote_window, self.config.vote_threshold).astype(np.float32)
        return s

    def _score_objects(self, video) -> Scores:
        """A frame's score is its most anomalous object's (Sec. 4.5), then the vote along the frames."""
        rows = self._object_row_scores(video)
        score = majority_vote(self._max_per_frame(video, rows.score), self.config.vote_window, self.config.vote_threshold)
        return self._objects_result(video, rows, score)

    @classmethod
    def _upgrade_v02(cls, meta, state):
        """0.2 saved ``text_emb``, ``a``, ``b`` and ``desc_owner``."""
        meta, state = super()._upgrade_v02(meta, state)
        names = {"text_emb": "sim.text", "a": "sim.a", "b": "sim.b", "desc_owner": "owner"}
        return meta, {names[k]: v for k, v in state.items()}

    def _new_model(self, state) -> FrameModel:
        text = torch.from_numpy(np.asarray(state["sim.text"], np.float32))
        return FrameModel(DiagonalSimilarity(text, self.config.m), torch.zeros(len(text), dtype=torch.int64))
