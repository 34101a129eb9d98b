"""Score stores: what heads produce and ``evaluate`` reads (Zarr v3, no torch needed).

Layout::

    /               attrs: kind="vadpipe-scores", schema_version, head (its config.json),
                           encoder, cache, class_names, explanation_vocab
    /<video_id>/    attrs: num_frames, done (last)
        frame_index int64[T]      sampled source frames
        score       float64[T]    anomaly score per sampled frame
        class_probs float64[T, C] per-class probabilities (heads that recognise classes)
        explanation int32[T]      index into explanation_vocab (heads that explain)
        object_frame_index int64[N], object_track_id int64[N], object_box float32[N, 4],
        object_score float64[N], object_explanation int32[N]
                                  heads scoring objects (unit=object): every object's score

Scores are stored in float64, whatever precision a head computes in, so scores a user
brings (peers' float64 outputs: PSNRs, LAVAD's JSON) keep every distinct value; a float32
store would turn close values into ties and move an AUC (by 3.8e-5 in a constructed case).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError

SCHEMA_VERSION = 1


@dataclass
class ObjectScores:
    """The objects behind a video's frame scores (``unit=object``): one row per object and frame."""

    frame_index: np.ndarray  # int64[N]
    track_id: np.ndarray  # int64[N]
    box: np.ndarray  # float32[N, 4] x1, y1, x2, y2 in source pixels
    score: np.ndarray  # float[N]
    explanation: np.ndarray | None = None  # object[N]


OBJECT_FIELDS = ("frame_index", "track_id", "box", "score", "explanation")


@dataclass
class Scores:
    """One video's scores: per sampled frame, plus per-class probabilities if any."""

    frame_index: np.ndarray  # int64[T] source frame of each sample
    score: np.ndarray  # float[T] anomaly score (higher = more anomalous); heads give float32
    num_frames: int  # decoded length of the video
    class_probs: np.ndarray | None = None  # float[T, C]
    class_names: tuple[str, ...] = ()
    explanation: np.ndarray | None = None  # object[T]: best-matching prompt, where a head has one
    objects: ObjectScores | None = None  # heads scoring objects: each object's score, track and box


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
        g.create_array("score", data=np.asarray(s.score, np.float64), chunks=(T,))
        if s.class_probs is not None:
            g.create_array("class_probs", data=np.asarray(s.class_probs, np.float64), chunks=(T, s.class_probs.shape[1]))
            class_names = tuple(s.class_names)
        if s.explanation is not None:
            idx = np.array([vocab.setdefault(str(e), len(vocab)) for e in s.explanation], np.int32)
            g.create_array("explanation", data=idx, chunks=(T,))
        if s.objects is not None:
            o = s.objects
            N = max(len(o.frame_index), 1)
            arrays = {"frame_index": np.asarray(o.frame_index, np.int64), "track_id": np.asarray(o.track_id, np.int64),
                      "box": np.asarray(o.box, np.float32).reshape(-1, 4), "score": np.asarray(o.score, np.float64)}
            if o.explanation is not None:
                arrays["explanation"] = np.array([vocab.setdefault(str(e), len(vocab)) for e in o.explanation], np.int32)
            for name, arr in arrays.items():
                g.create_array(f"object_{name}", data=arr, chunks=(N,) + arr.shape[1:])
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
    """Read access to a scores store.

    Each video's arrays are read straight from their files by the cache's fast reader
    (:mod:`vadpipe.cache.zarr_fast`: uncompressed single-chunk Zarr v3 arrays, no zarr
    machinery per array), the zarr API for anything else -- a whole benchmark's scores load
    in a fraction of a second.
    """

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
        from vadpipe.cache.zarr_fast import read_group_files

        group = read_group_files(str(self.path / video_id)) if "/" not in video_id else None
        if group is None:
            raise VadpipeError(f"{self.path}: no scores for video {video_id!r}")
        attrs, arrays = group
        arrays = {k: v if v is not None else self.root[video_id][k][:] for k, v in arrays.items()}
        vocab = np.array(self.meta.get("explanation_vocab", []), dtype=object)
        objects = None
        if "object_score" in arrays:
            objects = ObjectScores(
                arrays["object_frame_index"], arrays["object_track_id"], arrays["object_box"], arrays["object_score"],
                vocab[arrays["object_explanation"]] if "object_explanation" in arrays else None,
            )
        return Scores(
            frame_index=arrays["frame_index"],
            score=arrays["score"],
            num_frames=int(attrs["num_frames"]),
            class_probs=arrays.get("class_probs"),
            class_names=self.class_names,
            explanation=vocab[arrays["explanation"]] if "explanation" in arrays else None,
            objects=objects,
        )


class InMemoryScores:
    """Scores held in Python (``{video_id: Scores}``) with the reading interface of a
    :class:`ScoresStore`: ``vadpipe.evaluate.evaluate`` takes either."""

    def __init__(self, scores: dict[str, Scores], meta: dict | None = None, path: str | Path = "(scores in memory)"):
        self.path = path
        self.scores = dict(scores)
        names = {tuple(s.class_names) for s in self.scores.values() if s.class_probs is not None}
        if len(names) > 1:
            raise VadpipeError(f"{self.path}: videos name different classes: {sorted(names)}")
        if names == {()}:
            raise VadpipeError(f"{self.path}: scores carry class probabilities but no class names "
                               "(Scores.class_names): name their columns")
        self.meta = {**(meta or {}), "class_names": list(names.pop()) if names else list((meta or {}).get("class_names", []))}

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    def video_ids(self) -> list[str]:
        return sorted(self.scores)

    def read(self, video_id: str) -> Scores:
        if video_id not in self.scores:
            raise VadpipeError(f"{self.path}: no scores for video {video_id!r}")
        return self.scores[video_id]
