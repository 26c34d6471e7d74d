"""gatekeeper.testing's make_gate: a test's gate, isolated from the developer's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.decision import Route
from gatekeeper.errors import ConfigError, StoreUnavailableError
from gatekeeper.testing import make_gate

#: Settings that would change every decision of a gate that read them.
_LEAKY = {
    "GATEKEEPER_GATE__SHADOW": "true",
    "GATEKEEPER_GATE__THRESHOLD": "0.99",
    "GATEKEEPER_STORE__HOST": "127.0.0.1",
    "GATEKEEPER_STORE__PORT": "9",
}


def _decisions(data_dir: Path) -> list[tuple[Route, bool, str | None]]:
    gate = make_gate(data_dir)
    checked = [gate.check(m) for m in ("where is my order", "tell me a joke please", "hello")]
    return [(d.route, d.shadow, d.gate_error) for d in checked]


EXPECTED = [(Route.LLM, False, None), (Route.OFF_TOPIC, False, None), (Route.CANNED, False, None)]


def test_make_gate_ignores_gatekeeper_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GATEKEEPER_* variables do not reach make_gate's settings (shadow mode leaked into its
    decisions, and a store host made it try a Chroma server and fail open on every message)."""
    for name, value in _LEAKY.items():
        monkeypatch.setenv(name, value)
    assert _decisions(tmp_path / "data") == EXPECTED


def test_make_gate_ignores_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env in the working directory does not reach make_gate's settings."""
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in _LEAKY.items()))
    monkeypatch.chdir(tmp_path)
    assert _decisions(tmp_path / "data") == EXPECTED


def test_make_gate_raises_gate_failures_by_default(tmp_path: Path) -> None:
    """A test gate that cannot decide raises (it failed open: every message 'llm', silently);
    on_error chooses a policy, and gate.on_error in the overrides does too."""
    down = {"host": "127.0.0.1", "port": 9}
    with pytest.raises(StoreUnavailableError):
        make_gate(tmp_path, store=down).check("tell me a joke")
    opened = make_gate(tmp_path, store=down, on_error="fail_open").check("tell me a joke")
    assert (opened.route, opened.gate_error) == (Route.LLM, "StoreUnavailableError")
    closed = make_gate(tmp_path, store=down, gate={"on_error": "fail_closed"})
    assert closed.settings.gate.on_error == "fail_closed"
    assert closed.check("tell me a joke").route is Route.OFF_TOPIC
    with pytest.raises(StoreUnavailableError):
        closed.check("tell me a joke", on_error="raise")


def test_make_gate_settings_errors_are_config_errors(tmp_path: Path) -> None:
    """A bad override is a ConfigError naming the field, as from Settings itself."""
    with pytest.raises(ConfigError, match=r"gate\.threshold"):
        make_gate(tmp_path, gate={"threshold": "high"})
