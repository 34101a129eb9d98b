"""Stage 2: heads that learn and score straight from the feature cache."""

from vadpipe.models.base import Head, NotFittedError, Scores, get_head, list_heads, load_head, register_head

__all__ = ["Head", "NotFittedError", "Scores", "get_head", "list_heads", "load_head", "register_head"]
