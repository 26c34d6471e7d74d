"""What an eval run advises, checked by doing it: the printed commands write what the report
measured (CliRunner, hashing embedder)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.report import render_markdown
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.settings import load_settings
from gatekeeper.testing import HashingEmbedder, make_gate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FAST = EvalOptions(latency_sample=0, bootstrap=0)


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


def test_a_report_calibrated_on_its_own_test_file_says_so_where_it_explains_the_threshold(
    tmp_path: Path,
) -> None:
    """Evaluated on the calibration file itself, the recommended-thresholds intro and the notes
    say the two share every message, not "which it was not chosen on" or "chosen on … alone"."""
    gate = make_gate(tmp_path)
    gate.index()
    calibration = FIXTURES / "tiny_calibration.jsonl"
    plan = EvalPlan(
        datasets=(calibration,), calibrate_on=calibration, target_pass_rate=0.85, options=FAST
    )
    report, _ = evaluate_gate(gate, plan)
    shared = report.meta["calibration_overlap"]
    assert shared == len({json.loads(line)["text"] for line in calibration.open()})
    text = " ".join(render_markdown(report).split())
    assert "which it was not chosen on" not in text and ".jsonl alone" not in text
    assert f"which shares {shared} distinct messages with the file it was chosen on" in text
    assert f"which shares {shared} distinct messages with tiny_calibration.jsonl." in text
