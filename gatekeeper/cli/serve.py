"""``gatekeeper serve``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from gatekeeper.calibration import refuse_foreign_threshold
from gatekeeper.cli._app import (
    CatalogOption,
    ConfigOption,
    app,
    exit_code,
    friendly_errors,
    setup,
)
from gatekeeper.errors import GatekeeperError
from gatekeeper.settings import Settings


@app.command()
def serve(
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port to listen on (1-65535).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            max=64,
            help="Serving processes on the port, each with its own model (server.processes).",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible gating proxy."""
    from gatekeeper.interfaces.proxy.runner import run_server

    with friendly_errors():
        settings = setup(config, quiet=False, **({"catalog": catalog} if catalog else {}))
        if processes is not None:
            server = settings.server.model_copy(update={"processes": processes})
            settings = settings.model_copy(update={"server": server})
        with _start_failures_logged(settings):
            refuse_foreign_threshold(settings, "serve", None)
            run_server(settings, host=host, port=port)


@contextmanager
def _start_failures_logged(settings: Settings) -> Iterator[None]:
    """With JSON logging, a failure to start is one ``server.start_failed`` log line (its
    ``error`` and ``error_type``), as the rest of the server's output, instead of the readable
    ``error:`` line; the exit code is the same."""
    from gatekeeper.logging import get_logger, log_format

    try:
        yield
    except GatekeeperError as exc:
        if log_format(settings.logging) != "json":
            raise
        get_logger().error("server.start_failed", error=str(exc), error_type=type(exc).__name__)
        raise typer.Exit(exit_code(exc)) from None
