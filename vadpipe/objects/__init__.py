"""The object-centric stage: detect, track and crop the objects of every sampled frame.

Three of the methods vadpipe implements score objects, not whole frames (VLAVAD: YOLOX +
ByteTrack crops; Gao et al.: per-object clips; Dong's object mode). ``vadpipe featurize
--objects DETECTOR`` runs this stage inside the decode workers, beside the frame path:

    sampled frame (full resolution) -> detector -> tracker -> square crops with context
    -> the same CLIP encoder as the frames -> an objects group in the cache

* :mod:`~vadpipe.objects.detectors` -- the detector registry: ``motion`` (OpenCV background
  subtraction, no weights: the offline default), torchvision's COCO detectors by name, and
  ``file:DIR`` (MOT-challenge text files made by any other detector or tracker);
* :mod:`~vadpipe.objects.tracking` -- ByteTrack (``supervision``) over the sampled frames;
* :mod:`~vadpipe.objects.crops` -- square crops around boxes, padded at the border, and the
  frame crop modes (``--crop center|full|pad``);
* :mod:`~vadpipe.objects.config` -- :class:`ObjectsConfig` (what the recipe records) and the
  cache key of an objects group (``ENCODER_KEY+DETECTOR``).

Nothing here imports torch, OpenCV or supervision at import time.
"""

from vadpipe.objects.config import OBJECTS, ObjectsConfig, TrackerConfig, objects_key

__all__ = ["OBJECTS", "ObjectsConfig", "TrackerConfig", "objects_key"]
