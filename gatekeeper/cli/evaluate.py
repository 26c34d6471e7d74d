"""``gatekeeper eval``, ``calibrate`` and ``demo``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gatekeeper.cli._app import (
    DEMO_CALIBRATION,
    DEMO_CATALOG,
    DEMO_DATASETS,
    DEMO_TARGET,
    ConfigOption,
    DatasetsOption,
    RuleOption,
    SkipInvalidOption,
    TuneMethod,
    _stderr,
    app,
    friendly_errors,
    progress_bar,
    settings_target,
    setup,
    tracked,
)
from gatekeeper.errors import (
    InputError,
)
from gatekeeper.eval.formatting import pct
from gatekeeper.gate_settings import CalibrationRecord
from gatekeeper.paths import option
from gatekeeper.rules import DEFAULT_RULE, RULES
from gatekeeper.settings import Settings


def _eval_options(latency_sample: int, bootstrap: int, seed: int, shares: list[float]) -> Any:
    from gatekeeper.eval.schema import EvalOptions

    if any(not 0 <= s <= 1 for s in shares):
        raise InputError("--off-topic-share must be between 0 and 1")
    return EvalOptions(
        latency_sample=latency_sample,
        bootstrap=bootstrap,
        seed=seed,
        off_topic_shares=tuple(shares) or (0.7,),
    )


def _target(value: float | None, option: str = "--target-pass-rate") -> float | None:
    """``--target-pass-rate`` (or ``option``), refused unless in (0, 1]."""
    from gatekeeper.eval.thresholds import check_target

    if value is not None:
        check_target(value, option)
    return value


def _run_eval(settings: Settings, plan: Any, out: Path, title: str = "gatekeeper eval") -> None:
    """Run an eval plan with progress bars, write the report, print the summary."""
    from gatekeeper.eval.guide import adopt_tuned_hint
    from gatekeeper.eval.plan import evaluate
    from gatekeeper.eval.report_files import check_report_dir, write_report

    check_report_dir(out)  # before the model loads, not after the whole run
    console = _stderr()
    with progress_bar(console) as progress:
        report, _ = evaluate(settings, plan, task=lambda d: tracked(progress, d))
    with console.status("writing the report"):
        files = write_report(report, out)
    _print_summary(report, title)
    tuned = report.meta.get("tuned")
    if tuned and "model" in tuned:
        typer.echo(
            f"tuned: fine-tuned encoder {tuned['model']} ({tuned['epochs']} epoch(s), "
            f"{tuned['train_seconds']:.1f} s training, {tuned['seconds']:.1f} s in all)"
        )
    elif tuned:
        typer.echo(
            f"tuned: adapter {tuned['adapter']} ({tuned['steps']} steps, "
            f"{tuned['train_seconds']:.1f} s training, {tuned['seconds']:.1f} s with embedding)"
        )
    adopt = adopt_tuned_hint(report)
    if adopt:
        typer.echo(adopt)
    skipped = report.meta.get("skipped_rows") or []
    if skipped:
        console.print(skipped_warning(skipped) + " (all listed in the report)")
    for warning in report.meta.get("dataset_warnings") or []:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    calibration = report.calibration
    if calibration is not None and not calibration.reached:
        console.print(
            f"[bold yellow]warning:[/] no threshold reaches {pct(calibration.target_pass_rate)} "
            f"in-domain pass on {escape(calibration.source)} (at most "
            f"{pct(calibration.in_domain_pass_rate)}): the eval ran at threshold "
            f"{calibration.threshold:.4f}, the nearest it came",
            highlight=False,
        )
    if report.counting["gate_errors"]:
        console.print(
            f"[bold red]warning:[/] the gate failed on {report.counting['gate_errors']} "
            "messages (decided by gate.on_error); see the log"
        )
    plots = f"{len(files.plots)} plot{'' if len(files.plots) == 1 else 's'}"
    typer.echo(
        f"report: {files.html}  ({files.json.name}, {files.markdown.name}, {files.rows.name}, "
        f"{plots} in {files.directory})"
    )


def _print_summary(report: Any, title: str) -> None:
    from gatekeeper.eval.guide import recommendation_line
    from gatekeeper.eval.summary import summary_rows

    table = Table(title=title, show_lines=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    table.add_column("95% CI / note", style="dim")
    for row in summary_rows(report):
        table.add_row(*(escape(cell) for cell in row))
    console = Console()
    console.print(table)
    console.print(escape(recommendation_line(report)), soft_wrap=True, highlight=False)


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
        typer.Option(
            "--target-pass-rate",
            help="In-domain pass rate to reach: above 0, at most 1 (e.g. 0.98).",
        ),
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
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="First learn a linear adapter on the catalog alone (as `gatekeeper tune`), "
            "then index, calibrate and evaluate the adapted model (a store of its own).",
        ),
    ] = False,
    tune_method: Annotated[
        TuneMethod,
        typer.Option(
            "--tune-method",
            help="With --tune: adapter (a linear map, any embedder) or encoder (fine-tune the "
            "local encoder, as `gatekeeper tune --method encoder`).",
        ),
    ] = TuneMethod.adapter,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "reports/eval"
    ),
    latency_sample: Annotated[
        int, typer.Option("--latency-sample", min=0, help="Messages timed one by one.")
    ] = 200,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap", min=0, help="Bootstrap draws: 0 (no intervals) or at least 100."
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap and sampling.")] = 0,
    off_topic_share: Annotated[
        list[float] | None,
        typer.Option("--off-topic-share", help="Traffic mix to project to (repeatable)."),
    ] = None,
) -> None:
    """Measure the gate on labelled data: LLM calls saved, customers wrongly blocked, cost."""
    from gatekeeper.eval.plan import EvalPlan

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
            tune=tune,
            tune_method=tune_method.value,
            options=_eval_options(latency_sample, bootstrap, seed, off_topic_share or [0.7]),
        )
        _run_eval(settings, plan, out)


def _rule(rule: str | None) -> str | None:
    if rule is not None and rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    return rule


@app.command()
def calibrate(
    dataset: Annotated[
        Path, typer.Option("--dataset", "-d", help="Labelled calibration file (JSONL or CSV).")
    ],
    target_pass_rate: Annotated[
        float,
        typer.Option(
            "--target-pass-rate",
            help="In-domain pass rate to reach: above 0, at most 1 (e.g. 0.98).",
        ),
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
    conversations: Annotated[
        Path | None,
        typer.Option(
            "--conversations",
            help="Labelled chats (per-turn labels): also choose the conversation settings "
            "(gate.session_margin, followup_*) at the chosen threshold.",
        ),
    ] = None,
    conversation_target: Annotated[
        float,
        typer.Option(
            "--conversation-target",
            min=0.0,
            max=1.0,
            help="In-domain customer turns of the chats to pass (default 0.995).",
        ),
    ] = 0.995,
) -> None:
    """Choose the threshold that passes the target share of in-domain messages (and, with
    --conversations, the conversation settings)."""
    from gatekeeper.eval.checks import language_warnings
    from gatekeeper.eval.datasets import load_dataset
    from gatekeeper.eval.gates import calibrated, ensure_index, for_calibration, record_of
    from gatekeeper.eval.plan import build_gate
    from gatekeeper.eval.settings_file import (
        check_settings_target,
        check_write_catalog,
        start_settings_file,
        store_threshold,
    )
    from gatekeeper.eval.thresholds import calibrate as choose
    from gatekeeper.eval.thresholds import too_few_rows_warning

    with friendly_errors():
        _target(target_pass_rate)
        target = settings_target(config, write=write)
        settings = setup(
            config if config is None or config.exists() or not write else None, quiet=True
        )
        new_file = write and not target.exists()
        # the catalog calibrated for when not the file's own: --catalog, or GATEKEEPER_CATALOG
        apart = catalog or (settings.catalog if settings.catalog_apart() else None)
        if write and not new_file:  # refused before any scoring
            writes_for = catalog or settings.catalog
            served = settings.writable_catalog
            check_write_catalog(writes_for, served, target, "a threshold tuned for")
        if write:
            check_settings_target(target)
        data = load_dataset(
            dataset, skip_invalid=skip_invalid, max_chars=settings.gate.max_message_chars
        )
        chats = None
        if conversations is not None:  # read before any work, so a bad file changes nothing
            _target(conversation_target, "--conversation-target")
            chats = load_dataset(
                conversations, skip_invalid=skip_invalid, max_chars=settings.gate.max_message_chars
            )
        if data.skipped:
            _stderr().print(skipped_warning(data.skipped))
        for warning in data.warnings:
            _stderr().print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
        gate = for_calibration(build_gate(settings, catalog, _rule(rule)))
        for warning in language_warnings(gate.embedder.identity, {"the messages": data}):
            _stderr().print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
        with progress_bar(_stderr()) as progress:
            ensure_index(gate, lambda d: tracked(progress, d))
            result = choose(gate, data, target_pass_rate, lambda d: tracked(progress, d))
        if not result.reached and write:  # -1 would forward everything: never written
            raise InputError(
                f"no threshold passes {pct(target_pass_rate)} of the in-domain messages of "
                f"{dataset} (at most {pct(result.in_domain_pass_rate)}, at -1: some are nearer "
                "the catalog's off-topic exemplars than any intent's); nothing was written. "
                "Lower --target-pass-rate, or add exemplars for the messages the report lists "
                "as wrongly blocked (`gatekeeper eval --dataset` on this file shows them)"
            )
        if not result.reached:
            _stderr().print("[bold yellow]warning:[/] no threshold reaches the target on this file")
        typer.echo(
            f"threshold {result.threshold:.4f}: on {dataset} it passes "
            f"{pct(result.in_domain_pass_rate)} of {result.n_in_domain} in-domain messages "
            f"and blocks {pct(result.off_topic_block_rate)} of {result.n_off_topic} off-topic "
            f"(rule {gate.rule.name}, model {gate.embedder.identity})"
        )
        too_few = too_few_rows_warning(result)
        if too_few:
            _stderr().print(f"[bold yellow]warning:[/] {escape(too_few)}", highlight=False)
        flag = option("config", config) if config else ""
        command = f"gatekeeper calibrate{flag}{option('dataset', dataset)} --target-pass-rate "
        command += f"{target_pass_rate}" + (
            option("catalog", catalog) if catalog is not None else ""
        )
        if rule is not None or gate.rule.name != DEFAULT_RULE:
            command += f" --rule {gate.rule.name}"  # the note's command gives this threshold
        found = None
        if chats is not None:
            found = _choose_conversations(
                calibrated(gate, result.threshold), chats, conversation_target, conversations
            )
        if not write:
            return
        note = (
            f"{command} --write → {pct(result.in_domain_pass_rate)} in-domain pass, "
            f"{pct(result.off_topic_block_rate)} off-topic blocked there "
            f"({gate.embedder.identity}, rule {gate.rule.name})"
        )
        made_for = record_of(gate)
        # a file naming no catalog records the one calibrated for (GATEKEEPER_CATALOG's): its
        # threshold is then told from another catalog's, not by a content hash alone
        recorded = apart if new_file or not settings.catalog_named else None
        if recorded is not None:
            start_settings_file(target, recorded)
        rule_set = store_threshold(target, result.threshold, note, made_for)
        also = (
            f" and gate.rule = {made_for.rule} (the rule it was calibrated for)" if rule_set else ""
        ) + (f" and catalog = {recorded.resolve()}" if recorded is not None else "")
        typer.echo(f"wrote gate.threshold = {result.threshold:.4f}{also} to {target}")
        if found is None:
            _warn_stale_conversations(settings, made_for, f"{command} --write")
        else:
            _store_conversations(
                found, made_for, target, command, conversations, conversation_target
            )


def _warn_stale_conversations(
    settings: Settings, made_for: CalibrationRecord, command: str
) -> None:
    """After a threshold alone was written (recorded as ``made_for``): warn when the file's
    conversation settings were calibrated for another model or rule, or carry no record."""
    from gatekeeper.calibration import conversations_warning

    written = settings.gate.model_copy(update={"calibrated_for": made_for})
    warning = conversations_warning(
        written, model=made_for.model, rule=made_for.rule, command=command
    )
    if warning:
        _stderr().print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)


def _choose_conversations(gate: Any, chats: Any, target: float, path: Path | None) -> Any:
    """The conversation settings chosen on the labelled ``chats`` (read from ``path``) at the
    gate's threshold, printed."""
    from gatekeeper.eval.conversations import (
        calibrate_conversations,
        conversation_warnings,
        settings_line,
    )

    with progress_bar(_stderr()) as progress:
        found = calibrate_conversations(gate, chats, target, lambda d: tracked(progress, d))
    for warning in conversation_warnings(found):
        _stderr().print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    typer.echo(settings_line(found, path))
    return found


def _store_conversations(
    found: Any,
    made_for: CalibrationRecord,
    write_to: Path,
    command: str,
    path: Path | None,
    target: float,
) -> None:
    """Store the chosen conversation settings (``found``) in the settings file."""
    from gatekeeper.eval.conversations import settings_note
    from gatekeeper.eval.settings_file import store_gate_settings

    p = found.policy
    note = settings_note(found, command, path, target)
    values = {
        "session_margin": f"{p.session_margin:g}",
        "followup_off_topic_max": f"{p.off_topic_max:g}",
        "followup_off_topic_gap": f"{p.off_topic_gap:g}",
        "followup_max_words": str(p.max_words),
        "conversations_calibrated_for": json.dumps(made_for.model_dump(), ensure_ascii=False),
    }
    store_gate_settings(write_to, values, note)
    typer.echo(f"wrote the conversation settings to {write_to}")


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
    from gatekeeper.eval.plan import EvalPlan
    from gatekeeper.eval.schema import EvalOptions
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
        _run_eval(settings, plan, out, title="gatekeeper demo")


def skipped_warning(skipped: Sequence[str]) -> str:
    """The console warning for a dataset's skipped rows: how many, and the first one's problem."""
    rows = "1 row" if len(skipped) == 1 else f"{len(skipped)} rows"
    more = " …" if len(skipped) > 1 else ""
    return (
        f"[bold yellow]warning:[/] skipped {rows} (empty or malformed): {escape(skipped[0])}{more}"
    )
