"""Replay mode: the dataset goes through a real gating proxy on loopback to a recording
upstream, and the upstream's count agrees with the in-process counted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.metrics import build_report
from gatekeeper.eval.replay import run_replay
from gatekeeper.eval.run import run_eval
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.gate import Gatekeeper

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FAST = EvalOptions(latency_sample=2, bootstrap=100)


def test_replay_counts_what_the_upstream_received(tiny_gate: Gatekeeper) -> None:
    """Replayed through the proxy, the same messages give the same calls and routes."""
    data = load_dataset(FIXTURES / "tiny_eval.jsonl")
    replayed = run_replay(tiny_gate, data, FAST)
    counted = run_eval(tiny_gate, data, FAST)
    assert replayed.llm_calls == counted.llm_calls > 0
    assert [o.decision.route for o in replayed.outcomes] == [
        o.decision.route for o in counted.outcomes
    ]
    assert [o.called for o in replayed.outcomes] == [o.called for o in counted.outcomes]
    report = build_report(tiny_gate, replayed, FAST)
    assert report.llm_calls_saved == 18 - counted.llm_calls
    assert "RecordingUpstream" in report.counting["method"] and report.counting["consistent"]
