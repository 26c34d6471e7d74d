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


def test_replay_keeps_the_follow_ups(tiny_gate: Gatekeeper) -> None:
    """Chats replayed through the proxy flag the same follow-ups as the counted run (the
    replayed report said 0 follow-ups forwarded, every row followup false)."""
    data = load_dataset(FIXTURES / "tiny_chats.jsonl")
    replayed = build_report(tiny_gate, run_replay(tiny_gate, data, FAST), FAST)
    counted = build_report(tiny_gate, run_eval(tiny_gate, data, FAST), FAST)
    assert [r.followup for r in replayed.rows] == [r.followup for r in counted.rows]
    assert replayed.conversations is not None and counted.conversations is not None
    assert replayed.conversations.rescued_followups == counted.conversations.rescued_followups > 0
