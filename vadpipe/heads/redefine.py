"""Text-guided test-time redefinition of normal and anomalous events (Gao et al. 2024, eq. 10).

Any head's scores can be adjusted after scoring, without retraining: the user gives phrases
marked *normal* ("a person riding a bike": normal in this scene) or *anomaly* ("smoke"); a
frame whose CLIP image embedding (from the cache the head scored) has cosine similarity
``sim`` above ``threshold`` to a phrase gets

    S_new = S + S_min * theta * (sim - threshold)     for an anomaly phrase
    S_new = S - S_max * gamma * (sim - threshold)     for a normal phrase

where S_max and S_min are the maximum and minimum score of that video (before any
adjustment), gamma = ``normal_strength`` and theta = ``anomaly_strength``. Frames that match
no phrase keep their score bit for bit.

Choices where the paper leaves room:

* Phrases go through the text tower as written (no prompt template), as in the paper.
* With several phrases of one kind a frame is adjusted once, by its best-matching phrase of
  that kind (so paraphrases do not add up); a frame matching both kinds gets both terms.
* The paper gives no values: ``threshold`` = 0.25 (a matching caption typically scores
  0.25-0.35 against CLIP ViT-B image embeddings, an unrelated one below 0.2) and
  gamma = theta = 10, so a frame 0.05 above the threshold moves by half the video's S_max
  (normal) or S_min (anomaly).
* S_max and S_min enter as magnitudes, |S_max| and |S_min|: identical to eq. 10 for the
  non-negative scores of the built-in heads, and a normal phrase still lowers (an anomaly
  phrase still raises) a head whose scores can be negative. As in the paper, the raise is
  proportional to the video's minimum score, so it is small where that minimum is near 0.
* Scores are compared with the per-frame cache embeddings even for heads that pool frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vadpipe.errors import VadpipeError
from vadpipe.heads.training import l2_normalize
from vadpipe.scores import Scores

DEFAULT_THRESHOLD = 0.25
DEFAULT_STRENGTH = 10.0


def redefine(
    scores: dict[str, Scores],
    cache,
    encoder_key: str,
    normal: Sequence[str] = (),
    anomaly: Sequence[str] = (),
    threshold: float = DEFAULT_THRESHOLD,
    normal_strength: float = DEFAULT_STRENGTH,
    anomaly_strength: float = DEFAULT_STRENGTH,
    text_encoder=None,
) -> dict[str, Scores]:
    """Scores adjusted by eq. 10 for frames that match the ``normal`` / ``anomaly`` phrases.

    ``cache`` and ``encoder_key`` name the CLIP image embeddings the scores were computed
    from; the phrases are embedded by the same open_clip model (``text_encoder``, default:
    the one recorded in the cache). Returns new :class:`Scores`; the input is not modified.
    """
    normal, anomaly = _phrases(normal, "normal"), _phrases(anomaly, "anomaly")
    check_redefine_options(threshold, normal_strength, anomaly_strength)
    if not normal and not anomaly:
        return dict(scores)
    if text_encoder is None:
        from vadpipe.heads.text import text_encoder_for

        text_encoder = text_encoder_for(cache, encoder_key)
    normal_emb = text_encoder.encode_text(normal)  # (P D), normalised
    anomaly_emb = text_encoder.encode_text(anomaly)  # (Q D)
    out = {}
    for vid, s in scores.items():
        emb = _frame_embeddings(cache, encoder_key, vid, s.frame_index)  # (T D)
        out[vid] = redefine_scores(s, emb, normal_emb, anomaly_emb, threshold, normal_strength, anomaly_strength)
    return out


def redefine_scores(
    scores: Scores,
    frame_emb: np.ndarray,
    normal_emb: np.ndarray,
    anomaly_emb: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    normal_strength: float = DEFAULT_STRENGTH,
    anomaly_strength: float = DEFAULT_STRENGTH,
) -> Scores:
    """Eq. 10 on one video: ``frame_emb (T D)`` aligned with ``scores``, phrase embeddings
    ``(P D)`` / ``(Q D)`` (either may have no rows)."""
    score = np.asarray(scores.score, np.float32)  # (T)
    if len(score) == 0:
        return scores
    f = l2_normalize(frame_emb.astype(np.float32))  # (T D)
    s_max, s_min = abs(float(score.max())), abs(float(score.min()))
    shift = np.zeros(len(score), np.float64)
    matched = np.zeros(len(score), bool)
    for emb, scale, sign in ((anomaly_emb, s_min * anomaly_strength, 1.0), (normal_emb, s_max * normal_strength, -1.0)):
        if len(emb) == 0:
            continue
        sim = (f @ np.asarray(emb, np.float32).T).max(axis=1)  # (T) best phrase of this kind
        hit = sim > threshold
        shift[hit] += sign * scale * (sim[hit] - threshold)
        matched |= hit
    new = score.copy()
    new[matched] = (score[matched] + shift[matched]).astype(np.float32)
    return dataclasses.replace(scores, score=new)


def check_redefine_options(threshold: float, normal_strength: float, anomaly_strength: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise VadpipeError(f"redefinition threshold is a cosine similarity in [-1, 1], got {threshold}")
    if normal_strength < 0 or anomaly_strength < 0:
        raise VadpipeError("redefinition strengths must be >= 0")


def _phrases(phrases: Sequence[str] | str, kind: str) -> list[str]:
    if isinstance(phrases, str):
        phrases = [phrases]
    out = [str(p).strip() for p in phrases]
    if any(not p for p in out):
        raise VadpipeError(f"an empty {kind} phrase was given for redefinition")
    return out


def _frame_embeddings(cache, encoder_key: str, video_id: str, frame_index: np.ndarray) -> np.ndarray:
    """The cache's image embeddings of the scored frames, in the order of ``frame_index``."""
    feats = cache.read(encoder_key, video_id)
    if feats.emb is None:
        raise VadpipeError(f"{cache.path}: encoder {encoder_key!r} has no image embeddings to match phrases against")
    frame_index = np.asarray(frame_index)
    if np.array_equal(feats.frame_index, frame_index):
        return feats.emb
    bad = ~np.isin(frame_index, feats.frame_index)
    if bad.any():
        raise VadpipeError(
            f"video {video_id!r}: scored frame {int(frame_index[bad][0])} is not a sampled frame "
            f"of the cache under {encoder_key!r}"
        )
    order = np.argsort(feats.frame_index, kind="stable")
    return feats.emb[order[np.searchsorted(feats.frame_index, frame_index, sorter=order)]]
