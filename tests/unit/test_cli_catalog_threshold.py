"""A threshold serves the catalog it was calibrated on: `check`, `eval` and `serve` refuse another
catalog file's (exit 2, with the calibrate command), however that catalog was chosen; the
calibrate command they advise runs as printed, and `calibrate --write` never stores one
catalog's threshold in a settings file serving another."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import read_catalog
from gatekeeper.cli import app
from gatekeeper.settings import catalog_settings_file, load_settings
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = FIXTURES / "tiny_catalog.yaml"
OTHER = FIXTURES / "tiny_catalog.csv"  # another catalog file
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"
#: The record of a threshold calibrated on the settings' own catalog as it is now.
RECORD = {
    "model": HashingEmbedder().identity,
    "rule": "density",
    "catalog": read_catalog(CATALOG).catalog.content_hash(),
}
#: A catalog hash neither catalog has now: an edit since the calibration.
EARLIER = "0123456789abcdef"


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


def _advised(said: str) -> list[str]:
    """The calibrate command an error advises (between backquotes), as arguments."""
    found = re.search(r"`(gatekeeper calibrate [^`]*)`", said)
    assert found, said
    return shlex.split(found.group(1))[1:]


def test_serve_refuses_another_catalogs_threshold_as_check_does(
    config: Path, served: list[Any]
) -> None:
    """serve --catalog C at a threshold calibrated on the settings' own catalog exits 2 before
    it starts, with the calibrate command, as check does (it served at that threshold with a
    gate.calibration_stale warning); on its own catalog it starts."""
    code, said = _invoke("serve", "--config", config, "--catalog", OTHER)
    assert code == 2 and "nobody chose" in said, said
    assert "calibrate --config gatekeeper-tiny_catalog.csv.yaml" in said
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
    config.write_text(config.read_text(encoding="utf-8").replace(RECORD["catalog"], EARLIER))
    relative = os.path.relpath(CATALOG, Path.cwd())
    code, said = _invoke(
        "check", "--config", config, "where is my order", env={"GATEKEEPER_CATALOG": relative}
    )
    assert code == 0, said
    assert "calibrated on a catalog with other contents" in said


def test_the_advised_calibrate_command_runs_for_every_format_of_a_catalog(
    config: Path, tmp_path: Path
) -> None:
    """check --catalog on cat.csv and on cat.jsonl in one folder advise settings files of their
    own (both were told gatekeeper-cat.yaml, and the second calibrate --write was refused after
    the first created it); each command runs as printed, and check then decides with it."""
    rows = [line.split(",") for line in OTHER.read_text(encoding="utf-8").splitlines()[1:]]
    csv, jsonl = tmp_path / "cat.csv", tmp_path / "cat.jsonl"
    csv.write_text(OTHER.read_text(encoding="utf-8"), encoding="utf-8")
    jsonl.write_text(
        "".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows), encoding="utf-8"
    )
    for catalog in (csv, jsonl):
        code, said = _invoke("check", "--config", config, "--catalog", catalog, "order status")
        assert code == 2, said
        advised = _advised(said.replace("YOUR_LABELLED_MESSAGES.jsonl", str(CALIBRATION)))
        own = catalog_settings_file(catalog)
        assert advised[advised.index("--config") + 1] == str(own)
        code, said = _invoke(*[a if a != "0.98" else "0.85" for a in advised])
        assert code == 0, said
        assert load_settings(own).catalog == catalog.resolve()
        code, said = _invoke("check", "--config", own, "--catalog", catalog, "order status")
        assert code == 0, said
    assert catalog_settings_file(tmp_path / "cat.yaml") == Path("gatekeeper-cat.yaml")


def test_calibrate_write_never_stores_another_catalogs_threshold(
    config: Path, tmp_path: Path
) -> None:
    """calibrate --write with GATEKEEPER_CATALOG naming another catalog than the --config file
    serves is refused before any scoring, naming the catalog's own settings file (it wrote
    that catalog's threshold into the file serving the other); into a new file, it creates one
    serving that catalog."""
    before = config.read_text(encoding="utf-8")
    args = ("calibrate", "--dataset", CALIBRATION, "--target-pass-rate", "0.85", "--write")
    env = {"GATEKEEPER_CATALOG": str(OTHER)}
    code, said = _invoke(*args, "--config", config, env=env)
    assert code == 2, said
    assert "--config gatekeeper-tiny_catalog.csv.yaml, created serving it" in said
    assert "threshold 0." not in said  # refused before scoring
    assert config.read_text(encoding="utf-8") == before
    fresh = tmp_path / "fresh.yaml"
    code, said = _invoke(*args, "--config", fresh, env=env)
    assert code == 0, said
    assert load_settings(fresh).catalog == OTHER


@pytest.mark.parametrize("chosen", ["--catalog", "GATEKEEPER_CATALOG"])
def test_evals_advised_command_for_another_catalog_runs_with_a_config_given(
    config: Path, tmp_path: Path, chosen: str
) -> None:
    """eval --config F on another catalog C (--catalog C, or GATEKEEPER_CATALOG=C) advises
    calibrating into C's own settings file, not into F, which serves another catalog (the
    command was refused as printed, or, with the variable, stored C's threshold in F)."""
    before = config.read_text(encoding="utf-8")
    env = {"GATEKEEPER_CATALOG": str(OTHER)} if chosen != "--catalog" else None
    on = ("--catalog", OTHER) if chosen == "--catalog" else ()
    code, said = _invoke(
        "eval", "--config", config, *on, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--calibrate-on", CALIBRATION, "--target-pass-rate", "0.85", "--out", tmp_path / "r",
        "--latency-sample", "0", "--bootstrap", "0", env=env,
    )  # fmt: skip
    assert code == 0, said
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    command = next(r["command"] for r in report["recommended_thresholds"] if r["threshold"])
    assert " --config gatekeeper-tiny_catalog.csv.yaml " in command
    code, said = _invoke(*shlex.split(command)[1:], env=env)
    assert code == 0, said
    assert load_settings(tmp_path / "gatekeeper-tiny_catalog.csv.yaml").catalog == OTHER
    assert config.read_text(encoding="utf-8") == before
