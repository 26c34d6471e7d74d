"""``gatekeeper serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from gatekeeper.cli._app import CatalogOption, ConfigOption, app, friendly_errors, setup


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
        run_server(settings, host=host, port=port)
