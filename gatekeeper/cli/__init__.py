"""The ``gatekeeper`` command: a thin layer that parses, calls the library and formats.

Library errors are mapped to exit codes here, and only here:
2 = the user's mistake (settings, catalog, dataset, message, a model name or path that is not
there), 3 = a part is unavailable (model failing, Chroma, upstream), 1 = anything else the
library reports.
"""

from __future__ import annotations

from gatekeeper.cli import check, evaluate, index, init, serve, tune
from gatekeeper.cli._app import app

_COMMANDS = (init, index, check, serve, evaluate, tune)  # importing them registers their commands


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
