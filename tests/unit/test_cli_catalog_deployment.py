"""The documented deployment: a settings file naming no catalog, beside GATEKEEPER_CATALOG
naming the mounted one. Its threshold, calibrated there, only goes stale when that catalog is
edited; the shipped threshold (calibrated on the default catalog) is refused on another one
unless gate.allow_uncalibrated; and `calibrate --write` calibrates that file for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import read_catalog
from gatekeeper.cli import app
from gatekeeper.settings import load_settings, project_path
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"
#: The catalog a settings file naming none serves (its threshold's, as shipped).
DEFAULT = project_path(Path("configs/intents/shop.yaml")).resolve()


@pytest.fixture
def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment's own catalog, a copy of the tiny one; the hashing embedder; the working
    directory tmp_path; no GATEKEEPER_* variables from outside."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)
    for name in ("GATEKEEPER_CATALOG", "GATEKEEPER_CONFIG", "GATEKEEPER_GATE__ALLOW_UNCALIBRATED"):
        monkeypatch.delenv(name, raising=False)
    catalog = tmp_path / "mounted" / "mine.yaml"
    catalog.parent.mkdir()
    shutil.copy(FIXTURES / "tiny_catalog.yaml", catalog)
    return catalog


def _settings(tmp_path: Path, calibrated_on: Path) -> Path:
    """A settings file with no `catalog:`, its threshold calibrated on ``calibrated_on``."""
    record = {
        "model": HashingEmbedder().identity,
        "rule": "density",
        "catalog": read_catalog(calibrated_on).catalog.content_hash(),
    }
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"gate:\n  threshold: 0.2\n  calibrated_for: {json.dumps(record)}\n",
        encoding="utf-8",
    )
    return path


def _edit(catalog: Path) -> None:
    """One exemplar more in the first intent of ``catalog``."""
    text = catalog.read_text(encoding="utf-8")
    head, tail = text.split("exemplars:\n", 1)
    indent = tail[: len(tail) - len(tail.lstrip())]
    catalog.write_text(
        f"{head}exemplars:\n{indent}- has my parcel left your warehouse yet\n{tail}",
        encoding="utf-8",
    )


def _invoke(*args: str | Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("command", ["check", "serve"])
def test_an_edited_environment_catalog_only_warns(
    mounted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """GATEKEEPER_CATALOG's catalog, edited since the file's threshold was calibrated on it,
    is decided on with the stale-calibration warning (it was refused as another catalog's)."""
    served: list[Any] = []
    monkeypatch.setattr(
        "gatekeeper.interfaces.proxy.runner.run_server",
        lambda settings, **options: served.append(settings),
    )
    config = _settings(tmp_path, mounted)
    _edit(mounted)
    env = {"GATEKEEPER_CONFIG": str(config), "GATEKEEPER_CATALOG": str(mounted)}
    code, said = _invoke(
        *{"check": ("check", "order status"), "serve": ("serve",)}[command], env=env
    )
    assert code == 0, said
    assert "nobody chose" not in said
    if command == "check":
        assert "calibrated on a catalog with other contents" in said
    else:
        assert len(served) == 1


def test_the_default_catalogs_threshold_is_refused_on_another_unless_allowed(
    mounted: Path, tmp_path: Path
) -> None:
    """The threshold of the default catalog (a file naming none, as shipped) on the catalog
    GATEKEEPER_CATALOG names is refused, naming gate.allow_uncalibrated, which lifts it (the
    refusal stood whatever it said)."""
    config = _settings(tmp_path, DEFAULT)
    env = {"GATEKEEPER_CONFIG": str(config), "GATEKEEPER_CATALOG": str(mounted)}
    code, said = _invoke("check", "order status", env=env)
    assert code == 2 and "nobody chose" in said, said
    assert "gate.allow_uncalibrated: true" in said
    code, said = _invoke(
        "check", "order status", env={**env, "GATEKEEPER_GATE__ALLOW_UNCALIBRATED": "true"}
    )
    assert code == 0, said


def test_calibrate_write_calibrates_the_deployments_file_for_its_catalog(
    mounted: Path, tmp_path: Path
) -> None:
    """calibrate --write into a settings file naming no catalog, with GATEKEEPER_CATALOG, stores
    the threshold and records the catalog in it (it was refused); the edited catalog then only
    warns, and another catalog is refused."""
    config = _settings(tmp_path, DEFAULT)
    env = {"GATEKEEPER_CONFIG": str(config), "GATEKEEPER_CATALOG": str(mounted)}
    args = ("calibrate", "--dataset", CALIBRATION, "--target-pass-rate", "0.85", "--write")
    code, said = _invoke(*args, env=env)
    assert code == 0, said
    assert f"and catalog = {mounted.resolve()}" in said
    assert load_settings(config).served_catalog == mounted.resolve()
    _edit(mounted)
    code, said = _invoke("check", "order status", env=env)
    assert code == 0 and "calibrated on a catalog with other contents" in said, said
    code, said = _invoke(*args, env=env)  # again, into the file that now names it
    assert code == 0, said
    other = {**env, "GATEKEEPER_CATALOG": str(FIXTURES / "tiny_catalog.csv")}
    code, said = _invoke("check", "order status", env=other)
    assert code == 2 and "nobody chose" in said, said
