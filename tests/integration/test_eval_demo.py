"""`gatekeeper demo` end to end on the real default model, embedded Chroma and bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app

pytestmark = pytest.mark.integration


def test_demo_prints_the_summary_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo calibrates on the calibration split, evaluates the rest and writes the report."""
    monkeypatch.setenv("GATEKEEPER_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--latency-sample", "20"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "LLM calls saved" in result.output and "report.html" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_queries"] == 403 + 40 and report["n_multi_turn"] == 40
    assert report["llm_calls"] + report["llm_calls_saved"] == report["n_queries"]
    assert report["calibration"]["source"] == "shop_calibration.jsonl"
    assert report["calibration"]["in_domain_pass_rate"] >= 0.98
    assert report["meta"]["embedding_model"].startswith("local:")
    assert report["n_unsupported"] > 0 and report["unsupported_pass_rate"] is not None
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3
