"""``gatekeeper index``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from gatekeeper.cli._app import (
    CatalogOption,
    ConfigOption,
    _stderr,
    app,
    friendly_errors,
    load_gate,
    progress_bar,
    setup,
    tracked,
)
from gatekeeper.errors import UncalibratedError
from gatekeeper.language import catalog_language_warning
from gatekeeper.legibility import index_warnings


@app.command()
def index(
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-embed everything into a fresh collection.")
    ] = False,
) -> None:
    """Build or sync the Chroma collection of exemplars."""
    with friendly_errors():
        settings = setup(config, quiet=True, **({"catalog": catalog} if catalog else {}))
        gate = load_gate(settings)
        console = _stderr()
        with console.status("loading the embedding model"):
            gate.embedder.load()
        with progress_bar(console) as progress:
            advance, set_total = tracked(progress, "embedding exemplars", hidden_until_total=True)
            report = gate.index(rebuild=rebuild, progress=advance, on_total=set_total)
        typer.echo(
            f"indexed {settings.catalog} into {gate.store.name} (build {report.collection}): "
            f"{report.added} added, {report.updated} updated, {report.deleted} deleted, "
            f"{report.unchanged} unchanged in {report.seconds:.1f}s"
            + (" (rebuilt)" if report.rebuilt else "")
        )
        warnings = index_warnings(gate.store, gate.embedder)
        if language := catalog_language_warning(gate.catalog, gate.embedder.identity):
            warnings.append(language)
        for warning in warnings:
            console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
        try:
            gate.check_calibrated()
        except UncalibratedError as exc:  # the index is fine; serving needs a recalibration
            console.print(f"[bold yellow]recalibrate before serving:[/] {escape(str(exc))}")
