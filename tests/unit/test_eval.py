"""The eval harness on the hashing embedder: its numbers agree with an independent recount."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.conversation import Turn
from gatekeeper.decision import Judged, Route
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.gates import with_threshold
from gatekeeper.eval.metrics import build_report
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.run import CountingBackend, run_eval
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.eval.thresholds import (
    calibrate,
    choose_threshold,
    pass_rate_at,
    score_rows,
    sweep_point,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import load_settings
from gatekeeper.store import collection_name

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EVAL = FIXTURES / "tiny_eval.jsonl"
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"
FAST = EvalOptions(latency_sample=4, bootstrap=200, seed=7)


def _auroc(positives: list[float], negatives: list[float]) -> float:
    """AUROC by its definition: P(score of a positive > score of a negative), ties half."""
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return sum(pairs) / len(pairs)


def test_counting_backend_counts_calls() -> None:
    """Each call reaches the counter once, whatever the arguments."""
    backend = CountingBackend()
    backend("a")
    backend([{"role": "user", "content": "b"}], temperature=0)
    assert backend.calls == 2


def test_report_agrees_with_independent_recount(tiny_gate: Gatekeeper) -> None:
    """Totals, saved calls, pass/block rates, per-intent rates and AUROC match a recount."""
    data = load_dataset(EVAL)
    run = run_eval(tiny_gate, data, FAST)
    report = build_report(tiny_gate, run, FAST)
    # recount from fresh decisions, without the harness
    decisions = tiny_gate.check_many([e.as_input() for e in data.examples])
    rows = list(zip(data.examples, decisions, strict=True))
    forwarded = sum(d.route is Route.LLM for d in decisions)
    inside = [(e, d) for e, d in rows if e.in_domain]
    outside = [(e, d) for e, d in rows if not e.in_domain]
    passed_in = sum(d.route is not Route.OFF_TOPIC for _, d in inside)
    blocked_off = sum(d.route is Route.OFF_TOPIC for _, d in outside)
    assert (report.n_queries, report.n_in_domain, report.n_off_topic) == (18, 10, 8)
    assert report.llm_calls == forwarded and report.llm_calls_saved == 18 - forwarded
    assert report.saved_rate == pytest.approx((18 - forwarded) / 18)
    assert report.in_domain_pass_rate == pytest.approx(passed_in / 10)
    assert report.false_block_rate == pytest.approx(1 - passed_in / 10)
    assert report.off_topic_block_rate == pytest.approx(blocked_off / 8)
    assert len(report.wrongly_blocked) == 10 - passed_in
    unsupported = [d for e, d in inside if e.unsupported]
    assert report.unsupported_pass_rate == pytest.approx(
        sum(d.route is not Route.OFF_TOPIC for d in unsupported) / len(unsupported)
    )
    order = [d for e, d in inside if e.intent == "order_status"]
    row = next(r for r in report.per_intent if r.intent == "order_status")
    assert (row.n, row.passed) == (len(order), sum(d.route is not Route.OFF_TOPIC for d in order))
    single = [(e, d) for e, d in rows if not e.multi_turn]
    expected_auroc = _auroc(
        [d.score for e, d in single if e.in_domain], [d.score for e, d in single if not e.in_domain]
    )
    assert report.auroc == pytest.approx(expected_auroc)
    assert report.counting["consistent"] and report.counting["gate_errors"] == 0


def test_cost_and_time_follow_the_price_table(tiny_gate: Gatekeeper) -> None:
    """Cost lines are saved calls times the configured price per call; time likewise."""
    run = run_eval(tiny_gate, load_dataset(EVAL), FAST)
    report = build_report(tiny_gate, run, FAST)
    p = tiny_gate.settings.pricing
    per_call = (
        p.avg_input_tokens * p.llm_input_per_1m + p.avg_output_tokens * p.llm_output_per_1m
    ) / 1e6
    assert report.cost.llm_cost_per_call == pytest.approx(per_call)
    assert report.cost.llm_cost_saved == pytest.approx(report.llm_calls_saved * per_call)
    assert report.cost.without_gate == pytest.approx(18 * per_call)
    assert report.time.llm_seconds_saved == pytest.approx(
        report.llm_calls_saved * p.llm_seconds_per_call
    )
    mix = report.projections[0]
    assert mix.off_topic_share == 0.7
    admit_in = sum(o.called for o in run.outcomes if o.example.in_domain) / 10
    admit_off = sum(o.called for o in run.outcomes if not o.example.in_domain) / 8
    assert mix.llm_calls_per_1k == pytest.approx(1000 * (0.3 * admit_in + 0.7 * admit_off))


def test_calls_are_counted_not_inferred(tmp_path: Path) -> None:
    """In shadow mode every message reaches the backend, and the harness reports exactly that."""
    from gatekeeper.testing import make_gate

    gate = make_gate(tmp_path, gate={"threshold": 0.35, "shadow": True})
    gate.index()
    report = build_report(gate, run_eval(gate, load_dataset(EVAL), FAST), FAST)
    assert report.off_topic_replies > 0  # the decisions say "refuse" ...
    assert report.llm_calls == 18 and report.llm_calls_saved == 0  # ... but nothing was saved


def test_latency_is_measured_on_single_calls(tiny_gate: Gatekeeper) -> None:
    """Latency percentiles come from the configured number of single gate.check calls."""
    report = build_report(tiny_gate, run_eval(tiny_gate, load_dataset(EVAL), FAST), FAST)
    lat = report.latency_ms
    assert lat.n_sampled == 4 and lat.p50 is not None and lat.p99 is not None
    assert lat.p50 <= lat.p95 <= lat.p99 and "single gate.check()" in lat.method


def test_bootstrap_is_seeded_and_brackets_the_estimate(tiny_gate: Gatekeeper) -> None:
    """The same seed gives the same intervals, and each interval contains its point estimate."""
    run = run_eval(tiny_gate, load_dataset(EVAL), FAST)
    first, second = build_report(tiny_gate, run, FAST), build_report(tiny_gate, run, FAST)
    assert first.confidence_intervals == second.confidence_intervals
    for name in ("saved_rate", "in_domain_pass_rate", "off_topic_block_rate"):
        interval = first.confidence_intervals[name]
        assert interval.low is not None and interval.high is not None
        assert interval.low <= getattr(first, name) <= interval.high


def test_sweep_at_the_operating_point_matches_the_counted_run(tiny_gate: Gatekeeper) -> None:
    """The sweep's point at the gate's threshold equals the counted numbers, chats included."""
    data = load_dataset(EVAL)
    report = build_report(tiny_gate, run_eval(tiny_gate, data, FAST), FAST)
    here = next(p for p in report.sweep if p.threshold == report.threshold)
    assert here.llm_calls == report.llm_calls
    assert here.in_domain_pass_rate == pytest.approx(report.in_domain_pass_rate)
    assert here.off_topic_block_rate == pytest.approx(report.off_topic_block_rate)


def _rows(scores: list[float], intent: str = "order_status") -> list[list[Turn]]:
    """Single-turn rows with these scores, routed under ``intent``."""
    return [[Turn("m", Judged(s, intent, "test", s, None), 1)] for s in scores]


def test_choose_threshold_is_the_highest_meeting_the_target(tiny_gate: Gatekeeper) -> None:
    """With 10 in-domain scores, an 80% target keeps the top 8: the threshold is the 8th score."""
    rows = _rows([0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45])
    threshold, reached = choose_threshold(tiny_gate, rows, 0.8)
    assert reached and threshold == pytest.approx(0.55)
    assert pass_rate_at(tiny_gate, rows, threshold) >= 0.8
    assert pass_rate_at(tiny_gate, rows, threshold + 1e-3) < 0.8
    assert choose_threshold(tiny_gate, rows, 1.0)[0] == pytest.approx(0.45)


def test_choose_threshold_respects_intent_thresholds(tmp_path: Path) -> None:
    """Rows with their own intent threshold pass or fail whatever the global threshold is."""
    from gatekeeper.testing import make_gate

    gate = make_gate(tmp_path, gate={"intent_thresholds": {"refund_request": 0.5}})
    rows = _rows([0.9, 0.8]) + _rows([0.2, 0.6], intent="refund_request")
    threshold, reached = choose_threshold(gate, rows, 0.75)  # 3 of 4; the 0.6 refund always
    assert reached and threshold == pytest.approx(0.8)
    assert choose_threshold(gate, rows, 1.0) == (-1.0, False)  # the 0.2 refund never passes


def test_calibration_uses_the_calibration_file_only(tiny_gate: Gatekeeper) -> None:
    """The threshold meets the target on the calibration file, and eval applies it unchanged."""
    calibration_data = load_dataset(CALIBRATION)
    result = calibrate(tiny_gate, calibration_data, 0.85)
    decisions = with_threshold(tiny_gate, result.threshold).check_many(
        [e.as_input() for e in calibration_data.examples]
    )
    inside = [d for e, d in zip(calibration_data.examples, decisions, strict=True) if e.in_domain]
    assert sum(d.route is not Route.OFF_TOPIC for d in inside) / len(inside) >= 0.85
    assert result.in_domain_pass_rate is not None and result.in_domain_pass_rate >= 0.85
    plan = EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION, target_pass_rate=0.85, options=FAST)
    report, gate = evaluate_gate(tiny_gate, plan)
    assert report.threshold == result.threshold == gate.settings.gate.threshold
    assert report.calibration is not None and report.calibration.source == "tiny_calibration.jsonl"


def test_calibrating_in_the_eval_does_not_warn_about_the_replaced_threshold(
    tiny_gate: Gatekeeper,
) -> None:
    """An eval that calibrates its own threshold logs no stale-calibration warning about the
    configured one, though that was recorded for another catalog."""
    from structlog.testing import capture_logs

    from gatekeeper.calibration import record
    from gatekeeper.eval.gates import with_gate_settings

    foreign = record(tiny_gate.embedder.identity, tiny_gate.rule.name, "another-catalog")
    gate = with_gate_settings(tiny_gate, allow_uncalibrated=False, calibrated_for=foreign)
    plan = EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION, target_pass_rate=0.85, options=FAST)
    with capture_logs() as logs:
        report, _ = evaluate_gate(gate, plan)
    assert report.calibration is not None
    assert "gate.calibration_stale" not in [entry["event"] for entry in logs]


def test_score_rows_keep_conversations_out_of_the_curves(tiny_gate: Gatekeeper) -> None:
    """Score-based metrics use single messages when there are any."""
    run = run_eval(tiny_gate, load_dataset(EVAL), FAST)
    rows, basis = score_rows(run.outcomes)
    assert len(rows) == 16 and "conversations reported separately" in basis
    assert sweep_point(tiny_gate, run.outcomes, 2.0).llm_calls == 0


def test_collection_name_is_valid_and_distinct(tmp_path: Path) -> None:
    """Store names are valid Chroma names, one per catalog file and embedding model."""
    first = collection_name("gatekeeper", tmp_path / "My Catalog (v2).csv", "local:m")
    other_model = collection_name("gatekeeper", tmp_path / "My Catalog (v2).csv", "local:n")
    other_catalog = collection_name("gatekeeper", tmp_path / "other.csv", "local:m")
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", first)
    assert first.startswith("gatekeeper-My-Catalog-v2-")
    assert len({first, other_model, other_catalog}) == 3
    load_settings(None, store={"collection": first})  # the settings accept it too


def _run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    path = Path(__file__).resolve().parents[2] / "eval" / script
    return subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, check=False
    )


def _load_script(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An eval script as a module, imported as running it would (``eval/`` on the path)."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[2] / "eval"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["benchmark_banking77.py", "benchmark_indexing.py"])
def test_a_benchmark_fails_on_a_given_data_dir_without_the_files(
    tmp_path: Path, script: str
) -> None:
    """A benchmark reading banking77, given --data DIR lacking its files, exits 2 naming them,
    not skipped."""
    done = _run_script(script, "--data", str(tmp_path / "nowhere"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "exemplars.csv" in done.stderr and "skipped" not in done.stdout


def test_banking77_benchmark_skips_when_the_default_data_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmark_banking77.py without --data exits 0 with 'skipped' when the default is absent."""
    module = _load_script("benchmark_banking77", monkeypatch)
    monkeypatch.setattr(module, "DEFAULT_DATA", tmp_path / "nowhere")
    assert module.main([]) == 0


def test_indexing_benchmark_skips_without_enough_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmark_indexing.py without --data exits 0 with 'skipped' when the default banking77
    directory is absent and the repo's own texts are fewer than --n."""
    module = _load_script("benchmark_indexing", monkeypatch)
    monkeypatch.setattr(module, "DEFAULT_DATA", tmp_path / "nowhere")
    assert module.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_search_benchmark_runs_on_a_tiny_catalog() -> None:
    """benchmark_search.py runs end to end on a tiny synthetic catalog and prints its table,
    the exact search at recall 1."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    small = "--n 3000 --dimension 128 --clusters 50 --latent 64 --queries 100 --pca 16"
    small += " --candidates 50 --single 10 --batches 2 --repeats 1"
    done = subprocess.run(
        [sys.executable, str(root / "eval" / "benchmark_search.py"), *small.split()],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert done.returncode == 0, done.stderr
    assert "| exact | 1.0000 | 1.0000 | 1.0000 |" in done.stdout
    assert "| pca 16 / 50 candidates |" in done.stdout


def test_indexing_benchmark_catalog_is_distinct_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without banking77 the catalog comes from the repo's datasets: n texts, none twice."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[2] / "eval" / "benchmark_indexing.py"
    spec = importlib.util.spec_from_file_location("benchmark_indexing", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    catalog = module.build_catalog(tmp_path / "nowhere", 500)
    texts = [e.text.casefold() for e in catalog.exemplars()]
    assert len(texts) == len(set(texts)) == 500
    assert module.build_catalog(tmp_path / "nowhere", 10**6) is None


def test_canned_mismatch_names_the_exemplar_that_chose_the_reply(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """A wrong canned reply is listed with the nearest exemplar and its similarity, and the
    report's table shows those and the bar, not the density score."""
    from gatekeeper.eval.report import sections

    data_file = tmp_path / "canned.jsonl"
    data_file.write_text(
        '{"text": "hello", "label": "in_domain", "intent": "order_status"}\n'
        '{"text": "where is my order now", "label": "in_domain", "intent": "order_status"}\n'
        '{"text": "tell me a joke", "label": "off_topic"}\n',
        encoding="utf-8",
    )
    run = run_eval(tiny_gate, load_dataset(data_file), FAST)
    report = build_report(tiny_gate, run, FAST)
    [mismatch] = report.canned_mismatches
    assert mismatch.text == "hello"
    assert mismatch.nearest_intent == "greeting"
    assert mismatch.nearest_exemplar == "hello"
    assert mismatch.nearest_similarity == pytest.approx(1.0, abs=1e-4)
    [section] = [s for s in sections(report) if s.title.startswith("Answered with another")]
    assert "gate.canned_min_similarity" in section.title
    assert section.rows[0][3:] == ["greeting", "hello", "1.000"]


def test_wrong_canned_replies_are_counted_past_a_capped_list(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """With the lists capped at one row, the summary and the section title count every
    in-domain message given another intent's canned reply, and the report says where the rest
    are (the count was the length of the capped list)."""
    from gatekeeper.eval.report import render_markdown

    data_file = tmp_path / "canned.jsonl"
    data_file.write_text(
        '{"text": "hello", "label": "in_domain", "intent": "order_status"}\n'
        '{"text": "hello", "label": "in_domain", "intent": "refund"}\n'
        '{"text": "hello", "label": "in_domain", "intent": "delivery"}\n'
        '{"text": "tell me a joke", "label": "off_topic"}\n',
        encoding="utf-8",
    )
    capped = EvalOptions(latency_sample=0, bootstrap=0, max_listed=1)
    report = build_report(tiny_gate, run_eval(tiny_gate, load_dataset(data_file), capped), capped)
    assert len(report.canned_mismatches) == 1 and report.n_canned_mismatches == 3
    markdown = render_markdown(report)
    assert "Answered with another intent's canned reply (3;" in markdown
    assert "in-domain given a wrong canned reply | 3 |" in markdown
    assert "2 more, listed neither here nor in report.json" in markdown


def test_rows_needed_is_the_exchangeability_bound() -> None:
    """A target needs n >= target / (1 - target) in-domain rows (95%: 19, 99.9%: 999); 100%
    has no such n."""
    from gatekeeper.eval.thresholds import rows_needed

    assert [rows_needed(t) for t in (0.95, 0.98, 0.99, 0.999)] == [19, 49, 99, 999]
    assert rows_needed(1.0) is None


def test_an_eval_at_a_given_threshold_does_not_warn_about_the_configured_one(
    tiny_gate: Gatekeeper,
) -> None:
    """eval --threshold logs no stale-calibration hint about the configured threshold (recorded
    for another catalog), which the run does not use."""
    from structlog.testing import capture_logs

    from gatekeeper.calibration import record
    from gatekeeper.eval.gates import with_gate_settings

    foreign = record(tiny_gate.embedder.identity, tiny_gate.rule.name, "another-catalog")
    gate = with_gate_settings(tiny_gate, allow_uncalibrated=False, calibrated_for=foreign)
    with capture_logs() as logs:
        evaluate_gate(gate, EvalPlan(datasets=(EVAL,), threshold=0.3, options=FAST))
    assert "gate.calibration_stale" not in [entry["event"] for entry in logs]


def test_an_eval_of_single_messages_does_not_warn_about_the_conversation_settings(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """Conversation settings calibrated for another model are no hint in an eval of single
    messages (they act inside chats alone); the threshold's own record still counts."""
    from structlog.testing import capture_logs

    from gatekeeper.calibration import record
    from gatekeeper.eval.gates import with_gate_settings

    here = record(tiny_gate.embedder.identity, tiny_gate.rule.name, "c")
    other = record("openai:e5-query", tiny_gate.rule.name, "c")
    gate = with_gate_settings(tiny_gate, calibrated_for=here, conversations_calibrated_for=other)
    single = tmp_path / "single.jsonl"
    lines = EVAL.read_text(encoding="utf-8").splitlines(keepends=True)
    single.write_text("".join(line for line in lines if '"messages"' not in line), "utf-8")
    with_chats = EvalPlan(datasets=(EVAL,), threshold=0.3, options=FAST)
    for plan, warned in ((with_chats, True), (replace(with_chats, datasets=(single,)), False)):
        with capture_logs() as logs:
            evaluate_gate(gate, plan)
        assert ("gate.calibration_stale" in [entry["event"] for entry in logs]) is warned
