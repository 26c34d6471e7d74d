"""The Typer app, its shared options, and the edge where library errors become exit codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from typer.core import TyperGroup

from gatekeeper.errors import (
    BackendError,
    CatalogError,
    ConfigError,
    DatasetError,
    EmbeddingError,
    GatekeeperError,
    InputError,
    ModelNotFoundError,
    StoreError,
)
from gatekeeper.rules import rules_help
from gatekeeper.settings import Settings, load_settings

#: Click's usage error (a bad or missing option, an unknown command): the base of
#: ``typer.BadParameter``, whichever Click the installed Typer uses (recent ones carry their own).
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class _Commands(TyperGroup):
    """The app's command group: a usage error (an option missing, misspelt or of a bad value,
    an unknown command) is one ``error:`` line on stderr and a ``try: gatekeeper <command>
    --help`` line, exit 2, as every other error of the CLI, instead of Click's usage lines and
    boxed panel."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors(ctx):  # the command's own options are parsed here
            return super().invoke(ctx)


@contextmanager
def _usage_errors(group: Any = None) -> Iterator[None]:
    """Print a Click usage error as one line (and where help is), then exit with its code.
    ``group``: the group's context, whose chosen command is where help is when the error
    carries no context of its own (an option missing its value: ``index --catalog``)."""
    try:
        yield
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `gatekeeper` alone: the help, as it is
            raise
        _stderr().print(f"[bold red]error:[/] {escape(_usage_problem(exc))}", highlight=False)
        ctx = getattr(exc, "ctx", None)
        where = _command_path(ctx if ctx is not None else group)
        if ctx is None and group is not None and group.invoked_subcommand:
            where += f" {group.invoked_subcommand}"
        _stderr().print(f"try: {escape(where)} --help", highlight=False)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None


#: What a message text starting with '-' needs (Click reads it as options otherwise).
_AFTER_DASHES = "a message starting with '-' goes after --: gatekeeper check -- '-50 euro off?'"


def _usage_problem(exc: Exception) -> str:
    """A Click usage error's message on one line, as the CLI's other errors read (lower case
    first, no full stop); for ``check``, an unknown option says how to give a text starting
    with '-'."""
    formatted = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(str(formatted).split()).rstrip(".")
    if len(message) > 1 and message[0].isupper() and message[1].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command.name if ctx is not None else None
    if type(exc).__name__ == "NoSuchOption" and command == "check":
        message += f" ({_AFTER_DASHES})"
    return message


def _command_path(ctx: Any) -> str:
    """``gatekeeper <command>`` for the command ``ctx`` parses (however the CLI was started)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["gatekeeper", *reversed(names)])


app = typer.Typer(
    cls=_Commands,
    name="gatekeeper",
    help="An intent gate in front of a customer-service LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _print_version(value: bool) -> None:
    if value:
        from gatekeeper import __version__

        typer.echo(f"gatekeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """An intent gate in front of a customer-service LLM."""


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (default: configs/gatekeeper.yaml)."),
]


class TuneMethod(StrEnum):
    """What ``gatekeeper tune`` (and ``eval --tune``) learns: a linear adapter on the frozen
    model's vectors, or a fine-tuned copy of a local encoder."""

    adapter = "adapter"
    encoder = "encoder"


CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="Catalog file (YAML, CSV or JSONL; default: the configured catalog). Each catalog "
        "has a store of its own.",
    ),
]

USER_ERRORS = (ConfigError, CatalogError, DatasetError, InputError)
UNAVAILABLE = (EmbeddingError, StoreError, BackendError)


def exit_code(exc: GatekeeperError) -> int:
    """The exit code of a library error (a model that is not there was named by the user)."""
    if isinstance(exc, (*USER_ERRORS, ModelNotFoundError)):
        return 2
    if isinstance(exc, UNAVAILABLE):
        return 3
    return 1


def _stderr() -> Console:
    """The console for errors, warnings and progress: a message is never hard-wrapped."""
    return Console(stderr=True, soft_wrap=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Print library errors as one clear message and exit with their code: no traceback."""
    try:
        yield
    except GatekeeperError as exc:
        _stderr().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(exit_code(exc)) from None
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        raise typer.Exit(130) from None


def setup(config: Path | None, *, quiet: bool = False, **overrides: Any) -> Settings:
    """Load settings and configure logging; ``quiet`` commands (all but ``serve``) log warnings
    and worse only, and print a warning's advice (its ``hint``: a stale calibration) as a
    readable line, not as a log line."""
    from gatekeeper.logging import configure_logging

    settings = load_settings(config, **overrides)
    log_settings = settings.logging
    if quiet and "level" not in log_settings.model_fields_set:  # set in YAML, .env or env var
        log_settings = log_settings.model_copy(update={"level": "WARNING"})
    configure_logging(log_settings, readable_hints=quiet)
    return settings


def load_gate(settings: Settings) -> Any:
    """The gate serving ``settings.catalog``; the catalog's warnings (empty rows skipped,
    repeated rows, unknown columns) are printed on stderr."""
    from gatekeeper.catalog import read_catalog
    from gatekeeper.gate import Gatekeeper

    loaded = read_catalog(settings.catalog)
    for warning in loaded.warnings:
        _stderr().print(
            f"[bold yellow]warning:[/] catalog {escape(str(settings.catalog))}: {escape(warning)}",
            highlight=False,
        )
    return Gatekeeper.from_settings(settings, catalog=loaded.catalog)


class TimeLeftColumn(TimeRemainingColumn):
    """The estimated time left ("0:01:20 left") of a running task whose total is known; blank
    for a task without a total (nothing to estimate) or a finished one."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        shown = super().render(task)
        return Text(f"{shown.plain} left", style=shown.style)


def progress_bar(console: Console | None = None) -> Progress:
    """The progress bar every long command uses (hidden when not on a terminal): elapsed time,
    and the time left of a task with a known total."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeLeftColumn(),
        console=console or _stderr(),
        transient=False,
    )


def tracked(
    progress: Progress, description: str, *, hidden_until_total: bool = False
) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """A (progress, on_total) pair of callbacks feeding one progress-bar task; with
    ``hidden_until_total``, the bar shows only once a total above 0 is known (work that may
    turn out to be nothing: an index already in sync)."""
    task = progress.add_task(escape(description), total=None, visible=not hidden_until_total)

    def advance(n: int) -> None:
        progress.advance(task, n)

    def set_total(total: int) -> None:
        progress.update(task, total=total, visible=total > 0)  # never an empty 0/0 bar

    return advance, set_total


# -- eval, calibrate, demo ------------------------------------------------------------------

DatasetsOption = Annotated[
    list[Path],
    typer.Option("--dataset", "-d", help="Labelled dataset (JSONL or CSV); repeat for several."),
]
SkipInvalidOption = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Skip malformed dataset rows (listed in the report) instead of failing.",
    ),
]
RuleOption = Annotated[
    str | None,
    typer.Option("--rule", help=f"Decision rule for this run. {rules_help()}."),
]
DEMO_CATALOG = Path("configs/intents/shop.yaml")
DEMO_CALIBRATION = Path("eval/datasets/shop_calibration.jsonl")
DEMO_DATASETS = (
    Path("eval/datasets/shop_test.jsonl"),
    Path("eval/datasets/shop_conversations.jsonl"),
)
DEMO_TARGET = 0.98
DEFAULT_SETTINGS_FILE = Path("configs/gatekeeper.yaml")


def settings_target(config: Path | None, *, write: bool) -> Path:
    """The settings file a ``--write`` stores into: ``--config``, else ``$GATEKEEPER_CONFIG``,
    else ``configs/gatekeeper.yaml`` under the working directory. Never the package's own copy
    (the default settings read from anywhere else, shared by every project): with ``write``
    and none of those, :class:`InputError` asking for ``--config``."""
    from gatekeeper._variables import CONFIG_VARIABLE
    from gatekeeper.settings import default_config_path, own_settings_file

    if config is not None:
        return config
    own = own_settings_file()
    if own is not None:
        return own
    bundled = default_config_path()
    if write:
        raise InputError(
            f"--write needs a settings file of yours: pass --config my.yaml (created if absent) "
            f"or set {CONFIG_VARIABLE}; the settings read here are the package's own"
            + (f" ({bundled})" if bundled else "")
            + ", which every project without a settings file shares"
        )
    return bundled or DEFAULT_SETTINGS_FILE
