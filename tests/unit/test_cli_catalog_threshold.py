"""A threshold serves the catalog it was calibrated on: `check`, `eval` and `serve` refuse another
catalog file's (exit 2, with the calibrate command), however that catalog was chosen."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = FIXTURES / "tiny_catalog.yaml"
OTHER = FIXTURES / "tiny_catalog.csv"  # another catalog file
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"
#: The record of a threshold calibrated on contents neither catalog has now.
RECORD = {"model": HashingEmbedder().identity, "rule": "density", "catalog": "0123456789abcdef"}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file serving the tiny catalog at a threshold calibrated for this model and
    rule, on an earlier version of it; the hashing embedder; the working directory tmp_path."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)
    for name in ("GATEKEEPER_CATALOG", "GATEKEEPER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {CATALOG}\n"
        f"gate:\n  threshold: 0.2\n  calibrated_for: {json.dumps(RECORD)}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`serve` records the settings it would listen with, instead of listening."""
    calls: list[Any] = []
    monkeypatch.setattr(
        "gatekeeper.interfaces.proxy.runner.run_server",
        lambda settings, **options: calls.append(settings),
    )
    return calls


def _invoke(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def test_serve_refuses_another_catalogs_threshold_as_check_does(
    config: Path, served: list[Any]
) -> None:
    """serve --catalog C at a threshold calibrated on the settings' own catalog exits 2 before
    it starts, with the calibrate command, as check does (it served at that threshold with a
    gate.calibration_stale warning); on its own catalog it starts."""
    code, said = _invoke("serve", "--config", config, "--catalog", OTHER)
    assert code == 2 and "nobody chose" in said, said
    assert "calibrate --config gatekeeper-tiny_catalog" in said
    assert "then serve with that --config" in said
    assert served == []
    code, said = _invoke("check", "--config", config, "--catalog", OTHER, "where is my order")
    assert code == 2 and "then check with that --config" in said, said
    code, said = _invoke("serve", "--config", config)
    assert code == 0 and len(served) == 1, said


@pytest.mark.parametrize("source", ["environment", ".env"])
@pytest.mark.parametrize("command", ["check", "eval", "serve"])
def test_a_catalog_chosen_outside_the_settings_file_is_held_to_its_threshold(
    config: Path, served: list[Any], tmp_path: Path, command: str, source: str
) -> None:
    """GATEKEEPER_CATALOG naming another catalog file (in the environment or .env) is held to
    the rule --catalog is: check, eval and serve exit 2 with the calibrate command instead of
    deciding at the threshold of the file's own catalog with a warning (exit 0)."""
    env = {"GATEKEEPER_CATALOG": str(OTHER)}
    if source == ".env":
        (tmp_path / ".env").write_text(f"GATEKEEPER_CATALOG={OTHER}\n", encoding="utf-8")
        env = {}
    report = ("--out", tmp_path / "report", "--latency-sample", "0", "--bootstrap", "0")
    args: tuple[str | Path, ...] = {
        "check": ("check", "where is my order"),
        "eval": ("eval", "--dataset", FIXTURES / "tiny_eval.jsonl", *report),
        "serve": ("serve",),
    }[command]
    code, said = _invoke(*args, "--config", config, env=env)
    assert code == 2 and "nobody chose" in said, said
    assert served == []


def test_an_edited_catalog_only_warns_whichever_way_it_is_named(config: Path) -> None:
    """The settings' own catalog file, named by GATEKEEPER_CATALOG in another spelling, whose
    contents changed since the calibration, is decided on with a warning (an edit, not another
    catalog)."""
    relative = os.path.relpath(CATALOG, Path.cwd())
    code, said = _invoke(
        "check", "--config", config, "where is my order", env={"GATEKEEPER_CATALOG": relative}
    )
    assert code == 0, said
    assert "calibrated on a catalog with other contents" in said
