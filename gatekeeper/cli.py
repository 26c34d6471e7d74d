"""The ``gatekeeper`` command: a thin layer that parses, calls the library and formats.

Library errors are mapped to exit codes here, and only here:
2 = the user's mistake (settings, catalog, dataset, message), 3 = a part is unavailable
(model, Chroma, upstream), 1 = anything else the library reports.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gatekeeper.decision import RULES
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
    """Load settings and configure logging; ``quiet`` commands log warnings and worse only."""
    from gatekeeper.logging import configure_logging

    settings = load_settings(config, **overrides)
    log_settings = settings.logging
    if quiet and "level" not in log_settings.model_fields_set:  # set in YAML, .env or env var
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


def tracked(
    progress: Progress, description: str
) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """A (progress, on_total) pair of callbacks feeding one progress-bar task."""
    task = progress.add_task(escape(description), total=None)

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
    text: Annotated[
        str | None, typer.Argument(help="The customer message ('-' reads stdin).")
    ] = None,
    config: ConfigOption = None,
    conversation: Annotated[
        Path | None,
        typer.Option(
            "--conversation", help="A JSON file of chat messages; the last user turn is judged."
        ),
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
            table.add_row(
                f"[bold]{key}[/]",
                escape(f"{value:.3f}" if isinstance(value, float) else str(value)),
            )
        if decision.reply:
            table.add_row("[bold]reply[/]", escape(decision.reply))
        for n in decision.neighbours[:3]:
            table.add_row(
                "[dim]nearest[/]", escape(f"{n['similarity']:.3f}  {n['intent']}: {n['text']}")
            )
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
    typer.Option("--rule", help="Decision rule for this run: density, contrast or top1."),
]
DEMO_CATALOG = Path("configs/intents/shop.yaml")
DEMO_CALIBRATION = Path("eval/datasets/shop_calibration.jsonl")
DEMO_DATASETS = (
    Path("eval/datasets/shop_test.jsonl"),
    Path("eval/datasets/shop_conversations.jsonl"),
)
DEMO_TARGET = 0.98
DEFAULT_SETTINGS_FILE = Path("configs/gatekeeper.yaml")


def _eval_options(latency_sample: int, bootstrap: int, seed: int, shares: list[float]) -> Any:
    from gatekeeper.eval import EvalOptions

    if any(not 0 <= s <= 1 for s in shares):
        raise InputError("--off-topic-share must be between 0 and 1")
    return EvalOptions(
        latency_sample=latency_sample,
        bootstrap=bootstrap,
        seed=seed,
        off_topic_shares=tuple(shares) or (0.7,),
    )


def _target(value: float | None) -> float | None:
    """``--target-pass-rate``, refused unless in (0, 1]."""
    if value is not None and not 0.0 < value <= 1.0:
        raise InputError(f"--target-pass-rate must be above 0 and at most 1, got {value:g}")
    return value


def _run_eval(settings: Settings, plan: Any, out: Path) -> None:
    """Run an eval plan with progress bars, write the report, print the summary."""
    from gatekeeper.eval import evaluate
    from gatekeeper.report import check_report_dir, write_report

    check_report_dir(out)  # before the model loads, not after the whole run
    console = _stderr()
    with progress_bar(console) as progress:
        report, _ = evaluate(settings, plan, task=lambda d: tracked(progress, d))
    with console.status("writing the report"):
        files = write_report(report, out)
    _print_summary(report)
    skipped = report.meta.get("skipped_rows") or []
    if skipped:
        console.print(
            f"[bold yellow]warning:[/] skipped {len(skipped)} malformed rows: "
            + escape(str(skipped[0]))
            + (" …" if len(skipped) > 1 else "")
        )
    if report.counting["gate_errors"]:
        console.print(
            f"[bold red]warning:[/] the gate failed on {report.counting['gate_errors']} "
            "messages (decided by gate.on_error); see the log"
        )
    typer.echo(
        f"report: {files.html}  ({files.json.name}, {files.markdown.name}, "
        f"{len(files.plots)} plots in {files.directory})"
    )


def _print_summary(report: Any) -> None:
    from gatekeeper.report import summary_rows

    table = Table(title="gatekeeper eval", show_lines=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    table.add_column("95% CI / note", style="dim")
    for row in summary_rows(report):
        table.add_row(*(escape(cell) for cell in row))
    Console().print(table)


@app.command("eval")
def eval_command(
    dataset: DatasetsOption,
    config: ConfigOption = None,
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", help="Catalog to evaluate (indexed in a collection of its own)."),
    ] = None,
    calibrate_on: Annotated[
        Path | None,
        typer.Option("--calibrate-on", help="Choose the threshold on this labelled file alone."),
    ] = None,
    target_pass_rate: Annotated[
        float | None,
        typer.Option("--target-pass-rate", min=0.0, max=1.0, help="In-domain pass rate to reach."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Use this threshold (no calibration).")
    ] = None,
    rule: RuleOption = None,
    skip_invalid: SkipInvalidOption = False,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Send every message through a real gating proxy on loopback in front of a "
            "recording upstream, and count the calls the upstream received.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "reports/eval"
    ),
    latency_sample: Annotated[
        int, typer.Option("--latency-sample", min=0, help="Messages timed one by one.")
    ] = 200,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap draws.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap and sampling.")] = 0,
    off_topic_share: Annotated[
        list[float] | None,
        typer.Option("--off-topic-share", help="Traffic mix to project to (repeatable)."),
    ] = None,
) -> None:
    """Measure the gate on labelled data: LLM calls saved, customers wrongly blocked, cost."""
    from gatekeeper.eval import EvalPlan

    with friendly_errors():
        if calibrate_on is not None and target_pass_rate is None:
            raise InputError("--calibrate-on needs --target-pass-rate")
        if target_pass_rate is not None and calibrate_on is None:
            raise InputError(
                "--target-pass-rate needs --calibrate-on FILE (the labelled file to choose "
                "the threshold on)"
            )
        if calibrate_on is not None and threshold is not None:
            raise InputError("give --threshold or --calibrate-on, not both")
        settings = setup(config, quiet=True)
        plan = EvalPlan(
            datasets=tuple(dataset),
            catalog=catalog,
            calibrate_on=calibrate_on,
            target_pass_rate=_target(target_pass_rate),
            threshold=threshold,
            rule=_rule(rule),
            skip_invalid=skip_invalid,
            replay=replay,
            options=_eval_options(latency_sample, bootstrap, seed, off_topic_share or [0.7]),
        )
        _run_eval(settings, plan, out)


def _rule(rule: str | None) -> str | None:
    if rule is not None and rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; use one of {', '.join(sorted(RULES))}")
    return rule


@app.command()
def calibrate(
    dataset: Annotated[
        Path, typer.Option("--dataset", "-d", help="Labelled calibration file (JSONL or CSV).")
    ],
    target_pass_rate: Annotated[
        float,
        typer.Option("--target-pass-rate", min=0.0, max=1.0, help="In-domain pass rate to reach."),
    ],
    config: ConfigOption = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Catalog (indexed in a collection of its own).")
    ] = None,
    rule: RuleOption = None,
    skip_invalid: SkipInvalidOption = False,
    write: Annotated[
        bool, typer.Option("--write", help="Store gate.threshold in the settings file.")
    ] = False,
) -> None:
    """Choose the threshold that passes the target share of in-domain messages."""
    from gatekeeper.datasets import load_dataset
    from gatekeeper.eval import build_gate, check_settings_target, ensure_index, store_threshold
    from gatekeeper.eval import calibrate as choose
    from gatekeeper.settings import default_config_path, project_path

    with friendly_errors():
        _target(target_pass_rate)
        target = config if config is not None else default_config_path()
        target = target or project_path(DEFAULT_SETTINGS_FILE)
        settings = setup(
            config if config is None or config.exists() or not write else None, quiet=True
        )
        if write:
            _check_write_catalog(catalog, settings, target)
            check_settings_target(target)
        data = load_dataset(dataset, skip_invalid=skip_invalid)
        if data.skipped:
            _stderr().print(f"[bold yellow]warning:[/] skipped {len(data.skipped)} malformed rows")
        gate = build_gate(settings, catalog, _rule(rule))
        with progress_bar(_stderr()) as progress:
            ensure_index(gate, lambda d: tracked(progress, d))
            result = choose(gate, data, target_pass_rate, lambda d: tracked(progress, d))
        if not result.reached:
            _stderr().print("[bold yellow]warning:[/] no threshold reaches the target on this file")
        typer.echo(
            f"threshold {result.threshold:.4f}: on {dataset} it passes "
            f"{_pct(result.in_domain_pass_rate)} of {result.n_in_domain} in-domain messages "
            f"and blocks {_pct(result.off_topic_block_rate)} of {result.n_off_topic} off-topic "
            f"(rule {gate.rule.name}, model {gate.embedder.identity})"
        )
        if write:
            command = (
                f"gatekeeper calibrate --dataset {dataset} --target-pass-rate {target_pass_rate}"
            )
            if catalog is not None:
                command += f" --catalog {catalog}"
            note = (
                f"{command} --write → {_pct(result.in_domain_pass_rate)} in-domain pass, "
                f"{_pct(result.off_topic_block_rate)} off-topic blocked there "
                f"({gate.embedder.identity}, rule {gate.rule.name})"
            )
            store_threshold(target, result.threshold, note)
            typer.echo(f"wrote gate.threshold = {result.threshold:.4f} to {target}")


def _check_write_catalog(catalog: Path | None, settings: Settings, target: Path) -> None:
    """``calibrate --write`` stores a threshold only for the catalog the settings file serves."""
    if catalog is None or catalog.resolve() == settings.catalog.resolve():
        return
    raise InputError(
        f"--write would store a threshold tuned for {catalog} in {target}, which serves the "
        f"catalog {settings.catalog}; set 'catalog: {catalog}' in {target} as well, or drop "
        "--catalog"
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


@app.command()
def demo(
    config: ConfigOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "reports/demo"
    ),
    use_configured_threshold: Annotated[
        bool,
        typer.Option(
            "--use-configured-threshold",
            help="Skip calibration; use gate.threshold from the settings.",
        ),
    ] = False,
    latency_sample: Annotated[
        int, typer.Option("--latency-sample", min=0, help="Messages timed one by one.")
    ] = 200,
) -> None:
    """Index the shop catalog, calibrate, evaluate the bundled data, print the savings.

    Calibrates on the bundled calibration split, evaluates the bundled test split and
    conversations, prints the summary and writes the report.
    """
    from gatekeeper.eval import EvalOptions, EvalPlan
    from gatekeeper.settings import project_path

    with friendly_errors():
        settings = setup(config, quiet=True)
        plan = EvalPlan(
            datasets=tuple(project_path(p) for p in DEMO_DATASETS),
            catalog=project_path(DEMO_CATALOG),
            calibrate_on=None if use_configured_threshold else project_path(DEMO_CALIBRATION),
            target_pass_rate=None if use_configured_threshold else DEMO_TARGET,
            options=EvalOptions(latency_sample=latency_sample),
        )
        _run_eval(settings, plan, out)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
