"""The ``vadpipe`` command line: a thin layer over the library.

Each command parses options, builds a config, calls one library function and prints a
short summary; one module per command group (:mod:`.manifest`, :mod:`.featurize`,
:mod:`.cache`, :mod:`.heads`, :mod:`.evaluate`, :mod:`.recipes`, :mod:`.demo`). Heavy imports (torch,
open_clip) happen inside commands so ``--help`` and ``vadpipe heads`` are instant. A user
mistake ends in one ``error: ...`` line and exit code 2; a featurize run where some videos
failed exits with 1 after finishing the others.
"""

from vadpipe.cli._common import app

# importing a command module registers its commands on ``app``, in the order of the flow
from vadpipe.cli import manifest  # noqa: E402, F401, I001
from vadpipe.cli import featurize  # noqa: E402, F401
from vadpipe.cli import cache  # noqa: E402, F401
from vadpipe.cli import heads  # noqa: E402, F401
from vadpipe.cli import evaluate  # noqa: E402, F401
from vadpipe.cli import recipes  # noqa: E402, F401
from vadpipe.cli import demo  # noqa: E402, F401

__all__ = ["app", "main"]


def main():  # pragma: no cover
    app()
