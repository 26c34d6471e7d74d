"""`gatekeeper tune`'s flow on the hashing embedder: which settings file takes the tuned model,
and the commands it prints, each run as printed, in order (the adapter applied for real)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.embedding import Embedder
from gatekeeper.embedding.adapted import adapt
from gatekeeper.finetune import FinetuneResult
from gatekeeper.settings import EmbeddingSettings, load_settings
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LABELLED = FIXTURES / "tiny_calibration.jsonl"
ENCODER_MARK = "fake-encoder.txt"


def _embedder(settings: EmbeddingSettings) -> Embedder:
    """The hashing embedder, 256-d; 128-d for a (fake) fine-tuned encoder directory; with the
    settings' adapter applied, as :func:`gatekeeper.embedding.build_embedder` does."""
    encoder = (Path(settings.model) / ENCODER_MARK).is_file()
    base = HashingEmbedder(128 if encoder else 256)
    return adapt(base, settings.adapter) if settings.adapter is not None else base


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with two catalogs (tiny.yaml and other.yaml), every gate and tune
    embedding with :func:`_embedder`, and a fast adapter recipe."""
    from gatekeeper import tuning

    monkeypatch.setattr("gatekeeper.embedding.build_embedder", _embedder)
    monkeypatch.setattr("gatekeeper.gate.build_embedder", _embedder)
    real_tune = tuning.tune_adapter
    fast = tuning.TuneConfig(steps=5)
    monkeypatch.setattr(
        tuning, "tune_adapter", lambda *a, **kw: real_tune(*a, **{**kw, "config": fast})
    )
    for name in ("GATEKEEPER_CONFIG", "GATEKEEPER_EMBEDDING__ADAPTER", "GATEKEEPER_CATALOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEKEEPER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURES / "tiny_catalog.yaml", "tiny.yaml")
    other = yaml.safe_load((FIXTURES / "tiny_catalog.yaml").read_text(encoding="utf-8"))
    other["intents"][0]["exemplars"].append("has my order shipped yet")
    Path("other.yaml").write_text(yaml.safe_dump(other), encoding="utf-8")
    return tmp_path


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _then_run(output: str) -> list[str]:
    """The commands printed after "Then run:", in order."""
    after = output.split("Then run:", 1)[1]
    return [line.strip() for line in after.splitlines() if "gatekeeper " in line][:2]


def _run(command: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a printed command (its NAME=value prefix set in the environment) and return its
    output, after asserting it exits 0."""
    words = shlex.split(command.replace("YOUR_LABELLED_MESSAGES.jsonl", str(LABELLED)))
    with monkeypatch.context() as env:
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            env.setenv(name, value)
        assert words[0] == "gatekeeper", command
        code, output = _invoke(*words[1:])
    assert code == 0, f"{command}\n{output}"
    return output


def _settings_file(path: str, **values: Any) -> Path:
    Path(path).write_text(yaml.safe_dump(values), encoding="utf-8")
    return Path(path)


def test_tune_write_refuses_a_file_serving_another_catalog(work: Path) -> None:
    """`tune --catalog A --config F --write`, F serving catalog B, exits 2 before training (as
    `calibrate --write` does) instead of serving B with A's adapter."""
    config = _settings_file("f.yaml", catalog=str(work / "other.yaml"))
    code, output = _invoke("tune", "--catalog", "tiny.yaml", "--config", config, "--write")
    assert code == 2, output
    said = " ".join(output.split())
    assert "--write would store an adapter trained on tiny.yaml in f.yaml" in said
    assert f"which serves the catalog {work / 'other.yaml'}" in said
    assert "embedding" not in config.read_text() and not (work / "data" / "adapters").exists()


def test_tune_write_creates_a_file_serving_the_catalog_whose_commands_run(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tune --catalog C --config new.yaml --write` creates new.yaml serving C with the adapter;
    its printed index and calibrate commands run as printed, in order, and leave a gate on the
    adapted model serving C."""
    code, output = _invoke("tune", "--catalog", "tiny.yaml", "--config", "new.yaml", "--write")
    assert code == 0, output
    settings = load_settings("new.yaml")
    assert settings.catalog == work / "tiny.yaml" and settings.embedding.adapter is not None
    commands = _then_run(output)
    assert commands == [
        "gatekeeper index --rebuild --config new.yaml",
        "gatekeeper calibrate --config new.yaml --dataset YOUR_LABELLED_MESSAGES.jsonl "
        "--target-pass-rate 0.98 --write",
    ]
    indexed = _run(commands[0], monkeypatch)
    assert f"indexed {work / 'tiny.yaml'}" in indexed
    _run(commands[1], monkeypatch)
    record = load_settings("new.yaml").gate.calibrated_for
    assert record is not None and record.model.startswith("hashing:256+adapter:")
    checked = json.loads(
        _run("gatekeeper check --config new.yaml --json 'track my order'", monkeypatch)
    )
    assert checked["route"] == "llm"


def test_tune_without_write_prints_commands_that_use_the_adapter(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --write, the printed index and calibrate commands carry the adapter in
    GATEKEEPER_EMBEDDING__ADAPTER: run as printed they index and calibrate the adapted model,
    not the frozen one."""
    config = _settings_file("mine.yaml", catalog=str(work / "tiny.yaml"))
    code, output = _invoke("tune", "--config", config)
    assert code == 0, output
    adapter = next((work / "data" / "adapters").iterdir())
    commands = _then_run(output)
    for command in commands:
        assert command.startswith(f"GATEKEEPER_EMBEDDING__ADAPTER={adapter} gatekeeper "), command
    for command in commands:
        _run(command, monkeypatch)
    record = load_settings(config).gate.calibrated_for
    assert record is not None and record.model.startswith("hashing:256+adapter:")
    assert "embedding.adapter:" in " ".join(output.split())  # how to serve it


def test_tunes_commands_for_a_catalog_chosen_by_the_environment_calibrate_its_own_file(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GATEKEEPER_CATALOG naming another catalog than --config F serves, tune's printed
    commands run as printed and calibrate into that catalog's own settings file, not into F
    (which took the other catalog's threshold)."""
    config = _settings_file("mine.yaml", catalog=str(work / "tiny.yaml"))
    monkeypatch.setenv("GATEKEEPER_CATALOG", "other.yaml")
    code, output = _invoke("tune", "--config", config)
    assert code == 0, output
    for command in _then_run(output):
        _run(command, monkeypatch)
    assert load_settings(config).gate.calibrated_for is None
    written = load_settings("gatekeeper-other.yaml")
    assert written.served_catalog == work / "other.yaml"
    assert written.gate.calibrated_for is not None


def _fake_finetune(catalog: Any, settings: Any, *, out: Any, models_dir: Path, **_: Any) -> Any:
    """A "fine-tuned encoder": a directory :func:`_embedder` embeds with 128 dimensions."""
    path = models_dir / "tiny-encoder-000000000000"
    path.mkdir(parents=True)
    (path / ENCODER_MARK).write_text("fake", encoding="utf-8")
    (path / "manifest.json").write_text("{}", encoding="utf-8")
    data = {
        "exemplars_train": 7, "exemplars_heldout": 1, "intents": 3, "off_topic_train": 9,
        "off_topic_heldout": 1, "off_topic_from_catalog": 3, "off_topic_generic": 7,
        "language": "en",
    }  # fmt: skip
    metrics = {"auroc_in_vs_off": 0.9}
    manifest = {
        "data": data, "train_seconds": 1.0, "heldout": {"frozen": metrics, "tuned": metrics},
    }  # fmt: skip
    return FinetuneResult(path, manifest, 1.0)


def test_encoder_write_removes_the_adapter_of_the_old_model(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tune --method encoder --write` into a file with embedding.adapter removes it and says
    so: its printed `index --rebuild` then runs (the old model's adapter made it exit 2)."""
    monkeypatch.setattr("gatekeeper.finetune.finetune_encoder", _fake_finetune)
    config = _settings_file("mine.yaml", catalog=str(work / "tiny.yaml"))
    assert _invoke("tune", "--config", config, "--write")[0] == 0
    assert load_settings(config).embedding.adapter is not None
    code, output = _invoke("tune", "--method", "encoder", "--config", config, "--write")
    assert code == 0, output
    said = " ".join(output.split())
    assert "removed its embedding.adapter" in said
    assert "`gatekeeper tune --config mine.yaml --write` trains one for it" in said
    settings = load_settings(config)
    assert settings.embedding.adapter is None and settings.embedding.model.endswith("000000")
    for command in _then_run(output):
        _run(command, monkeypatch)
    record = load_settings(config).gate.calibrated_for
    assert record is not None and record.model == "hashing:128"


def test_an_adapter_over_a_fine_tuned_encoder_is_trained_on_its_vectors(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tune --write` into a file whose model is a fine-tuned encoder trains the adapter on
    that encoder's vectors, says so, and its commands run as printed."""
    model = work / "encoder"
    model.mkdir()
    (model / ENCODER_MARK).write_text("fake", encoding="utf-8")
    config = _settings_file(
        "mine.yaml", catalog=str(work / "tiny.yaml"), embedding={"model": str(model)}
    )
    code, output = _invoke("tune", "--config", config, "--write")
    assert code == 0, output
    assert "the adapted model is a new model (hashing:128+adapter:" in output
    for command in _then_run(output):
        _run(command, monkeypatch)
    record = load_settings(config).gate.calibrated_for
    assert record is not None and record.model.startswith("hashing:128+adapter:")


def test_an_adapter_of_another_model_names_this_gates_tune_command(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter trained on another model's vectors is refused with the exact `gatekeeper
    tune --config F --write` for this gate; run as printed, it makes `index` work."""
    config = _settings_file("mine.yaml", catalog=str(work / "tiny.yaml"))
    assert _invoke("tune", "--config", config, "--write")[0] == 0
    model = work / "encoder"
    model.mkdir()
    (model / ENCODER_MARK).write_text("fake", encoding="utf-8")
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["embedding"]["model"] = str(model)
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    code, output = _invoke("index", "--config", config)
    assert code == 2, output
    command = re.search(r"run `([^`]*)` to train one", " ".join(output.split()))
    assert command and command[1] == "gatekeeper tune --config mine.yaml --write"
    _run(command[1], monkeypatch)
    _run("gatekeeper index --config mine.yaml", monkeypatch)


def test_an_adapter_trained_on_another_catalog_is_a_warning_at_gate_start(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gate whose adapter was trained on another catalog's contents warns at start, as a
    readable line naming `gatekeeper tune --config F --write`; none once retrained."""
    config = _settings_file("mine.yaml", catalog=str(work / "tiny.yaml"))
    assert _invoke("tune", "--config", config, "--write")[0] == 0
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["catalog"] = str(work / "other.yaml")
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    output = _run("gatekeeper index --config mine.yaml", monkeypatch)
    said = " ".join(output.split())
    assert "warning: embedding.adapter" in said and "trained on a catalog with other" in said
    assert "run `gatekeeper tune --config mine.yaml --write`" in said
    assert '"event"' not in output
    _run("gatekeeper tune --config mine.yaml --write", monkeypatch)
    assert "trained on a catalog" not in _run("gatekeeper index --config mine.yaml", monkeypatch)


def test_serve_logs_the_adapter_trained_on_another_catalog(tmp_path: Path) -> None:
    """A gate whose adapter was trained on other catalog contents logs gate.adapter_stale (the
    log line `serve` shows) with the tune command; on its own catalog, nothing."""
    from structlog.testing import capture_logs

    from gatekeeper.embedding.adapted import AdaptedEmbedder
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.settings import Settings
    from gatekeeper.testing import tiny_catalog
    from gatekeeper.tuning import TuneConfig, tune_adapter

    base = HashingEmbedder()
    tuned = tune_adapter(tiny_catalog(), base, out=tmp_path / "a", config=TuneConfig(steps=2))
    other = tiny_catalog().model_copy(update={"domain": "another shop"})
    settings = Settings(data_dir=tmp_path / "data", gate={"allow_uncalibrated": True})
    logged = []
    for catalog in (other, tiny_catalog()):
        gate = Gatekeeper.from_settings(
            settings, catalog=catalog, embedder=AdaptedEmbedder(base, tuned.adapter)
        )
        with capture_logs() as logs:
            gate.check_calibrated()
        logged.append([e for e in logs if e["event"] == "gate.adapter_stale"])
        gate.close()
    assert len(logged[0]) == 1 and "`gatekeeper tune" in logged[0][0]["hint"]
    assert logged[1] == []
