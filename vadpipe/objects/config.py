"""What an objects run is: detector, its settings, tracker, crop -- and the key it is cached under.

An objects group lives under its own cache key, ``ENCODER_KEY+DETECTOR`` (e.g.
``ViT-B-16:openai+motion``, ``ViT-B-16:openai+fasterrcnn_resnet50_fpn_v2``,
``ViT-B-16:openai+file-dets``), of kind ``objects``, beside the frame group of the same
encoder (``clip_key``). So frame and object features of one encoder coexist, two detectors
coexist, and "done", resume, shards and failures work per (key, video) exactly as for frames.
The group's recipe is the encoder's (model, weights, preprocessing, sampling) plus
``objects``: detector and settings, ``min_area``, ``max_objects``, tracker, crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vadpipe.cache import OBJECTS  # the kind of an objects group's recipe
from vadpipe.errors import VadpipeError
from vadpipe.params import build_config
TRACKERS = ("bytetrack", "none")
COMMON = ("min_area", "max_objects", "margin")
TRACKER_PARAMS = {"tracker": "method", "track_threshold": "track_threshold", "track_buffer": "buffer",
                  "match_threshold": "match_threshold"}


@dataclass(frozen=True)
class TrackerConfig:
    """ByteTrack (Zhang et al. 2022) over the sampled frames, as ``supervision`` implements it.

    ``track_threshold``: detections at or above it start and continue tracks first (the low
    ones only continue them); ``buffer``: sampled frames a lost track waits to be found again;
    ``match_threshold``: IoU-cost gate of the association. ``method="none"``: no tracking
    (every row has ``track_id`` -1). Detections from a ``file:`` source that carry ids keep
    them and are not re-tracked. A detection the tracker does not (yet) hold -- ByteTrack
    confirms a new object on its second frame -- is kept with ``track_id`` -1: an object seen
    once is still scored.
    """

    method: str = "bytetrack"
    track_threshold: float = 0.25
    buffer: int = 30
    match_threshold: float = 0.8

    def __post_init__(self):
        if self.method not in TRACKERS:
            raise VadpipeError(f"objects: tracker must be one of {', '.join(TRACKERS)}, got {self.method!r}")
        if self.buffer < 0:
            raise VadpipeError(f"objects: track_buffer must be >= 0, got {self.buffer}")


@dataclass(frozen=True)
class ObjectsConfig:
    """Detector, its settings, the filters every detector shares, tracker and crop.

    ``min_area``: boxes smaller than this (source pixels squared) are dropped (VLAVAD: 300);
    ``max_objects``: at most this many per frame, highest score first (Dong: 20; ``None``:
    all); ``margin``: the crop is the square on the box's longer side grown by this fraction
    of it on every side (context), centred on the box, black where it leaves the frame.
    """

    detector: str  # "motion", a torchvision detector name, or "file:DIR"
    settings: tuple = ()  # the detector's own settings as sorted (name, value) pairs
    min_area: float = 100.0
    max_objects: int | None = None
    margin: float = 0.1
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self):
        if self.margin < 0:
            raise VadpipeError(f"objects: margin must be >= 0, got {self.margin}")
        if self.max_objects is not None and self.max_objects < 1:
            raise VadpipeError(f"objects: max_objects must be >= 1 or null, got {self.max_objects}")
        self.detector_settings()  # unknown detector or settings: one error now, not one per video

    @classmethod
    def parse(cls, detector: str, params: dict | None = None) -> "ObjectsConfig":
        """From ``--objects DETECTOR`` and ``--objects-param KEY=VALUE`` pairs: the shared
        filters, the tracker's settings (``tracker``, ``track_threshold``, ``track_buffer``,
        ``match_threshold``) and the detector's own, each checked against its type."""
        params = dict(params or {})
        common = {k: params.pop(k) for k in COMMON if k in params}
        tracker = {TRACKER_PARAMS[k]: params.pop(k) for k in list(params) if k in TRACKER_PARAMS}
        config = build_config("objects", _Common, common)
        return cls(
            detector=detector,
            settings=tuple(sorted(params.items(), key=lambda kv: kv[0])),
            min_area=config.min_area,
            max_objects=config.max_objects,
            margin=config.margin,
            tracker=build_config("objects tracker", TrackerConfig, tracker),
        )

    def detector_settings(self):
        """The detector's settings dataclass (checked)."""
        from vadpipe.objects.detectors import detector_class

        cls = detector_class(self.detector)
        return build_config(f"detector {self.name!r}", cls.Settings, dict(self.settings))

    @property
    def name(self) -> str:
        """The detector's part of the cache key."""
        if self.detector.startswith("file:"):
            return "file-" + Path(self.detector[5:]).expanduser().resolve().name
        return self.detector

    def key(self, encoder_key: str) -> str:
        return objects_key(encoder_key, self.name)

    def recipe(self) -> dict:
        """What the objects group's recipe records under ``objects``."""
        from vadpipe.objects.detectors import detector_class

        detector = self.detector
        if detector.startswith("file:"):
            detector = "file:" + str(Path(detector[5:]).expanduser().resolve())
        settings = self.detector_settings()
        return {
            "detector": detector,
            "settings": asdict(settings),
            "weights": detector_class(self.detector).weights_recipe(settings),
            "min_area": self.min_area,
            "max_objects": self.max_objects,
            "tracker": asdict(self.tracker),
            "crop": {"shape": "square on the box's longer side", "margin": self.margin, "fill": 0},
        }


@dataclass(frozen=True)
class _Common:
    min_area: float = 100.0
    max_objects: int | None = None
    margin: float = 0.1


def objects_key(encoder_key: str, detector_name: str) -> str:
    """``ENCODER_KEY+DETECTOR``: the cache key of one encoder's objects from one detector."""
    return f"{encoder_key}+{detector_name}"
