"""Every number of an eval report, computed from the outcomes of a run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gatekeeper.decision import Route
from gatekeeper.errors import DatasetError
from gatekeeper.eval.guide import serving_steps
from gatekeeper.eval.intervals import bootstrap_intervals, score_arrays
from gatekeeper.eval.listing import Listing, canned_mismatches, followups
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.schema import (
    BOOTSTRAP_LEVEL,
    Calibration,
    ConversationStats,
    Cost,
    EvalOptions,
    EvalReport,
    EvalRun,
    IntentRow,
    Latency,
    Outcome,
    Projection,
    RecommendedThreshold,
    SavedCalls,
    ScoreSamples,
    SourceRow,
    SweepPoint,
    TimeSaved,
)
from gatekeeper.eval.thresholds import (
    RECOMMENDED_TARGETS,
    rate,
    report_targets,
    roc_metrics,
    score_rows,
    sweep,
    sweep_point,
)
from gatekeeper.paths import option
from gatekeeper.rules import DEFAULT_RULE
from gatekeeper.settings import PricingSettings, catalog_settings_file

OWN_LABELLED = "YOUR_LABELLED_MESSAGES.jsonl"  # a labelled file apart from the evaluated data

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper


__all__ = ["RECOMMENDED_TARGETS", "build_report", "recommend_thresholds"]


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_summary(run: EvalRun) -> Latency:
    """p50/p95/p99 of single-message gate latency, and the embedding model's alone."""
    batch = [o.decision.latency_ms for o in run.outcomes]
    return Latency(
        p50=percentile(run.gate_ms, 50),
        p95=percentile(run.gate_ms, 95),
        p99=percentile(run.gate_ms, 99),
        mean=float(np.mean(run.gate_ms)) if run.gate_ms else None,
        n_sampled=len(run.gate_ms),
        method=(
            f"wall time of single gate.check() calls on a seeded sample of {len(run.gate_ms)} "
            "messages (embedding + Chroma query + rule), after a warm-up call; embed_* is the "
            "embedding model alone on the same messages; batch_ms_per_message is the batched "
            "pass's time divided by its size"
        ),
        embed_p50=percentile(run.embed_ms, 50),
        embed_p95=percentile(run.embed_ms, 95),
        embed_p99=percentile(run.embed_ms, 99),
        batch_ms_per_message=float(np.mean(batch)) if batch else None,
    )


def llm_cost_per_call(pricing: PricingSettings) -> float:
    """USD per LLM call at the configured prices and average token counts."""
    return (
        pricing.avg_input_tokens * pricing.llm_input_per_1m
        + pricing.avg_output_tokens * pricing.llm_output_per_1m
    ) / 1e6


def embedding_cost_per_message(pricing: PricingSettings) -> float:
    """USD the gate's embedding of one message costs (0 for a local model)."""
    return pricing.avg_message_tokens * pricing.embedding_per_1m / 1e6


def cost_summary(n: int, llm_calls: int, pricing: PricingSettings) -> Cost:
    """The cost lines for ``n`` messages of which ``llm_calls`` reached the LLM."""
    per_call = llm_cost_per_call(pricing)
    per_message = embedding_cost_per_message(pricing)
    without = n * per_call
    embedding = n * per_message
    with_gate = llm_calls * per_call + embedding
    net = without - with_gate
    return Cost(
        llm_model=pricing.llm_model,
        llm_cost_per_call=per_call,
        embedding_cost_per_message=per_message,
        without_gate=without,
        with_gate=with_gate,
        llm_cost_saved=(n - llm_calls) * per_call,
        embedding_cost=embedding,
        net_saved=net,
        net_saved_fraction=net / without if without else None,
        net_saved_per_1k_messages=net / n * 1000 if n else None,
    )


def saved_calls(outcomes: Sequence[Outcome], per_call: float) -> SavedCalls:
    """The messages that caused no LLM call, by kind: off-topic refused, customers refused,
    answered by a canned reply (``per_call``: an LLM call's cost)."""
    saved = [o for o in outcomes if not o.called]
    refused = [o for o in saved if o.decision.route is Route.OFF_TOPIC]
    customers = sum(o.example.in_domain for o in refused)
    return SavedCalls(
        off_topic_refused=len(refused) - customers,
        customers_refused=customers,
        canned=sum(o.decision.route is Route.CANNED for o in saved),
        customers_refused_cost=customers * per_call,
    )


def time_summary(
    n: int,
    llm_calls: int,
    pricing: PricingSettings,
    gate_mean_ms: float | None,
    batch_ms: float | None = None,
) -> TimeSaved:
    """LLM seconds saved against the seconds the gate adds to every message: the mean of the
    timed single calls, or without any, the batched run's time per message (lower)."""
    per_call = pricing.llm_seconds_per_call
    gate_s = (gate_mean_ms if gate_mean_ms is not None else batch_ms or 0.0) / 1000
    saved = (n - llm_calls) * per_call
    added = n * gate_s
    with_gate = (llm_calls * per_call + added) / n if n else None
    return TimeSaved(
        llm_seconds_per_call=per_call,
        llm_seconds_saved=saved,
        gate_seconds_added=added,
        net_seconds_saved=saved - added,
        mean_response_s_without=per_call,
        mean_response_s_with=with_gate,
        speedup=per_call / with_gate if with_gate else None,
        gate_ms_source="single" if gate_mean_ms is not None else "batch",
    )


def project(
    share: float,
    admit_in: float,
    admit_off: float,
    false_block: float,
    pricing: PricingSettings,
    gate_mean_ms: float | None,
) -> Projection:
    """The measured admit rates applied to traffic with ``share`` off-topic messages."""
    calls = 1000 * ((1 - share) * admit_in + share * admit_off)
    per_call = llm_cost_per_call(pricing)
    without = 1000 * per_call
    with_gate = calls * per_call + 1000 * embedding_cost_per_message(pricing)
    seconds = pricing.llm_seconds_per_call
    mean_with = calls / 1000 * seconds + (gate_mean_ms or 0.0) / 1000
    return Projection(
        off_topic_share=share,
        llm_calls_per_1k=calls,
        saved_rate=1 - calls / 1000,
        cost_per_1k_without=without,
        cost_per_1k_with=with_gate,
        cost_saved_per_1k=without - with_gate,
        cost_reduction=(without - with_gate) / without if without else None,
        customers_wrongly_blocked_per_1k=1000 * (1 - share) * false_block,
        mean_response_s_without=seconds,
        mean_response_s_with=mean_with,
        speedup=seconds / mean_with if mean_with else None,
    )


def per_intent_rows(outcomes: Sequence[Outcome]) -> list[IntentRow]:
    """Pass rate per labelled intent of the in-domain rows, worst first."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.example.in_domain:
            groups[o.example.intent or "(no intent)"].append(o)
    rows = []
    for intent, members in groups.items():
        passed = sum(o.passed for o in members)
        match = None
        if members[0].example.intent and not members[0].example.unsupported:
            match = sum(o.decision.intent == intent for o in members) / len(members)
        rows.append(
            IntentRow(
                intent=intent,
                n=len(members),
                passed=passed,
                pass_rate=passed / len(members),
                intent_match_rate=match,
            )
        )
    return sorted(rows, key=lambda r: (r.pass_rate, r.intent))


def source_rows(outcomes: Sequence[Outcome]) -> list[SourceRow]:
    """Headline numbers per dataset file."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.example.source].append(o)
    return [_source_row(source, members) for source, members in groups.items()]


def _source_row(source: str, members: Sequence[Outcome]) -> SourceRow:
    inside = [o for o in members if o.example.in_domain]
    outside = [o for o in members if not o.example.in_domain]
    return SourceRow(
        source=source,
        n=len(members),
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        llm_calls=sum(o.called for o in members),
        in_domain_pass_rate=rate([o.passed for o in inside]),
        off_topic_block_rate=rate([not o.passed for o in outside]),
    )


def conversation_stats(outcomes: Sequence[Outcome]) -> ConversationStats | None:
    """The multi-turn rows on their own (None when there are none)."""
    multi = [o for o in outcomes if o.example.multi_turn]
    if not multi:
        return None
    inside = [o for o in multi if o.example.in_domain]
    outside = [o for o in multi if not o.example.in_domain]
    chats = {(o.example.source, o.example.line) for o in multi}
    return ConversationStats(
        n=len(multi),
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        in_domain_pass_rate=rate([o.passed for o in inside]),
        off_topic_block_rate=rate([not o.passed for o in outside]),
        rescued_followups=sum(o.decision.followup for o in multi),
        followup_customer_turns=len(followups(multi, in_domain=True)),
        followup_drift_turns=len(followups(multi, in_domain=False)),
        n_chats=len(chats),
        customer_turns_wrongly_refused=sum(not o.passed for o in inside),
        drift_turns_refused=sum(not o.passed for o in outside),
        calls_saved_per_chat=(sum(not o.called for o in multi) / len(chats) if chats else None),
    )


def recommend_thresholds(
    points: Sequence[SweepPoint],
    *,
    source: str,
    calibration: Calibration | None = None,
    calibration_path: str | None = None,
    catalog: str | None = None,
    config_flag: str = "",
    skip_invalid: bool = False,
    targets: Sequence[float] = RECOMMENDED_TARGETS,
    at: Callable[[float], SweepPoint] | None = None,
    rule: str | None = None,
) -> list[RecommendedThreshold]:
    """For each target, a threshold, what it does on the evaluated data and the command that
    applies it.

    With a calibration file that chose one for the target (``calibration.by_target``) and
    ``at`` (the evaluated data's sweep point at any threshold), the threshold is the one
    chosen on the calibration file: exactly what the command writes, and an honest preview
    of it on data it was not chosen on. Otherwise it is the highest threshold of the evaluated
    data's sweep (``source``) that reaches the target: optimistic, fitted on the data it is
    scored on, so the command calibrates on a labelled file of its own. ``rule`` (the eval's,
    when ``--rule`` chose it or it is not the default) is passed on as ``--rule``, as
    ``calibrate`` itself prints it: without it the command calibrates the settings' rule.
    """
    out = []
    for target in targets:
        key = f"{target:g}"
        if calibration is not None and at is not None and key in calibration.by_target:
            chosen = calibration.by_target[key]
            best, read_off = (None if chosen is None else at(chosen)), calibration.source
        else:
            best, read_off = _highest_reaching(points, target), source
        if calibration is not None or best is not None:  # never a threshold fitted on the data
            where = (calibration_path or calibration.source) if calibration else OWN_LABELLED
            command = f"gatekeeper calibrate{config_flag}{option('dataset', where)}"
            command += f" --target-pass-rate {key}"
            command += option("catalog", catalog) if catalog else ""
            command += f" --rule {rule}" if rule else ""
            command += " --skip-invalid --write" if skip_invalid else " --write"
        else:
            command = "no swept threshold reaches this target on the evaluated data"
        out.append(_recommended(target, best, read_off, command))
    return out


def _highest_reaching(points: Sequence[SweepPoint], target: float) -> SweepPoint | None:
    reaching = [
        p
        for p in points
        if p.in_domain_pass_rate is not None and p.in_domain_pass_rate >= target - 1e-12
    ]
    return max(reaching, key=lambda p: p.threshold, default=None)


def _recommended(
    target: float, best: SweepPoint | None, source: str, command: str
) -> RecommendedThreshold:
    return RecommendedThreshold(
        target_pass_rate=target,
        threshold=None if best is None else best.threshold,
        in_domain_pass_rate=None if best is None else best.in_domain_pass_rate,
        false_block_rate=None if best is None else best.false_block_rate,
        off_topic_block_rate=None if best is None else best.off_topic_block_rate,
        saved_rate=None if best is None else best.saved_rate,
        llm_calls=None if best is None else best.llm_calls,
        wrongly_blocked=None if best is None else best.wrongly_blocked,
        source=source,
        command=command,
    )


def _rule_flag(gate: Gatekeeper, meta: Mapping[str, Any]) -> str | None:
    """The ``--rule`` of a recommended calibrate command: the gate's rule when the run was
    given one (``meta.rule_given``: the settings file may name another) or it is not the
    default, as ``calibrate`` prints its own command."""
    name = gate.rule.name
    return name if meta.get("rule_given") is not None or name != DEFAULT_RULE else None


def _settings_flag(gate: Gatekeeper, meta: Mapping[str, Any]) -> str:
    """The ``--config`` of a recommended calibrate command: the gate's settings file, or, when
    the run evaluated another catalog than that file serves, a new file named after that
    catalog (``calibrate --write`` creates it serving the catalog; into the settings file, the
    default or a ``--config``, it would refuse to write another catalog's threshold)."""
    catalog, serving = meta.get("catalog"), meta.get("settings_catalog")
    other = bool(catalog and serving and Path(catalog).resolve() != Path(serving).resolve())
    if catalog and (other or gate.settings.catalog_apart()):
        return option("config", catalog_settings_file(Path(catalog)))
    return gate.settings.write_flag()  # never a --write that must fail


def build_report(
    gate: Gatekeeper,
    run: EvalRun,
    options: EvalOptions | None = None,
    calibration: Calibration | None = None,
    meta: Mapping[str, Any] | None = None,
    task: TaskFactory = no_progress,
) -> EvalReport:
    """All metrics of an eval run (the threshold sweep, the long part, shown on ``task``)."""
    options = options or EvalOptions()
    outcomes = run.outcomes
    if not outcomes:
        raise DatasetError("nothing was evaluated")
    inside = [o for o in outcomes if o.example.in_domain]
    outside = [o for o in outcomes if not o.example.in_domain]
    supported = [o for o in inside if not o.example.unsupported]
    unsupported = [o for o in inside if o.example.unsupported]
    mismatched = canned_mismatches(inside)
    listing = Listing(gate, outcomes)
    rows, basis = score_rows(outcomes)
    scores, scores_in = score_arrays(rows)
    auroc, fpr95 = roc_metrics(scores, scores_in)
    latency = latency_summary(run)
    gate_ms = latency.mean if latency.mean is not None else latency.batch_ms_per_message
    pricing = gate.settings.pricing
    n = len(outcomes)
    pass_rate = rate([o.passed for o in inside])
    false_block = None if pass_rate is None else 1 - pass_rate
    admit_in = rate([o.called for o in inside]) or 0.0
    admit_off = rate([o.called for o in outside]) or 0.0
    counted_by_rows = sum(o.called for o in outcomes)
    meta = dict(meta or {})
    points = sweep(gate, outcomes, gate.settings.gate.threshold, task)
    sources = meta.get("datasets") or sorted({o.example.source for o in outcomes})
    config_flag = _settings_flag(gate, meta)
    if meta.get("tuned"):  # how to serve it: the file the recommended command writes
        steps = serving_steps(config_flag, meta.get("catalog"), meta.get("settings_catalog"))
        meta["tuned"] = {**meta["tuned"], "serve": steps}
    recommended = recommend_thresholds(
        points,
        source=" + ".join(Path(s).name for s in sources),
        calibration=calibration,
        calibration_path=meta.get("calibration_path"),
        catalog=meta.get("catalog"),
        config_flag=config_flag,
        skip_invalid=bool(meta.get("skip_invalid")),
        targets=report_targets(calibration.target_pass_rate if calibration else None),
        at=lambda t: sweep_point(gate, [o for o in outcomes if o.turns], t),
        rule=_rule_flag(gate, meta),
    )
    return EvalReport(
        n_queries=n,
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        n_single=sum(not o.example.multi_turn for o in outcomes),
        n_multi_turn=sum(o.example.multi_turn for o in outcomes),
        llm_calls=run.llm_calls,
        llm_calls_saved=n - run.llm_calls,
        saved_rate=(n - run.llm_calls) / n,
        canned_replies=sum(o.decision.route is Route.CANNED for o in outcomes),
        off_topic_replies=sum(o.decision.route is Route.OFF_TOPIC for o in outcomes),
        llm_calls_saved_by=saved_calls(outcomes, llm_cost_per_call(pricing)),
        in_domain_pass_rate=pass_rate,
        false_block_rate=false_block,
        off_topic_block_rate=rate([not o.passed for o in outside]),
        n_supported=len(supported),
        n_unsupported=len(unsupported),
        supported_pass_rate=rate([o.passed for o in supported]),
        unsupported_pass_rate=rate([o.passed for o in unsupported]),
        auroc=auroc,
        fpr_at_95tpr=fpr95,
        score_basis=basis,
        threshold=gate.settings.gate.threshold,
        rule=gate.rule.name,
        canned_min_similarity=gate.settings.gate.canned_min_similarity,
        calibration=calibration,
        latency_ms=latency,
        cost=cost_summary(n, run.llm_calls, pricing),
        time=time_summary(n, run.llm_calls, pricing, latency.mean, latency.batch_ms_per_message),
        projections=[
            project(s, admit_in, admit_off, false_block or 0.0, pricing, gate_ms)
            for s in options.off_topic_shares
            if inside and outside  # a mix needs both rates measured, not one of them assumed
        ],
        confidence_intervals=bootstrap_intervals(outcomes, rows, options.bootstrap, options.seed),
        bootstrap={"draws": options.bootstrap, "seed": options.seed, "level": BOOTSTRAP_LEVEL},
        counting={
            "method": run.counting_method,
            "backend_calls": run.llm_calls,
            "rows_marked_called": counted_by_rows,
            "consistent": counted_by_rows == run.llm_calls,
            "gate_errors": sum(o.decision.gate_error is not None for o in outcomes),
            "seconds": run.seconds,
        },
        per_intent=per_intent_rows(outcomes),
        by_source=source_rows(outcomes),
        conversations=conversation_stats(outcomes),
        wrongly_blocked=[listing.listed(o) for o in inside if not o.passed][: options.max_listed],
        n_wrongly_blocked=sum(not o.passed for o in inside),
        n_wrongly_admitted=sum(o.passed for o in outside),
        wrongly_admitted=[
            listing.listed(o) for o in sorted(outside, key=lambda o: -o.decision.score) if o.passed
        ][: options.max_listed],
        canned_mismatches=[listing.listed(o) for o in mismatched][: options.max_listed],
        n_canned_mismatches=len(mismatched),
        followup_customer_turns=[
            listing.listed(o) for o in followups(outcomes, in_domain=True)[: options.max_listed]
        ],
        followup_drift_turns=[
            listing.listed(o) for o in followups(outcomes, in_domain=False)[: options.max_listed]
        ],
        sweep=points,
        meta=meta,
        recommended_thresholds=recommended,
        rows=[listing.row(o) for o in outcomes],
        scores=ScoreSamples(
            in_domain=[float(s) for s in scores[scores_in]],
            off_topic=[float(s) for s in scores[~scores_in]],
        ),
    )
