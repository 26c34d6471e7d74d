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
    """The message is judged once to warm up, then decided: latency_ms is the decision, which
    embeds the message again (no turn cache: a cached vector timed 0.3 ms); the warm-up and the
    model load are reported on their own, and only the decision is logged."""
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
    logged: list[Any] = []
    monkeypatch.setattr(Gatekeeper, "_log_decision", lambda self, *args: logged.append(args))
    result = CliRunner().invoke(
        app, ["check", "where is my order", "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(latencies) == 1
    assert embedder.encoded[-2:] == ["where is my order"] * 2  # embedded by warm-up and decision
    assert out["latency_ms"] == latencies[0] and out["first_latency_ms"] > 0
    assert len(logged) == 1  # one gate.decided line for one message
    assert out["startup_ms"] >= 0 and {"route", "intent", "score", "threshold"} <= set(out)
    monkeypatch.setenv("COLUMNS", "200")
    table = CliRunner().invoke(app, ["check", "where is my order", "--config", str(config)])
    assert table.exit_code == 0 and "first decision" in table.output


def _tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: str = "") -> Path:
    """A settings file serving the tiny catalog uncalibrated (plus ``gate`` lines); the CLI's
    gates embed with the hashing embedder."""
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {FIXTURES / 'tiny_catalog.yaml'}\n"
        f"gate:\n  allow_uncalibrated: true\n{gate}",
        encoding="utf-8",
    )
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    return config


def test_check_reads_stdin_as_utf8_and_names_a_bad_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check -` decodes stdin as UTF-8 (a BOM dropped); bytes that are not UTF-8 exit 2 naming
    the byte (it blamed "a lone surrogate")."""
    config = _tiny_settings(tmp_path, monkeypatch)
    args = ["check", "--config", str(config), "--json", "-"]
    bad = CliRunner().invoke(app, args, input=b"\xff\xfewhere is my order")
    assert bad.exit_code == 2 and "stdin is not UTF-8 text (byte 0: 0xff)" in bad.output
    good = CliRunner().invoke(app, args, input="\ufefftrack my order".encode())
    assert good.exit_code == 0, good.output


def test_check_prints_the_score_as_precisely_as_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check's table shows score and threshold with 4 decimals (0.41614 refused at 0.4162
    read "0.416" twice)."""
    config = _tiny_settings(tmp_path, monkeypatch, "  threshold: 0.41237\n")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["check", "track my parcel", "--config", str(config)])
    assert result.exit_code == 0, result.output
    threshold = next(line for line in result.output.splitlines() if "threshold" in line)
    assert threshold.split()[-1] == "0.4124"
