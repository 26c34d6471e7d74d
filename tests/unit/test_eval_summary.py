"""The eval summary a manager reads (console and report): what the savings are made of, what
the cost line is net of, and the intents a global threshold fails (hashing embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatekeeper.eval.formatting import money, pct
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.report import render_markdown
from gatekeeper.eval.schema import EvalOptions, EvalReport
from gatekeeper.eval.summary import summary_rows
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


def test_an_intent_the_global_threshold_fails_is_named_in_the_warnings(tmp_path: Path) -> None:
    """20 refund rows that mostly fail while order rows pass: the run's warnings name
    refund_request with its pass rate and point to gate.intent_thresholds (only the per-intent
    table showed it); an intent with fewer rows, or near the target, is not named."""
    rows = [{"text": f"where is my order {i}", "intent": "order_status"} for i in range(20)]
    rows += [{"text": f"zq{i} blorf vunk", "intent": "refund_request"} for i in range(18)]
    rows += [{"text": f"refund my money {i}", "intent": "refund_request"} for i in range(2)]
    rows += [{"text": f"xx{i} plim", "intent": "greeting"} for i in range(5)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({**r, "label": "in_domain"}) + "\n" for r in rows))
    gate = make_gate(tmp_path / "g")
    gate.index()
    plan = EvalPlan(datasets=(data,), threshold=0.3, options=FAST)
    report = evaluate_gate(gate, plan)[0]
    by_intent = {r.intent: r for r in report.per_intent}
    assert by_intent["refund_request"].pass_rate < 0.5 <= by_intent["order_status"].pass_rate
    (warning,) = [w for w in report.meta["dataset_warnings"] if "intent_thresholds" in w]
    refund = by_intent["refund_request"]
    assert f"'refund_request' {pct(refund.pass_rate)} of 20" in warning
    assert warning.startswith("1 intent with 20 or more labelled rows passes 10 points or more")
    assert "order_status" not in warning and "greeting" not in warning


def test_the_score_basis_of_chats_alone_names_every_judged_turn(tmp_path: Path) -> None:
    """With conversations only, AUROC is computed over every judged turn (4 turns of 2 chats),
    and score_basis says so (it said "last user turns of conversations")."""
    gate = make_gate(tmp_path)
    gate.index()
    plan = EvalPlan(datasets=(FIXTURES / "tiny_chats.jsonl",), threshold=0.3, options=FAST)
    report = evaluate_gate(gate, plan)[0]
    assert report.n_queries == 4 and len(report.rows) == 4
    assert report.score_basis.startswith("every judged user turn of the conversations")
    assert "last" not in report.score_basis


def test_listed_scores_have_as_many_decimals_as_the_threshold(report: EvalReport) -> None:
    """A wrongly blocked customer's score is shown with 4 decimals beside the 4-decimal
    threshold (0.41614 and 0.4162 both read "0.416")."""
    blocked = report.wrongly_blocked[0]
    text = render_markdown(report)
    assert f"| {blocked.score:.4f} | {blocked.threshold:.4f} |" in text


def test_a_tiny_cost_is_not_shown_as_zero() -> None:
    """An embedding cost of $0.0000009 reads "<$0.0001", not "$0.0000"; 0 stays "$0.0000"."""
    assert money(0.0000009) == "<$0.0001"
    assert money(0.0) == "$0.0000" and money(0.0212) == "$0.0212" and money(1234.5) == "$1,234.50"
