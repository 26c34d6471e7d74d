"""Settings: env vars, YAML file, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.settings import load_settings


def test_nested_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_GATE__THRESHOLD and GATEKEEPER_DATA_DIR reach the nested settings."""
    monkeypatch.setenv("GATEKEEPER_GATE__THRESHOLD", "0.42")
    monkeypatch.setenv("GATEKEEPER_DATA_DIR", "/tmp/somewhere")
    settings = load_settings(None)
    assert settings.gate.threshold == pytest.approx(0.42)
    assert settings.data_dir == Path("/tmp/somewhere")


def test_yaml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML file sets values; an env var beats the file."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: 0.3\n  rule: top1\nstore:\n  top_k: 7\n")
    monkeypatch.setenv("GATEKEEPER_STORE__TOP_K", "9")
    settings = load_settings(config)
    assert settings.gate.threshold == pytest.approx(0.3)
    assert settings.gate.rule == "top1"
    assert settings.store.top_k == 9


def test_comma_separated_server_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_SERVER__API_KEYS is a comma-separated list of secrets."""
    monkeypatch.setenv("GATEKEEPER_SERVER__API_KEYS", "k1, k2,,k3")
    keys = load_settings(None).server.api_keys
    assert [k.get_secret_value() for k in keys] == ["k1", "k2", "k3"]
    assert "k1" not in repr(load_settings(None).server)


@pytest.mark.parametrize("value", ["", "  ", ",", " , ,", "[]", '[""]', '[" "]'])
def test_server_keys_set_but_holding_none_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """GATEKEEPER_SERVER__API_KEYS set but holding no key (empty, spaces, commas: what a
    template's unset ${KEYS} gives) is a settings error naming the variable and how to turn
    inbound auth off (it turned inbound auth off unnoticed); unset, there are no keys."""
    monkeypatch.setenv("GATEKEEPER_SERVER__API_KEYS", value)
    variable = r"server\.api_keys \(environment variable GATEKEEPER_SERVER__API_KEYS\)"
    with pytest.raises(ConfigError, match=rf"{variable}: is set but holds no key") as info:
        load_settings(None)
    assert "to serve without inbound auth, unset the variable" in str(info.value)
    monkeypatch.delenv("GATEKEEPER_SERVER__API_KEYS")
    assert load_settings(None).server.api_keys == []


@pytest.mark.parametrize("key", ["clé-secrète", "sk key", "sk-\tx", "sk-\u200b"])
@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("GATEKEEPER_SERVER__API_KEYS", r"server\.api_keys\.1"),
        ("GATEKEEPER_UPSTREAM__API_KEY", r"upstream\.api_key"),
        ("GATEKEEPER_EMBEDDING__API_KEY", r"embedding\.api_key"),
    ],
)
def test_a_key_no_http_client_can_send_is_refused(
    monkeypatch: pytest.MonkeyPatch, key: str, variable: str, field: str
) -> None:
    """A key with non-ASCII, space or control characters is a settings error naming the field,
    never the key (sent, it would fail every request: 401s inbound, errors upstream)."""
    monkeypatch.setenv(variable, f"sk-fine,{key}" if variable.endswith("KEYS") else key)
    with pytest.raises(ConfigError, match=rf"{field} .*other than printable ASCII") as info:
        load_settings(None)
    assert key not in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("gate: 0.3\n", "must be a mapping ('key: value' lines), got float"),
        ("- gate\n- x\n", "the file must be a mapping of settings ('key: value' lines), got list"),
    ],
)
def test_a_settings_file_of_the_wrong_shape_is_said_plainly(
    tmp_path: Path, text: str, problem: str
) -> None:
    """A section given as a number, or a file that is a list: the error says what shape is
    wanted, not pydantic's "instance of GateSettings" or dict()'s "update sequence"."""
    config = tmp_path / "gk.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert problem in str(info.value)
    assert "instance of" not in str(info.value) and "update sequence" not in str(info.value)


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    """A bad value gives a ConfigError naming the field and the file."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: high\n")
    with pytest.raises(ConfigError, match=r"gate\.threshold") as info:
        load_settings(config)
    assert str(config) in str(info.value)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    """A typo in a settings key is an error, not silently ignored."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  treshold: 0.4\n")
    with pytest.raises(ConfigError, match="treshold"):
        load_settings(config)


def test_missing_settings_file() -> None:
    """Naming a settings file that does not exist is a ConfigError."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Path("/nonexistent/gk.yaml"))


def test_a_settings_path_may_be_a_string(tmp_path: Path) -> None:
    """load_settings("path.yaml") reads the file as a Path would (it raised AttributeError)."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: 0.42\n  allow_uncalibrated: true\n")
    assert load_settings(str(config)).gate.threshold == 0.42
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/gk.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    """A settings file that is not YAML is a ConfigError."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate: [unclosed\n")
    with pytest.raises(ConfigError):
        load_settings(config)


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env file in the working directory sets GATEKEEPER_* values."""
    (tmp_path / ".env").write_text("GATEKEEPER_GATE__THRESHOLD=0.61\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(None).gate.threshold == pytest.approx(0.61)


def test_dotenv_with_other_tools_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables of other tools in .env are ignored, not an error."""
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-x\nGATEKEEPER_GATE__THRESHOLD=0.4\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(None).gate.threshold == pytest.approx(0.4)


@pytest.mark.parametrize("url", ["http://[::1", "ftp://host/v1", "not a url", "http://h:99999"])
def test_bad_upstream_url_is_refused(url: str) -> None:
    """An upstream base_url that is not an http(s) URL is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"upstream\.base_url"):
        load_settings(None, upstream={"base_url": url})


def test_bundled_files_are_found_under_the_install_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a clone, bundled files are found where a wheel installs them."""
    import sys

    from gatekeeper.settings import project_path

    installed = tmp_path / "share" / "gatekeeper" / "configs" / "intents" / "zz_only_here.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text("intents: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert project_path(Path("configs/intents/zz_only_here.yaml")) == installed


def test_settings_built_in_code_raise_config_error() -> None:
    """Settings(...) with a bad value raises ConfigError naming the field and the fix, like
    load_settings (it raised pydantic's ValidationError, which the documented error table does
    not know)."""
    from gatekeeper.errors import ConfigError
    from gatekeeper.settings import Settings

    with pytest.raises(ConfigError, match=r"upstream\.base_url \(given as an option\)"):
        Settings(upstream={"base_url": "not a url"})
    with pytest.raises(ConfigError, match=r"did you mean 'threshold'"):
        Settings(gate={"treshold": 0.3})


def test_store_settings_can_be_given_to_from_settings(tmp_path: Path) -> None:
    """Gatekeeper.from_settings(store={...}) takes store settings like any other override (it
    failed later with AttributeError: 'dict' object has no attribute 'info')."""
    from gatekeeper.gate import Gatekeeper

    gate = Gatekeeper.from_settings(data_dir=tmp_path, store={"auto_sync": False, "top_k": 7})
    assert gate.settings.store.auto_sync is False and gate.settings.store.top_k == 7


@pytest.mark.parametrize("section", ["UPSTREAM", "EMBEDDING"])
def test_a_url_with_credentials_is_refused_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, section: str
) -> None:
    """A base URL with user:password@ is a settings error (every forwarded request failed on
    it, and the URL reached logs); neither error shows the password."""
    monkeypatch.setenv(f"GATEKEEPER_{section}__BASE_URL", "http://bob:PW-SECRET@127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="holds credentials") as caught:
        load_settings(None)
    assert "PW-SECRET" not in str(caught.value)
    monkeypatch.setenv(f"GATEKEEPER_{section}__BASE_URL", "ftp://bob:PW-SECRET@host/v1")
    with pytest.raises(ConfigError, match="not an http") as caught:
        load_settings(None)
    assert "PW-SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("given", "level"), [("debug", "DEBUG"), (" Info ", "INFO"), ("warn", "WARNING")]
)
def test_log_level_is_taken_in_any_case(
    monkeypatch: pytest.MonkeyPatch, given: str, level: str
) -> None:
    """GATEKEEPER_LOGGING__LEVEL=debug (or warn) is the level every logging library means."""
    monkeypatch.setenv("GATEKEEPER_LOGGING__LEVEL", given)
    assert load_settings(None).logging.level == level


def test_an_unknown_log_level_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A level no logger has is a settings error naming the field."""
    monkeypatch.setenv("GATEKEEPER_LOGGING__LEVEL", "verbose")
    with pytest.raises(ConfigError, match=r"logging\.level"):
        load_settings(None)


def test_an_empty_key_among_server_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty key among others (a stray "" in a JSON list) is a settings error: no client
    can send it."""
    monkeypatch.setenv("GATEKEEPER_SERVER__API_KEYS", '["k1", ""]')
    with pytest.raises(ConfigError, match="holds an empty key"):
        load_settings(None)
