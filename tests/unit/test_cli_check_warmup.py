"""`gatekeeper check` reports a warm decision's latency, with the one-time warm-up apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_check_times_a_warm_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message is decided once to warm up, then again: latency_ms is the second decision,
    which embeds the message again (no turn cache: a cached vector timed 0.3 ms); the first
    decision and the model load are reported on their own."""
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {FIXTURES / 'tiny_catalog.yaml'}\n"
        "gate:\n  allow_uncalibrated: true\n",
        encoding="utf-8",
    )
    embedder = HashingEmbedder()
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: embedder)
    latencies: list[float] = []
    original = Gatekeeper.check

    def check(self: Gatekeeper, message: Any, **kwargs: Any) -> Any:
        decision = original(self, message, **kwargs)
        latencies.append(decision.latency_ms)
        return decision

    monkeypatch.setattr(Gatekeeper, "check", check)
    result = CliRunner().invoke(
        app, ["check", "where is my order", "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(latencies) == 2
    assert embedder.encoded[-2:] == ["where is my order"] * 2  # embedded by both decisions
    assert out["first_latency_ms"] == latencies[0] and out["latency_ms"] == latencies[1]
    assert out["startup_ms"] >= 0 and {"route", "intent", "score", "threshold"} <= set(out)
    monkeypatch.setenv("COLUMNS", "200")
    table = CliRunner().invoke(app, ["check", "where is my order", "--config", str(config)])
    assert table.exit_code == 0 and "first decision" in table.output
