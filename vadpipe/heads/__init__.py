"""Stage 2: heads that learn and score straight from the feature cache.

* :mod:`~vadpipe.heads.base` -- :class:`Head` (inputs, training set, recipe check, save /
  load) and :func:`load_head`;
* :mod:`~vadpipe.heads.registry` -- name -> class, imported lazily (listing needs no torch);
* :mod:`~vadpipe.heads.data` -- a video's inputs and the training set;
* :mod:`~vadpipe.heads.prompts` / :mod:`~vadpipe.heads.text` -- prompt files, text embeddings;
* :mod:`~vadpipe.heads.training` -- seeding, warm-up + cosine, weight-decay groups;
* the heads: ``zeroshot``, ``prototype``, ``kmeans``, ``s3m``, ``anomalyclip``,
  ``clipassist``, ``clipassist-frame``; :mod:`~vadpipe.heads.redefine` adjusts any head's
  scores by text.

No module here imports stage 1 (:mod:`vadpipe.featurize`) or PyAV.
"""

from vadpipe.heads.base import Head, NotFittedError, load_head
from vadpipe.heads.registry import get_head, get_head_class, list_heads, register_head
from vadpipe.scores import Scores

__all__ = ["Head", "NotFittedError", "Scores", "get_head", "get_head_class", "list_heads", "load_head", "register_head"]
