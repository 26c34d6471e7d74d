"""What an eval run advises, checked by doing it: the printed commands write what the report
measured (CliRunner, hashing embedder)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.settings import load_settings
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file serving the tiny catalog with rule contrast; the hashing embedder."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {FIXTURES / 'tiny_catalog.yaml'}\n"
        "gate:\n  rule: contrast\n  threshold: 0.2\n",
        encoding="utf-8",
    )
    return path


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_the_apply_command_of_an_eval_with_rule_writes_that_rule_and_threshold(
    config: Path, tmp_path: Path
) -> None:
    """eval --rule top1 on a file whose rule is contrast advises `calibrate ... --rule top1`:
    run as printed, it writes the report's threshold and gate.rule top1 (it wrote contrast's)."""
    out = tmp_path / "r"
    code, output = _invoke(
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--calibrate-on", FIXTURES / "tiny_calibration.jsonl", "--target-pass-rate", "0.85",
        "--rule", "top1", "--out", out, "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    rec = next(r for r in report["recommended_thresholds"] if r["target_pass_rate"] == 0.85)
    assert rec["threshold"] == report["threshold"]
    said = " ".join(output.split()).split("apply with: ", 1)[1]
    assert " --rule top1 " in said and " --rule top1 " in rec["command"]
    assert f"`{rec['command']}`" in (out / "report.md").read_text()
    code, output = _invoke(*shlex.split(rec["command"])[1:])
    assert code == 0, output
    written = load_settings(config)
    assert written.gate.rule == "top1" and written.gate.threshold == rec["threshold"]
