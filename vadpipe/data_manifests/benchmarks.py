"""Benchmark manifest builders: each public dataset's own annotation files -> a Manifest.

``build_benchmark_manifest("avenue", "data/annotations/avenue", "data/avenue", gt="masks")``

* ``annotations`` is a folder holding that dataset's files under their official names
  (one folder per dataset: ``ucf_crime/``, ``shanghaitech/``, ``xd_violence/``,
  ``avenue/``, ``ucsd_ped2/``).
* ``videos`` is the dataset root; each ``VideoEntry.path`` is where the dataset's usual
  layout puts that video (absolute). Nothing is opened, so the videos need not exist yet.
* Every interval is 0-based and half-open ``[start, end)``; each builder's docstring says
  how it converts its source files. ``Manifest.meta`` records the dataset, the variant
  chosen (split, ground truth), the conventions and the standard metrics (``protocol``,
  headline first).

=================  =======================================  ================================
dataset            options                                  protocol
=================  =======================================  ================================
``ucf_crime``      ``end``                                  micro AUC
``shanghaitech``   ``split``, ``cross_scene``, ``classes``  micro AUC, macro AUC
``xd_violence``    --                                       AP
``avenue``         ``gt``                                   micro AUC, macro AUC
``ped2``           ``gt``                                   micro AUC, macro AUC
=================  =======================================  ================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from vadpipe.data_manifests.avenue import build_avenue
from vadpipe.data_manifests.schema import Manifest
from vadpipe.data_manifests.shanghaitech import build_shanghaitech
from vadpipe.data_manifests.ucf_crime import build_ucf_crime
from vadpipe.data_manifests.ucsd_ped2 import build_ped2
from vadpipe.data_manifests.xd_violence import build_xd_violence
from vadpipe.errors import VadpipeError

BUILDERS: dict[str, Callable[..., Manifest]] = {
    "ucf_crime": build_ucf_crime,
    "shanghaitech": build_shanghaitech,
    "xd_violence": build_xd_violence,
    "avenue": build_avenue,
    "ped2": build_ped2,
}

_ALIASES = {"ucsd_ped2": "ped2"}  # the annotation folder's name


def build_benchmark_manifest(
    dataset: str, annotations: str | Path, videos: str | Path, **options
) -> Manifest:
    """Build ``dataset``'s manifest; ``options`` go to its builder (see the table above).

    ``dataset`` is matched case-insensitively, ``-`` read as ``_`` (``UCF-Crime`` works).
    """
    key = str(dataset).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in BUILDERS:
        raise VadpipeError(f"unknown dataset {dataset!r} (known: {', '.join(BUILDERS)})")
    builder = BUILDERS[key]
    accepted = [
        p for p in inspect.signature(builder).parameters if p not in ("annotations", "videos")
    ]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise VadpipeError(
            f"{key}: unknown option(s) {', '.join(unknown)} "
            f"(accepted: {', '.join(accepted) or 'none'})"
        )
    return builder(annotations, videos, **options)


def cross_dataset_manifest(train: Manifest, test: Manifest) -> Manifest:
    """The training videos of ``train`` and the test videos of ``test`` as one manifest: train on
    one dataset, test on another (cross-scene rows). It keeps the test dataset's protocol;
    ``meta["train_dataset"]`` names the other. Video ids must not clash."""
    entries = train.select(split="train") + test.select(split="test")
    ids = [e.video_id for e in entries]
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise VadpipeError(f"cross-dataset manifest: video id(s) {', '.join(clash[:3])} in both datasets")
    return Manifest(entries, meta={**test.meta, "train_dataset": train.meta.get("dataset")})


__all__ = [
    "BUILDERS",
    "build_avenue",
    "build_benchmark_manifest",
    "build_ped2",
    "build_shanghaitech",
    "cross_dataset_manifest",
    "build_ucf_crime",
    "build_xd_violence",
]
