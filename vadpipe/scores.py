"""Score stores: what heads produce and ``evaluate`` reads (Zarr v3, no torch needed).

Layout::

    /               attrs: kind="vadpipe-scores", schema_version, head (its config.json),
                           encoder, cache, class_names, explanation_vocab
    /<video_id>/    attrs: num_frames, done (last)
        frame_index int64[T]      sampled source frames
        score       float32[T]    anomaly score per sampled frame
        class_probs float32[T, C] per-class probabilities (heads that recognise classes)
        explanation int32[T]      index into explanation_vocab (heads that explain)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError

SCHEMA_VERSION = 1


@dataclass
class Scores:
    """One video's scores: per sampled frame, plus per-class probabilities if any."""

    frame_index: np.ndarray  # int64[T] source frame of each sample
    score: np.ndarray  # float32[T] anomaly score (higher = more anomalous)
    num_frames: int  # decoded length of the video
    class_probs: np.ndarray | None = None  # float32[T, C]
    class_names: tuple[str, ...] = ()
    explanation: np.ndarray | None = None  # object[T]: best-matching prompt, where a head has one


def is_scores_store(path: str | Path) -> bool:
    """Whether ``path`` is a scores store (its root says ``kind: vadpipe-scores``)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("kind") == "vadpipe-scores"


def write_scores(path: str | Path, scores: dict[str, Scores], meta: dict) -> Path:
    """Write a new scores store at ``path`` (an existing one is replaced)."""
    import shutil

    import zarr

    path = Path(path)
    if path.exists():
        if not is_scores_store(path):
            raise VadpipeError(f"{path}: exists and is not a vadpipe scores store; refusing to overwrite it")
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    vocab: dict[str, int] = {}
    class_names: tuple[str, ...] = ()
    for vid, s in scores.items():
        g = root.create_group(vid)
        g.attrs.update({"num_frames": int(s.num_frames), "done": False})
        T = max(len(s.frame_index), 1)
        g.create_array("frame_index", data=np.asarray(s.frame_index, np.int64), chunks=(T,))
        g.create_array("score", data=np.asarray(s.score, np.float32), chunks=(T,))
        if s.class_probs is not None:
            g.create_array("class_probs", data=np.asarray(s.class_probs, np.float32), chunks=(T, s.class_probs.shape[1]))
            class_names = tuple(s.class_names)
        if s.explanation is not None:
            idx = np.array([vocab.setdefault(str(e), len(vocab)) for e in s.explanation], np.int32)
            g.create_array("explanation", data=idx, chunks=(T,))
        g.attrs.update({"done": True})
    root.attrs.update(
        json.loads(
            json.dumps(
                {
                    "kind": "vadpipe-scores",
                    "schema_version": SCHEMA_VERSION,
                    **meta,
                    "class_names": list(class_names),
                    "explanation_vocab": list(vocab),
                }
            )
        )
    )
    return path


class ScoresStore:
    """Read access to a scores store."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise VadpipeError(f"{self.path}: scores store not found")
        self.root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        if self.root.attrs.get("kind") != "vadpipe-scores":
            raise VadpipeError(f"{self.path}: not a vadpipe scores store")
        self.meta = dict(self.root.attrs)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta.get("class_names", ()))

    def video_ids(self) -> list[str]:
        return sorted(v for v in self.root.group_keys() if self.root[v].attrs.get("done"))

    def read(self, video_id: str) -> Scores:
        if video_id not in self.root:
            raise VadpipeError(f"{self.path}: no scores for video {video_id!r}")
        g = self.root[video_id]
        vocab = self.meta.get("explanation_vocab", [])
        return Scores(
            frame_index=g["frame_index"][:],
            score=g["score"][:],
            num_frames=int(g.attrs["num_frames"]),
            class_probs=g["class_probs"][:] if "class_probs" in g else None,
            class_names=self.class_names,
            explanation=np.array(vocab, dtype=object)[g["explanation"][:]] if "explanation" in g else None,
        )
