"""The headline table of an eval report (the console summary and the report's "Summary")."""

from __future__ import annotations

from typing import Any

from gatekeeper.eval.conversation_settings import settings_origin, settings_value
from gatekeeper.eval.formatting import counted, money, num, pct
from gatekeeper.eval.schema import EvalReport


def _ci(report: EvalReport, name: str, fmt: Any = pct) -> str:
    interval = report.confidence_intervals.get(name)
    if interval is None or interval.low is None or interval.high is None:
        return ""
    return f"{fmt(interval.low)} – {fmt(interval.high)}"


def summary_rows(report: EvalReport) -> list[tuple[str, str, str]]:
    """The headline table: (metric, value, 95% bootstrap interval)."""
    rows = [
        (
            "messages",
            f"{report.n_queries} ({report.n_in_domain} in-domain, {report.n_off_topic} off-topic)",
            "",
        ),
        ("threshold", f"{report.threshold:.4f} ({_threshold_origin(report)})", ""),
        *_conversation_settings(report),
        ("LLM calls (counted)", f"{report.llm_calls}", ""),
        (
            "LLM calls saved",
            f"{report.llm_calls_saved} ({pct(report.saved_rate)})",
            _ci(report, "saved_rate"),
        ),
        *_saved_by(report),
        (
            "in-domain pass rate",
            pct(report.in_domain_pass_rate),
            _ci(report, "in_domain_pass_rate"),
        ),
        (
            "customers wrongly blocked",
            f"{report.n_wrongly_blocked} ({pct(report.false_block_rate)})",
            _ci(report, "false_block_rate"),
        ),
        (
            "off-topic block rate",
            pct(report.off_topic_block_rate),
            _ci(report, "off_topic_block_rate"),
        ),
    ]
    if report.n_canned_mismatches:
        rows.append(("  in-domain given a wrong canned reply", str(report.n_canned_mismatches), ""))
    if report.n_unsupported:
        rows_kind = " (messages and chat turns)" if report.n_multi_turn else ""
        rows += [
            (
                "  supported intents pass",
                pct(report.supported_pass_rate),
                f"n={report.n_supported}{rows_kind}",
            ),
            (
                "  unsupported on-topic pass",
                pct(report.unsupported_pass_rate),
                f"n={report.n_unsupported}{rows_kind}",
            ),
        ]
    if report.conversations is not None:
        c = report.conversations
        rows.append(
            (
                "conversation turns: pass / block",
                f"{pct(c.in_domain_pass_rate)} / {pct(c.off_topic_block_rate)}",
                f"{c.n} turns of {c.n_chats} chats: {c.customer_turns_wrongly_refused} customer "
                f"turns wrongly refused, {c.drift_turns_refused} drift turns refused, "
                f"{c.rescued_followups} follow-ups forwarded "
                f"({counted(c.followup_customer_turns, 'customer turn')}, "
                f"{counted(c.followup_drift_turns, 'drift turn')})",
            )
        )
    rows += [
        (
            "AUROC / FPR@95%TPR",
            f"{num(report.auroc)} / {pct(report.fpr_at_95tpr)}",
            _ci(report, "auroc", num),
        ),
        (
            "gate latency p50/p95/p99",
            _latency(report),
            f"n={report.latency_ms.n_sampled} single calls; embedding alone p50 "
            f"{num(report.latency_ms.embed_p50, 1)} ms",
        ),
        (
            "LLM cost saved, net of embedding",
            f"{money(report.cost.net_saved)} of {money(report.cost.without_gate)} "
            f"({pct(report.cost.net_saved_fraction)})",
            f"{report.cost.llm_model} prices: calls saved {money(report.cost.llm_cost_saved)}"
            f" − embedding every message {money(report.cost.embedding_cost)}",
        ),
        (
            "LLM time saved",
            f"{report.time.net_seconds_saved:,.0f} s",
            f"{report.time.llm_seconds_per_call:g} s per call"
            + ("; gate time of the batched run" if report.time.gate_ms_source == "batch" else ""),
        ),
    ]
    if not report.projections and not (report.n_in_domain and report.n_off_topic):
        rows.append(
            (
                "traffic projection",
                "–",
                "needs in-domain and off-topic rows (the data has only one kind)",
            )
        )
    for p in report.projections:
        rows.append(
            (
                f"at {pct(p.off_topic_share, 0)} off-topic traffic",
                f"{pct(p.saved_rate)} calls saved, cost −{pct(p.cost_reduction, 0)}, "
                f"{num(p.speedup, 1)}× faster",
                f"{p.customers_wrongly_blocked_per_1k:.1f} customers blocked per 1k",
            )
        )
    return rows


def _conversation_settings(report: EvalReport) -> list[tuple[str, str, str]]:
    """The conversation settings the chats were routed with, beside the threshold."""
    c = report.conversation_settings
    return [] if c is None else [("conversation settings", settings_value(c), settings_origin(c))]


def _saved_by(report: EvalReport) -> list[tuple[str, str, str]]:
    """The calls saved by kind: a refused customer counts as a saved call too."""
    by = report.llm_calls_saved_by
    if by is None:
        return []
    return [
        (
            "  saved on",
            f"{by.off_topic_refused} off-topic refused, {by.customers_refused} customers "
            f"refused, {by.canned} canned replies",
            f"customers refused: {money(by.customers_refused_cost)} of the LLM cost saved",
        )
    ]


def _threshold_origin(report: EvalReport) -> str:
    c = report.calibration
    if c is None:
        given = report.meta.get("threshold_given") is not None
        return "given (--threshold)" if given else "from settings"
    origin = f"calibrated on {c.source} for {pct(c.target_pass_rate)} in-domain pass"
    if not c.reached:  # the lowest threshold, and still short of the target
        origin += f": NOT reached, {pct(c.in_domain_pass_rate)} at best"
    return origin


def _latency(report: EvalReport) -> str:
    lat = report.latency_ms
    return f"{num(lat.p50, 1)} / {num(lat.p95, 1)} / {num(lat.p99, 1)} ms"
