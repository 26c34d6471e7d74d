"""Settings that catch mistakes: unknown variables, relative paths, unknown intents, --version."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.errors import ConfigError
from gatekeeper.settings import load_settings
from gatekeeper.testing import make_gate


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("GATEKEEPER_EMBEDING__MODEL", "GATEKEEPER_EMBEDDING__MODEL"),
        ("GATEKEEPER_GATE_THRESHOLD", "GATEKEEPER_GATE__THRESHOLD"),
        ("GATEKEEPER_THRESHOLD", "GATEKEEPER_GATE__THRESHOLD"),
        ("GATEKEEPER_CATALOGUE", "GATEKEEPER_CATALOG"),
    ],
)
def test_unknown_env_variable_is_an_error_with_a_did_you_mean(
    monkeypatch: pytest.MonkeyPatch, variable: str, meant: str
) -> None:
    """A typo'd GATEKEEPER_* variable is refused, naming it, its source and the right name."""
    monkeypatch.setenv(variable, "0.4")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert f"environment: unknown variable {variable} (did you mean {meant}?)" in str(caught.value)


def test_config_variable_and_dict_settings_are_known(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GATEKEEPER_CONFIG names the settings file; it is not an unknown variable."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: 0.3\n", encoding="utf-8")
    monkeypatch.setenv("GATEKEEPER_CONFIG", str(config))
    assert load_settings(None).gate.threshold == pytest.approx(0.3)


def test_unknown_dotenv_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo'd GATEKEEPER_* key in .env is refused, naming .env; other tools' keys are not."""
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-x\nGATEKEEPER_GATE__TRESHOLD=0.4\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"\.env: unknown variable GATEKEEPER_GATE__TRESHOLD "
        r"\(did you mean GATEKEEPER_GATE__THRESHOLD\?\)",
    ):
        load_settings(None)


def test_bad_value_names_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value from the environment names the variable, not just the field."""
    monkeypatch.setenv("GATEKEEPER_GATE__THRESHOLD", "high")
    with pytest.raises(ConfigError, match=r"gate\.threshold \(environment variable "):
        load_settings(None)


def test_unknown_key_in_the_settings_file_names_the_file_and_a_did_you_mean(
    tmp_path: Path,
) -> None:
    """A typo'd key in the YAML file names the file and suggests the right key."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  treshold: 0.4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert f"gate.treshold (settings file {config}): unknown key (did you mean 'threshold'?)" in (
        str(caught.value)
    )


def test_settings_file_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    """A YAML syntax error in the settings file names the file and the line."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(caught.value).startswith(f"settings file {config}, line ")


def test_paths_in_the_settings_file_are_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """catalog: and data_dir: in a settings file resolve against the file's directory;
    the same paths from env vars resolve against the working directory."""
    config_dir = tmp_path / "deploy"
    config_dir.mkdir()
    config = config_dir / "gk.yaml"
    config.write_text("catalog: intents/dental.csv\ndata_dir: state\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config)
    assert settings.catalog == config_dir / "intents" / "dental.csv"
    assert settings.data_dir == config_dir / "state"
    monkeypatch.setenv("GATEKEEPER_CATALOG", "elsewhere.csv")
    assert load_settings(config).catalog == Path("elsewhere.csv")


def test_intent_threshold_for_an_unknown_intent_is_an_error(tmp_path: Path) -> None:
    """gate.intent_thresholds naming an intent the catalog lacks is refused with the known
    intents and a did-you-mean."""
    with pytest.raises(ConfigError) as caught:
        make_gate(tmp_path, gate={"intent_thresholds": {"order_stauts": 0.5}})
    message = str(caught.value)
    assert "gate.intent_thresholds names intent 'order_stauts'" in message
    assert "did you mean 'order_status'?" in message
    assert "'refund_request'" in message


def test_version_flag_prints_the_version() -> None:
    """`gatekeeper --version` prints the version and exits 0."""
    from gatekeeper import __version__
    from gatekeeper.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gatekeeper {__version__}"


def test_the_package_and_its_distribution_have_one_version() -> None:
    """pyproject reads the version from gatekeeper._version: the installed metadata agrees."""
    from importlib.metadata import version

    from gatekeeper import __version__

    assert version("gatekeeper") == __version__


def test_a_missing_index_advises_the_command_for_this_file_and_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auto_sync off and no index, the error names `gatekeeper index` with the settings
    file and the catalog given apart (it said only `gatekeeper index`, which indexes another
    catalog)."""
    from gatekeeper.errors import IndexMissingError
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.testing import HashingEmbedder

    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    config = tmp_path / "gk.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nstore:\n  auto_sync: false\n"
        "gate:\n  allow_uncalibrated: true\n",
        encoding="utf-8",
    )
    catalog = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_catalog.yaml"
    settings = load_settings(config, catalog=catalog)
    assert settings.index_command() == f"gatekeeper index --config {config} --catalog {catalog}"
    with pytest.raises(IndexMissingError, match=f"run `gatekeeper index --config {config} "):
        Gatekeeper.from_settings(settings).ready()
