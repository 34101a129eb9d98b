"""Where an alarm is: the objects behind a video's highest scores, drawn on their frames.

Heads that score objects (``unit=object``) keep every object's score, track and box. For the
report, each video's evidence is its ``k`` highest-scoring objects on frames at least a tenth
of the video apart (one per peak, not three rows of the same peak); the timeline marks them and
shows each frame, decoded from the manifest's video, with the object's box and its explanation
(prompt or answer, and track).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vadpipe.scores import ObjectScores

EVIDENCE_PEAKS = 3


@dataclass
class Evidence:
    frame: int  # source frame
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels
    score: float
    track: int
    explanation: str

    def as_dict(self) -> dict:
        return {"frame": self.frame, "box": [round(v, 1) for v in self.box], "score": self.score,
                "track": self.track, "explanation": self.explanation}


def peak_evidence(objects: ObjectScores, num_frames: int, k: int = EVIDENCE_PEAKS) -> list[Evidence]:
    """The ``k`` highest-scoring objects on frames at least ``num_frames // 10`` apart, by frame."""
    gap = max(1, num_frames // 10)
    chosen: list[Evidence] = []
    for i in np.argsort(-np.asarray(objects.score, np.float64), kind="stable"):
        frame = int(objects.frame_index[i])
        if any(abs(frame - e.frame) < gap for e in chosen):
            continue
        track = int(objects.track_id[i])
        text = str(objects.explanation[i]) if objects.explanation is not None else ""
        where = f"track {track}" if track >= 0 else "untracked"
        chosen.append(Evidence(frame, tuple(float(v) for v in objects.box[i]), float(objects.score[i]), track,
                               f"{text} ({where})" if text else where))
        if len(chosen) == k:
            break
    return sorted(chosen, key=lambda e: e.frame)


def read_frames(path: str, frames: list[int]) -> dict[int, np.ndarray]:
    """The RGB frames ``frames`` of a video file or frame folder, decoded sequentially up to the
    last one; an unreadable source gives what was read (possibly nothing)."""
    from vadpipe.featurize.readers import DecodeError, open_source

    wanted, out = set(frames), {}
    if not wanted:
        return out
    try:
        for index, _, rgb in open_source(path).iter_frames(lambda i, p: i in wanted):
            out[index] = rgb
            if len(out) == len(wanted):
                break
    except (DecodeError, OSError):
        pass
    return out
