"""Detectors behind one registry: ``motion``, torchvision's COCO detectors, ``file:DIR``.

A detector sees the sampled frames of one video in order, at source resolution
(``uint8 (H, W, 3)`` RGB), and returns :class:`Detections` per frame: boxes ``(x1, y1, x2,
y2)`` in source pixels, scores, labels, and track ids when the source has them.
``start(video_id)`` gives the per-video callable (a background model, a detections file).

* ``motion`` -- OpenCV background subtraction (KNN or MOG2) on the sampled frames, a
  morphological opening (noise) and closing (joins a walker's parts), connected components.
  For fixed cameras (Ped2, Avenue, ShanghaiTech); needs no weights, so it works offline and is
  what the tests and the demo use. Score 1 (background subtraction has no confidence), label
  ``motion``. An object that stands still long enough becomes background (``history``
  frames) and is no longer found; the first sampled frame finds nothing; people walking close
  together share one box. Pixels OpenCV calls shadows count as foreground unless
  ``shadows=true``: in grey footage (Ped2) people darker than the pavement *are* "shadows" by
  its test, and dropping them lost most walkers. Defaults measured on the real clips (longest
  track on the anomaly, ByteTrack defaults): Ped2 Test001's cyclist, frames 60-179 -- KNN with
  a 5 px closing 109 of 120 frames, KNN 9 px 75, MOG2 5 px 50, MOG2 9 px 52; Avenue test 21's
  running child -- 51 of 53 (KNN 5 px) and 53 of 53 (MOG2 9 px).
* ``fasterrcnn_resnet50_fpn_v2``, ``retinanet_resnet50_fpn_v2``, ``fcos_resnet50_fpn``,
  ``ssdlite320_mobilenet_v3_large`` -- torchvision's COCO detectors: weights by tag
  (``DEFAULT`` / ``COCO_V1``, downloaded by torchvision on a connected machine), from a local
  file (a state dict as ``.pth`` / ``.pt``, read with ``torch.load(weights_only=True)``, or
  ``.safetensors``), or ``random`` (benchmarks: the cost does not depend on the weights);
  COCO class filter, score threshold and class-wise NMS (VLAVAD: 0.5 and 0.3). They run in
  the decode workers, on ``device`` (``cpu`` unless asked; ``cuda`` needs ``--workers 0``).
* ``file:DIR`` -- detections made by any other detector or tracker (YOLOX, ByteTrack), one
  MOT-challenge text file per video, ``DIR/<video_id>.txt``, a line per box:
  ``frame,id,x,y,w,h,score[,class]`` (frame numbers 1-based as in MOT unless
  ``first_frame=0``; ``id`` -1 for untracked boxes; ``class`` a name or number; columns after
  the eighth, as in MOT's own files, are ignored). Boxes of frames not sampled are ignored.
  A bad line fails that video with ``file:line: why``; the other videos go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, NamedTuple

import numpy as np

from vadpipe.errors import VadpipeError

TORCHVISION = ("fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
               "ssdlite320_mobilenet_v3_large")
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class ObjectsError(VadpipeError):
    """A video's objects cannot be made (a bad detections file): that video fails, the run goes on."""


class Detections(NamedTuple):
    boxes: np.ndarray  # float32[n, 4] x1, y1, x2, y2 in source pixels
    scores: np.ndarray  # float32[n]
    labels: list  # n strings
    ids: np.ndarray | None = None  # int64[n] track ids from the source (file:), -1 = none

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])

    def select(self, keep) -> "Detections":
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        return Detections(self.boxes[keep], self.scores[keep], [self.labels[i] for i in keep],
                          None if self.ids is None else self.ids[keep])


VideoDetector = Callable[[int, np.ndarray], Detections]  # (source frame index, RGB frame) -> detections


class Detector:
    """Base: ``Settings`` (a dataclass of the detector's own settings), ``start(video_id)``."""

    Settings: ClassVar[type]

    def __init__(self, spec: str, settings):
        self.spec = spec
        self.settings = settings

    @staticmethod
    def weights_recipe(settings) -> dict | None:
        return None

    def start(self, video_id: str) -> VideoDetector:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- motion
@dataclass(frozen=True)
class MotionSettings:
    method: str = "knn"  # knn | mog2 (OpenCV's background subtractors)
    history: int = 500  # frames the background model remembers
    threshold: float | None = None  # MOG2 varThreshold (OpenCV: 16) / KNN dist2Threshold (400)
    open_kernel: int = 3  # px; removes speckle
    close_kernel: int = 5  # px; joins the parts of one walker (head, legs) into one box
    shadows: bool = False  # True: drop the pixels OpenCV marks as shadow (colour footage)

    def __post_init__(self):
        if self.method not in ("mog2", "knn"):
            raise VadpipeError(f"detector 'motion': method must be mog2 or knn, got {self.method!r}")
        if self.history < 1 or self.open_kernel < 0 or self.close_kernel < 0:
            raise VadpipeError("detector 'motion': history must be >= 1 and kernels >= 0")


class MotionDetector(Detector):
    Settings = MotionSettings

    def start(self, video_id: str) -> VideoDetector:
        import cv2

        s = self.settings
        cv2.setRNGSeed(0)  # KNN draws its model updates from OpenCV's RNG: the same per video, in any order
        if s.method == "mog2":
            sub = cv2.createBackgroundSubtractorMOG2(history=s.history, varThreshold=s.threshold or 16.0,
                                                     detectShadows=True)
        else:
            sub = cv2.createBackgroundSubtractorKNN(history=s.history, dist2Threshold=s.threshold or 400.0,
                                                    detectShadows=True)
        opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (s.open_kernel,) * 2) if s.open_kernel else None
        closing = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (s.close_kernel,) * 2) if s.close_kernel else None

        keep_shadows = not s.shadows

        def detect(index: int, rgb: np.ndarray) -> Detections:
            mask = sub.apply(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
            fg = np.where(mask >= (127 if keep_shadows else 255), 255, 0).astype(np.uint8)  # 127 = shadow
            if opening is not None:
                fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, opening)
            if closing is not None:
                fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, closing)
            n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
            if n <= 1:
                return Detections.empty()
            x, y, w, h = (stats[1:, i].astype(np.float32) for i in range(4))
            boxes = np.stack([x, y, x + w, y + h], axis=1)
            return Detections(boxes, np.ones(len(boxes), np.float32), ["motion"] * len(boxes))

        return detect


# ---------------------------------------------------------------- torchvision
@dataclass(frozen=True)
class TorchvisionSettings:
    weights: str = "DEFAULT"  # a torchvision tag (DEFAULT, COCO_V1), a local file, or "random"
    classes: tuple = ()  # COCO class names to keep (e.g. ["person", "bicycle"]); empty = all
    score_threshold: float = 0.5
    nms_threshold: float = 0.3  # class-wise, on top of the model's own
    device: str = "cpu"


class TorchvisionDetector(Detector):
    Settings = TorchvisionSettings

    def __init__(self, spec: str, settings):
        super().__init__(spec, settings)
        unknown = set(settings.classes) - set(coco_categories(spec))
        if unknown:
            raise VadpipeError(f"detector {spec!r}: unknown COCO class(es) {', '.join(sorted(unknown))}")
        self._model = None

    @staticmethod
    def weights_recipe(settings) -> dict:
        w = settings.weights
        if w == "random":
            return {"tag": "random", "seed": 0}
        path = Path(w).expanduser()
        if path.suffix in WEIGHT_SUFFIXES or "/" in w:
            if not path.is_file():
                raise VadpipeError(f"detector weights file {path} not found")
            from vadpipe.encoders.spec import sha256

            return {"file": str(path.resolve()), "sha256": sha256(path)}
        return {"tag": w}

    def model(self):
        if self._model is None:
            self._model = build_torchvision_detector(self.spec, self.settings.weights).to(self.settings.device)
        return self._model

    def start(self, video_id: str) -> VideoDetector:
        import torch
        from torchvision.ops import batched_nms

        model = self.model()
        names = coco_categories(self.spec)
        keep_ids = [names.index(c) for c in self.settings.classes]
        s = self.settings

        @torch.inference_mode()
        def detect(index: int, rgb: np.ndarray) -> Detections:
            img = torch.from_numpy(np.ascontiguousarray(rgb)).to(s.device).permute(2, 0, 1).float().div_(255.0)
            out = model([img])[0]
            boxes, scores, labels = out["boxes"].float(), out["scores"].float(), out["labels"]
            keep = scores >= s.score_threshold
            if keep_ids:
                keep &= torch.isin(labels, torch.tensor(keep_ids, device=labels.device))
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            order = batched_nms(boxes, scores, labels, s.nms_threshold)
            boxes, scores, labels = boxes[order].cpu().numpy(), scores[order].cpu().numpy(), labels[order].tolist()
            return Detections(boxes.astype(np.float32), scores.astype(np.float32), [names[i] for i in labels])

        return detect


def coco_categories(name: str) -> list[str]:
    """The 91 COCO category names torchvision's detectors index (``__background__``, N/A gaps)."""
    from torchvision.models import get_model_weights

    return list(get_model_weights(name).DEFAULT.meta["categories"])


def build_torchvision_detector(name: str, weights: str):
    """A torchvision detector in eval mode with weights by tag, from a local file, or random."""
    import torch
    from torchvision.models import get_model, get_model_weights

    path = Path(weights).expanduser()
    if weights == "random" or path.suffix in WEIGHT_SUFFIXES or "/" in weights:
        torch.manual_seed(0)
        model = get_model(name, weights=None, weights_backbone=None, num_classes=91)
        if weights != "random":
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                try:
                    state = torch.load(str(path), map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - an unreadable or unsafe file is the user's
                    raise VadpipeError(f"{path}: not a state dict torch can read safely ({exc})".splitlines()[0]) from None
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]  # a training checkpoint
            try:
                model.load_state_dict(state)
            except (RuntimeError, TypeError) as exc:
                first = str(exc).strip().splitlines()
                raise VadpipeError(f"{path}: does not fit {name} ({first[1].strip() if len(first) > 1 else first[0]})") from None
        return model.eval()
    enum = get_model_weights(name)
    try:
        tag = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        raise VadpipeError(f"detector {name!r}: unknown weights {weights!r} (tags: DEFAULT, "
                           f"{', '.join(enum.__members__)}; or a local file, or random)") from None
    try:
        return get_model(name, weights=tag, weights_backbone=None).eval()
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise VadpipeError(f"detector {name!r}: weights {weights!r} could not be loaded ({exc}); on a machine "
                           f"without internet pass a local file: --objects-param weights=/path/to/weights.pth") from None


# ---------------------------------------------------------------- file:DIR
@dataclass(frozen=True)
class FileSettings:
    first_frame: int = 1  # the frame number of a video's first frame in the files (MOT: 1)
    score_threshold: float | None = None  # drop boxes scored below (None: keep all)

    def __post_init__(self):
        if self.first_frame not in (0, 1):
            raise VadpipeError(f"detector 'file': first_frame must be 0 or 1, got {self.first_frame}")


class FileDetector(Detector):
    Settings = FileSettings

    def __init__(self, spec: str, settings):
        super().__init__(spec, settings)
        self.folder = Path(spec[len("file:"):]).expanduser()
        if not self.folder.is_dir():
            raise VadpipeError(f"detector {spec!r}: folder {self.folder} not found")

    def start(self, video_id: str) -> VideoDetector:
        frames = read_mot_file(self.folder / f"{video_id}.txt", self.settings.first_frame)
        threshold = self.settings.score_threshold

        def detect(index: int, rgb: np.ndarray) -> Detections:
            dets = frames.get(index)
            if dets is None:
                return Detections.empty()
            if threshold is not None:
                dets = dets.select(dets.scores >= threshold)
            return dets

        return detect


def read_mot_file(path: Path, first_frame: int = 1) -> dict[int, Detections]:
    """``frame,id,x,y,w,h,score[,class]`` lines -> detections per 0-based frame index.

    A bad line is an :class:`ObjectsError` naming ``file:line``; blank lines and ``#`` comments
    are skipped; a file without ids (all -1) is tracked by vadpipe, ids are kept otherwise."""
    if not path.is_file():
        raise ObjectsError(f"{path}: detections file not found")
    rows: dict[int, list] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            cols = [c.strip() for c in text.split(",")]
            if len(cols) < 7:
                raise ObjectsError(f"{path}:{n}: expected frame,id,x,y,w,h,score[,class], got {len(cols)} column(s)")
            try:
                frame, tid = int(float(cols[0])), int(float(cols[1]))
                x, y, w, h, score = (float(c) for c in cols[2:7])
            except ValueError:
                raise ObjectsError(f"{path}:{n}: frame,id,x,y,w,h,score must be numbers: {text[:80]!r}") from None
            if frame < first_frame:
                raise ObjectsError(f"{path}:{n}: frame {frame} before the first frame ({first_frame})")
            if not (np.isfinite([x, y, w, h, score]).all() and w > 0 and h > 0):
                raise ObjectsError(f"{path}:{n}: box needs finite x, y and positive w, h: {text[:80]!r}")
            label = cols[7] if len(cols) > 7 and cols[7] not in ("", "-1") else "object"
            rows.setdefault(frame - first_frame, []).append((x, y, x + w, y + h, score, tid, label))
    out = {}
    for frame, items in rows.items():
        arr = np.array([r[:5] for r in items], dtype=np.float64)
        out[frame] = Detections(arr[:, :4].astype(np.float32), arr[:, 4].astype(np.float32),
                                [r[6] for r in items], np.array([r[5] for r in items], dtype=np.int64))
    if out and all((d.ids < 0).all() for d in out.values()):
        out = {f: d._replace(ids=None) for f, d in out.items()}  # no ids anywhere: vadpipe tracks
    return out


# ---------------------------------------------------------------- registry
DETECTORS: dict[str, type[Detector]] = {"motion": MotionDetector, **{n: TorchvisionDetector for n in TORCHVISION}}


def detector_class(spec: str) -> type[Detector]:
    if spec.startswith("file:"):
        return FileDetector
    if spec not in DETECTORS:
        raise VadpipeError(f"unknown detector {spec!r} (known: {', '.join(DETECTORS)}, file:DIR)")
    return DETECTORS[spec]


def make_detector(spec: str, settings) -> Detector:
    return detector_class(spec)(spec, settings)
