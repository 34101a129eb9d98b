"""The one exception type for user mistakes.

A :class:`VadpipeError` carries a one-line message that says what is wrong and where
(file, row, video). The CLI prints it as is and exits non-zero, without a traceback;
anything else that escapes is a bug in vadpipe and keeps its traceback.
"""


class VadpipeError(Exception):
    """A user-facing error: bad input, missing file, mismatched encoder."""
