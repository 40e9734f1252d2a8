"""The command line: the only place that prints or picks exit codes.

Each module registers its commands on :data:`photosift.cli.app.app`: ``library`` (classify, results, correct,
recategorize), ``find`` (search, similar, duplicates, hide), ``models`` (models, export, optimize, quantize, eval), ``serve`` (serve, bench). They call
:mod:`photosift.services` and print; conventions are in :mod:`photosift.cli.common`. Heavy imports stay inside
the commands so ``photosift --help`` and ``photosift results`` start fast.
"""

from __future__ import annotations

import sys

from photosift.cli import find, library, models, serve  # noqa: F401 - registers the commands
from photosift.cli.app import app


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a run: stop quietly
        sys.exit(130)


__all__ = ["app", "main"]
