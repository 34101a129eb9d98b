"""The feature cache: one subtree per encoder key, one group per video (Zarr v3 or HDF5).

* :mod:`~vadpipe.cache.store` -- :class:`FeatureCache`, the one interface every stage uses;
* :mod:`~vadpipe.cache.zarr_backend` / :mod:`~vadpipe.cache.zarr_fast` -- the Zarr v3
  directory store and the fast reader of its single-chunk arrays;
* :mod:`~vadpipe.cache.hdf5_backend` -- the same tree in one HDF5 file;
* :mod:`~vadpipe.cache.failures` -- the failures log featurize, captioner and import write;
* :mod:`~vadpipe.cache.tools` -- ``vadpipe cache info|verify|merge|import|export``.
"""

from vadpipe.cache.store import (
    CAPTIONER,
    DONE,
    EMB_CHUNK_FRAMES,
    FAILED,
    HDF5_SUFFIXES,
    IMAGE,
    INCOMPLETE,
    OBJECTS,
    RECIPE_FIELDS,
    SCHEMA_VERSION,
    FeatureCache,
    VideoFeatures,
    check_node_name,
    is_hdf5,
    recipe_difference,
    shard_cache_path,
)

__all__ = [
    "CAPTIONER", "DONE", "EMB_CHUNK_FRAMES", "FAILED", "HDF5_SUFFIXES", "IMAGE", "INCOMPLETE", "OBJECTS",
    "RECIPE_FIELDS", "SCHEMA_VERSION", "FeatureCache", "VideoFeatures", "check_node_name", "is_hdf5", "recipe_difference",
    "shard_cache_path",
]
