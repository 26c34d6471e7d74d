"""``gatekeeper eval`` as a plan: load the data, build the gate, index, calibrate, run, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gatekeeper.errors import InputError
from gatekeeper.eval.checks import (
    calibration_overlap,
    check_threshold_fits,
    language_warnings,
    leakage_warnings,
    mark_unsupported,
)
from gatekeeper.eval.conversation_settings import conversation_settings
from gatekeeper.eval.datasets import Dataset, load_datasets
from gatekeeper.eval.gates import (
    calibrated,
    ensure_index,
    finetuned_gate,
    for_calibration,
    settings_for_catalog,
    tuned_gate,
    with_threshold,
    without_conversation_settings,
)
from gatekeeper.eval.guide import weak_intents_warning
from gatekeeper.eval.intervals import check_draws
from gatekeeper.eval.metrics import build_report
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.replay import run_replay
from gatekeeper.eval.run import run_eval
from gatekeeper.eval.schema import EvalOptions, EvalReport
from gatekeeper.eval.thresholds import calibrate, check_target, too_few_rows_warning
from gatekeeper.legibility import index_warnings
from gatekeeper.settings import Settings

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper


@dataclass(frozen=True)
class EvalPlan:
    """What ``gatekeeper eval`` was asked to do."""

    datasets: tuple[Path, ...]
    catalog: Path | None = None
    calibrate_on: Path | None = None
    target_pass_rate: float | None = None
    threshold: float | None = None
    rule: str | None = None
    skip_invalid: bool = False
    replay: bool = False
    tune: bool = False
    tune_method: Literal["adapter", "encoder"] = "adapter"  # encoder: fine-tune it itself
    options: EvalOptions = field(default_factory=EvalOptions)


def build_gate(
    settings: Settings, catalog: Path | None = None, rule: str | None = None
) -> Gatekeeper:
    """The gate an eval runs: ``catalog`` (if given, else the configured one) served from its
    own store, the one ``gatekeeper index`` fills for it."""
    from gatekeeper.catalog import load_catalog
    from gatekeeper.gate import Gatekeeper

    loaded = None
    if catalog is not None:
        loaded = load_catalog(catalog)
        settings = settings_for_catalog(settings, catalog)
    if rule is not None:
        settings = settings.model_copy(
            update={"gate": settings.gate.model_copy(update={"rule": rule})}
        )
    return Gatekeeper.from_settings(settings, catalog=loaded)


def evaluate(
    settings: Settings, plan: EvalPlan, task: TaskFactory = no_progress
) -> tuple[EvalReport, Gatekeeper]:
    """Build the gate the plan asks for, then :func:`evaluate_gate`."""
    # fail on bad data before loading the model
    data = load_plan_data(plan, max_chars=settings.gate.max_message_chars)
    gate = build_gate(settings, plan.catalog, plan.rule)
    return evaluate_gate(gate, plan, task, data=data, settings_catalog=settings.served_catalog)


def check_plan(plan: EvalPlan) -> None:
    """Refuse an inconsistent plan with :class:`InputError`."""
    if (plan.calibrate_on is None) != (plan.target_pass_rate is None):
        raise InputError(
            "calibrating needs both a calibration dataset and a target pass rate; "
            "the plan gives only one of them"
        )
    if plan.calibrate_on is not None and plan.threshold is not None:
        raise InputError("the plan gives both a fixed threshold and a calibration dataset")
    if plan.threshold is not None and not -1.0 <= plan.threshold <= 1.0:
        raise InputError(
            f"--threshold must be a cosine similarity from -1 to 1, got {plan.threshold:g}"
        )
    if plan.target_pass_rate is not None:
        check_target(plan.target_pass_rate)
    check_draws(plan.options.bootstrap)  # before the run, not after it


def load_plan_data(
    plan: EvalPlan, *, max_chars: int | None = None
) -> tuple[Dataset, Dataset | None]:
    """Check the plan, then load its datasets and its calibration set (if any), once; rows
    longer than ``max_chars`` are malformed (skipped with ``plan.skip_invalid``)."""
    check_plan(plan)
    dataset = load_datasets(plan.datasets, skip_invalid=plan.skip_invalid, max_chars=max_chars)
    calibration_set = (
        load_datasets([plan.calibrate_on], skip_invalid=plan.skip_invalid, max_chars=max_chars)
        if plan.calibrate_on is not None
        else None
    )
    return dataset, calibration_set


def evaluate_gate(
    gate: Gatekeeper,
    plan: EvalPlan,
    task: TaskFactory = no_progress,
    *,
    data: tuple[Dataset, Dataset | None] | None = None,
    settings_catalog: Path | None = None,
) -> tuple[EvalReport, Gatekeeper]:
    """Tune if asked, index if needed, calibrate if asked, run the datasets through the gate,
    compute metrics.

    With ``plan.tune`` a linear adapter is learned (or, with ``tune_method="encoder"``, the
    local encoder fine-tuned) on the gate's catalog alone (the calibration and test files never
    reach the trainer) and the tuned gate, in a store of its own, is what gets indexed,
    calibrated and evaluated.
    ``data`` is what :func:`load_plan_data` returned, if the caller loaded it already;
    ``settings_catalog`` the catalog the settings file serves, when the gate evaluates another
    (``--catalog``): the recommended commands then write a settings file of their own.
    Returns the report and the gate as evaluated (with the calibrated threshold)."""
    max_chars = gate.settings.gate.max_message_chars
    dataset, calibration_set = (
        data if data is not None else load_plan_data(plan, max_chars=max_chars)
    )
    if plan.threshold is None and calibration_set is None:
        check_threshold_fits(
            gate.settings.gate,
            catalog_hash=gate.catalog.content_hash(),
            catalog=str(gate.settings.catalog),
            own_catalog=_own_catalog(gate.settings, settings_catalog),
        )
    dataset = mark_unsupported(dataset, gate.catalog)
    checked = leakage_warnings(dataset, gate.catalog, calibration_set)
    checked += language_warnings(
        gate.embedder.identity,
        {"the test messages": dataset, "the calibration messages": calibration_set},
    )
    if not any(e.multi_turn for d in (dataset, calibration_set) if d for e in d.examples):
        gate = without_conversation_settings(gate)  # no chat here: they act on none
    started = time.perf_counter()
    tuned: dict[str, Any] | None = None
    if plan.tune:
        tune = finetuned_gate if plan.tune_method == "encoder" else tuned_gate
        gate, tuned = tune(gate, seed=plan.options.seed, task=task)
    synced = ensure_index(gate, task)
    checked += index_warnings(gate.store, gate.embedder)
    if plan.threshold is not None:
        gate = with_threshold(gate, plan.threshold)
    calibration = None
    if calibration_set is not None and plan.target_pass_rate is not None:
        calibration = calibrate(
            for_calibration(gate),
            calibration_set,
            plan.target_pass_rate,
            task,
            plan.options.chunk_size,
        )
        gate = calibrated(gate, calibration.threshold)
        checked += [w for w in [too_few_rows_warning(calibration)] if w]
    runner = run_replay if plan.replay else run_eval
    run = runner(gate, dataset, plan.options, task)
    meta = {
        "datasets": list(dataset.sources),
        "calibration_path": str(plan.calibrate_on) if plan.calibrate_on is not None else None,
        "calibration_overlap": calibration_overlap(dataset, calibration_set),
        "threshold_given": plan.threshold,
        "rule_given": plan.rule,
        "skip_invalid": plan.skip_invalid,
        "catalog": str(gate.settings.catalog),
        "settings_catalog": str(settings_catalog or gate.settings.catalog),
        "catalog_hash": gate.catalog.content_hash(),
        "collection": gate.store.name,
        "embedding_model": gate.embedder.identity,
        "indexed": synced is not None,
        "index_seconds": synced.seconds if synced is not None else 0.0,
        "seconds": time.perf_counter() - started,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "skipped_rows": [*dataset.skipped, *(calibration_set.skipped if calibration_set else ())],
        "dataset_warnings": [
            *dataset.warnings,
            *(calibration_set.warnings if calibration_set else ()),
            *checked,
        ],
        "tuned": tuned,
    }
    report = build_report(gate, run, plan.options, calibration, meta, task)
    warnings = [weak_intents_warning(report)]  # a segment the global threshold fails
    if report.n_multi_turn:  # the chats were routed with the conversation settings: which
        chats = report.conversation_settings = conversation_settings(gate.settings)
        warnings += [
            f"the conversation settings ({chats.source}): their calibration warned: {warning}"
            for warning in chats.warnings
        ]
    report.meta["dataset_warnings"] = [*report.meta["dataset_warnings"], *filter(None, warnings)]
    return report, gate


def _own_catalog(settings: Settings, settings_catalog: Path | None) -> Path | None:
    """The settings file's own catalog when the gate evaluates another (None: it does not)."""
    if settings.catalog_apart():
        return settings.served_catalog
    if settings_catalog is None or settings.catalog.resolve() == settings_catalog.resolve():
        return None
    return settings_catalog
