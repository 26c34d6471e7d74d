"""The ``gatekeeper`` command: a thin layer that parses, calls the library and formats.

Library errors are mapped to exit codes here, and only here:
2 = the user's mistake (settings, catalog, dataset, message), 3 = a part is unavailable
(model, Chroma, upstream), 1 = anything else the library reports.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gatekeeper.errors import (
    BackendError,
    CatalogError,
    ConfigError,
    DatasetError,
    EmbeddingError,
    GatekeeperError,
    InputError,
    StoreError,
)
from gatekeeper.settings import Settings, load_settings

app = typer.Typer(
    name="gatekeeper",
    help="An intent gate in front of a customer-service LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (default: configs/gatekeeper.yaml)."),
]
CatalogOption = Annotated[
    Path | None, typer.Option("--catalog", help="Catalog file (YAML, CSV or JSONL).")
]

USER_ERRORS = (ConfigError, CatalogError, DatasetError, InputError)
UNAVAILABLE = (EmbeddingError, StoreError, BackendError)


def exit_code(exc: GatekeeperError) -> int:
    """The exit code of a library error."""
    if isinstance(exc, USER_ERRORS):
        return 2
    if isinstance(exc, UNAVAILABLE):
        return 3
    return 1


def _stderr() -> Console:
    return Console(stderr=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Print library errors as one clear message and exit with their code: no traceback."""
    try:
        yield
    except GatekeeperError as exc:
        _stderr().print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(exit_code(exc)) from None
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        raise typer.Exit(130) from None


def setup(config: Path | None, *, quiet: bool = False, **overrides: Any) -> Settings:
    """Load settings and configure logging; ``quiet`` commands log warnings and worse only."""
    from gatekeeper.logging import configure_logging

    settings = load_settings(config, **overrides)
    log_settings = settings.logging
    if quiet and "GATEKEEPER_LOGGING__LEVEL" not in os.environ:
        log_settings = log_settings.model_copy(update={"level": "WARNING"})
    configure_logging(log_settings)
    return settings


def progress_bar(console: Console | None = None) -> Progress:
    """The progress bar every long command uses (hidden when not on a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or _stderr(),
        transient=False,
    )


def tracked(progress: Progress, description: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """A (progress, on_total) pair of callbacks feeding one progress-bar task."""
    task = progress.add_task(description, total=None)

    def advance(n: int) -> None:
        progress.advance(task, n)

    def set_total(total: int) -> None:
        progress.update(task, total=total)

    return advance, set_total


@app.command()
def index(
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-embed everything into a fresh collection.")
    ] = False,
) -> None:
    """Build or sync the Chroma collection of exemplars."""
    from gatekeeper.gate import Gatekeeper

    with friendly_errors():
        settings = setup(config, quiet=True, **({"catalog": catalog} if catalog else {}))
        gate = Gatekeeper.from_settings(settings)
        console = _stderr()
        with console.status("loading the embedding model"):
            gate.embedder.load()
        with progress_bar(console) as progress:
            advance, set_total = tracked(progress, "embedding exemplars")
            report = gate.index(rebuild=rebuild, progress=advance, on_total=set_total)
        typer.echo(
            f"indexed {settings.catalog} into {report.collection}: "
            f"{report.added} added, {report.updated} updated, {report.deleted} deleted, "
            f"{report.unchanged} unchanged in {report.seconds:.1f}s"
            + (" (rebuilt)" if report.rebuilt else "")
        )


@app.command()
def check(
    text: Annotated[str | None, typer.Argument(help="The customer message ('-' reads stdin).")] = None,
    config: ConfigOption = None,
    conversation: Annotated[
        Path | None,
        typer.Option("--conversation", help="A JSON file of chat messages; the last user turn is judged."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decide one message and print the decision."""
    from gatekeeper.gate import Gatekeeper

    with friendly_errors():
        message = _message_argument(text, conversation)
        settings = setup(config, quiet=True)
        gate = Gatekeeper.from_settings(settings)
        decision = gate.check(message, on_error="raise")
        if as_json:
            typer.echo(json.dumps(decision.model_dump(mode="json"), ensure_ascii=False))
            return
        table = Table(show_header=False, box=None)
        for key in ("route", "intent", "score", "threshold", "reason", "latency_ms"):
            value = getattr(decision, key)
            table.add_row(f"[bold]{key}[/]", f"{value:.3f}" if isinstance(value, float) else str(value))
        if decision.reply:
            table.add_row("[bold]reply[/]", decision.reply)
        for n in decision.neighbours[:3]:
            table.add_row("[dim]nearest[/]", f"{n['similarity']:.3f}  {n['intent']}: {n['text']}")
        Console().print(table)


def _message_argument(text: str | None, conversation: Path | None) -> Any:
    if conversation is not None:
        try:
            messages = json.loads(conversation.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read conversation {conversation}: {exc}") from exc
        if isinstance(messages, dict):
            messages = messages.get("messages")
        if not isinstance(messages, list):
            raise InputError(f"{conversation}: expected a JSON list of chat messages")
        return messages
    if text is None:
        raise InputError("give the message to check, or --conversation FILE")
    return sys.stdin.read() if text == "-" else text


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on.")] = None,
) -> None:
    """Run the OpenAI-compatible gating proxy."""
    from gatekeeper.server import run_server

    with friendly_errors():
        settings = setup(config)
        run_server(settings, host=host, port=port)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
