"""The eval summary a manager reads (console and report): what the savings are made of, and
what the cost line is net of (tiny fixtures, hashing embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.eval.formatting import money
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.report import render_markdown, summary_rows
from gatekeeper.eval.schema import EvalOptions, EvalReport
from gatekeeper.testing import make_gate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FAST = EvalOptions(latency_sample=0, bootstrap=0)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    """The tiny eval, calibrated on the tiny calibration file (one customer refused)."""
    gate = make_gate(tmp_path_factory.mktemp("summary"))
    gate.index()
    plan = EvalPlan(
        datasets=(FIXTURES / "tiny_eval.jsonl",),
        calibrate_on=FIXTURES / "tiny_calibration.jsonl",
        target_pass_rate=0.85,
        options=FAST,
    )
    return evaluate_gate(gate, plan)[0]


def test_the_calls_saved_are_split_into_off_topic_customers_refused_and_canned(
    report: EvalReport,
) -> None:
    """llm_calls_saved_by counts off-topic refused, customers refused and canned replies
    (adding up to llm_calls_saved), and the summary shows the split under the calls saved."""
    by = report.llm_calls_saved_by
    assert by is not None and by.customers_refused == len(report.wrongly_blocked) >= 1
    assert by.off_topic_refused + by.customers_refused + by.canned == report.llm_calls_saved
    assert by.customers_refused_cost == by.customers_refused * report.cost.llm_cost_per_call
    labels = [row[0] for row in summary_rows(report)]
    row = summary_rows(report)[labels.index("LLM calls saved") + 1]
    assert row[1] == (
        f"{by.off_topic_refused} off-topic refused, {by.customers_refused} customers refused, "
        f"{by.canned} canned replies"
    )
    assert "llm_calls_saved_by" in report.model_dump(mode="json")


def test_the_cost_saved_row_says_it_is_net_of_the_embedding_cost(report: EvalReport) -> None:
    """The cost row is labelled net of embedding and shows the gross saving and the embedding
    cost it subtracts (it showed net_saved as "LLM cost saved")."""
    text = render_markdown(report)
    cost = report.cost
    assert "| LLM cost saved, net of embedding | " + money(cost.net_saved) in text
    assert f"calls saved {money(cost.llm_cost_saved)}" in text
    assert f"embedding every message {money(cost.embedding_cost)}" in text
