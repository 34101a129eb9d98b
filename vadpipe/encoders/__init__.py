"""The encoder layer both stages stand on: featurize embeds frames with it, heads embed text.

* :mod:`~vadpipe.encoders.spec` -- ``MODEL:TAG`` names, cache keys, recipes, embedding
  sizes (no torch);
* :mod:`~vadpipe.encoders.device` -- device and precision (one precision -> dtype map);
* :mod:`~vadpipe.encoders.preprocessing` -- open_clip's preprocessing on uint8 tensors;
* :mod:`~vadpipe.encoders.clip` -- the open_clip wrapper and vadpipe's tiny configs.

Importing this package imports neither torch nor open_clip; loading a model does.
"""

from vadpipe.encoders.clip import ClipEncoder, load_clip, register_tiny_config
from vadpipe.encoders.device import PRECISIONS, resolve_device, resolve_precision, torch_dtype
from vadpipe.encoders.preprocessing import Preprocessing
from vadpipe.encoders.spec import (
    RANDOM_SEED,
    RANDOM_TAG,
    TINY,
    EncoderSpec,
    canonical_key,
    embed_dim,
    parse_encoder,
    spec_from_recipe,
)

__all__ = [
    "PRECISIONS", "RANDOM_SEED", "RANDOM_TAG", "TINY", "ClipEncoder", "EncoderSpec", "Preprocessing",
    "canonical_key", "embed_dim", "load_clip", "parse_encoder", "register_tiny_config", "resolve_device",
    "resolve_precision", "spec_from_recipe", "torch_dtype",
]
