"""Library functions behind ``vadpipe train`` and ``vadpipe score``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vadpipe.cache import FeatureCache
from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError
from vadpipe.heads import Head, get_head, load_head
from vadpipe.heads.redefine import DEFAULT_STRENGTH, DEFAULT_THRESHOLD, redefine
from vadpipe.scores import write_scores


def train_head(
    head: str,
    cache_path: str | Path,
    manifest: Manifest,
    out_dir: str | Path,
    encoder: str | None = None,
    params: dict | None = None,
    device: str = "auto",
) -> Head:
    """Fit head ``head`` on ``manifest``'s training videos and save it to ``out_dir``.

    ``device`` is where it trains (``auto``: cuda when present); it is not saved with the run.
    """
    model = get_head(head, encoder=encoder, **{"device": device, **(params or {})})
    with FeatureCache(cache_path) as cache:
        model.fit(cache, manifest)
    model.save(out_dir)
    return model


@dataclass
class ScoreSummary:
    """What ``score_run`` wrote."""

    path: Path  # the scores store
    encoder: str
    videos: list[str] = field(default_factory=list)  # scored
    skipped: list[str] = field(default_factory=list)  # not done in the cache (only with skip_missing)
    redefinition: dict | None = None  # phrases, threshold, frames lowered / raised

    def line(self) -> str:
        text = f"wrote {self.path}" + (f" (skipped {len(self.skipped)} videos not in the cache)" if self.skipped else "")
        r = self.redefinition
        if r:
            text += (f"\nredefined by text: {r['frames_lowered']} frames lowered, {r['frames_raised']} raised "
                     f"(threshold {r['threshold']})")
        return text


def score_run(
    run_dir: str | Path,
    cache_path: str | Path,
    manifest: Manifest,
    out: str | Path,
    split: str | None = "test",
    skip_missing: bool = False,
    normal: Sequence[str] = (),
    anomaly: Sequence[str] = (),
    redefine_threshold: float = DEFAULT_THRESHOLD,
    redefine_strength: float = DEFAULT_STRENGTH,
    device: str = "auto",
    batch_size: int | None = None,
) -> ScoreSummary:
    """Score the ``split`` videos with the head saved in ``run_dir``; write a scores store.

    With ``normal`` / ``anomaly`` phrases the scores are then redefined by text guidance
    (:func:`vadpipe.heads.redefine.redefine`, Gao et al. eq. 10; ``redefine_strength`` is both
    gamma and theta) and the phrases, threshold and number of frames moved are recorded in
    the store's ``redefinition`` attribute. ``device`` and ``batch_size`` (inference
    batches, for heads that batch; default 16) are this run's choice, whatever the head was
    trained with.

    With ``skip_missing``, videos not done in the cache (e.g. failed to decode) are skipped
    and listed in the summary instead of stopping the run.
    """
    model = load_head(run_dir, device=device, score_batch_size=batch_size)
    with FeatureCache(cache_path) as cache:
        ids = manifest.ids(split if split != "all" else None)
        if not ids:
            raise VadpipeError(f"{manifest.source}: no videos in split {split!r}")
        skipped: list[str] = []
        if skip_missing and model.encoder in cache.encoders():
            done = set(cache.video_ids(model.encoder))
            skipped = [v for v in ids if v not in done]
            ids = [v for v in ids if v in done]
        scores = model.score_videos(cache, ids)
        redefinition = None
        if normal or anomaly:
            adjusted = redefine(
                scores, cache, model.encoder, normal=normal, anomaly=anomaly, threshold=redefine_threshold,
                normal_strength=redefine_strength, anomaly_strength=redefine_strength,
            )
            redefinition = {
                "normal": list(normal),
                "anomaly": list(anomaly),
                "threshold": redefine_threshold,
                "normal_strength": redefine_strength,
                "anomaly_strength": redefine_strength,
                "frames_lowered": int(sum((adjusted[v].score < scores[v].score).sum() for v in scores)),
                "frames_raised": int(sum((adjusted[v].score > scores[v].score).sum() for v in scores)),
            }
            scores = adjusted
    meta = {
        "head": json.loads((Path(run_dir) / "config.json").read_text()),
        "encoder": model.encoder,
        "cache": str(Path(cache_path).resolve()),
        "run_dir": str(Path(run_dir).resolve()),
        "manifest": manifest.source,
        "split": split,
        "skipped": skipped,
        "redefinition": redefinition,
    }
    path = write_scores(out, scores, meta)
    return ScoreSummary(path, model.encoder, list(scores), skipped, redefinition)
