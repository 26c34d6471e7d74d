"""The README's Python examples run as written (against loopback servers, not the internet)."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import load_settings
from gatekeeper.testing import LoopbackServer, RecordingUpstream
from tests.conftest import REPO

pytestmark = pytest.mark.integration

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def _block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"one README python block should contain {marker!r}"
    return textwrap.dedent(found[0])  # a block inside a list item is indented


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    return out.getvalue()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for the examples' default gate."""
    monkeypatch.setenv("GATEKEEPER_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


def test_python_api_example(isolated: Path) -> None:
    """The 'Use it from Python' example prints a route for PayPal."""
    out = _run(_block("gate.check_many"))
    assert out.startswith("llm payment_methods")


def test_lifespan_example(isolated: Path) -> None:
    """The FastAPI lifespan example has the gate ready (model loaded, index built) when the
    app starts, before any request."""
    from fastapi.testclient import TestClient

    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(_block("aready()"), "README.md", "exec"), namespace)
    app = namespace["app"]
    with TestClient(app):
        ready = app.state.gate._ready  # what ready() keeps once the model and index are there
        assert ready is not None and ready.count > 0


def test_testing_example(tmp_path: Path) -> None:
    """The 'Testing your app' example passes as a test file of its own, under pytest, with
    a GATEKEEPER_* variable that must not reach make_gate set."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_example.py").write_text(_block("make_gate("), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEKEEPER_GATE__SHADOW": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_logging_example(isolated: Path) -> None:
    """The logging example makes a library gate write one JSON `gate.decided` line per
    decision to stderr, without the customer's text (it logged nothing)."""
    import logging

    import structlog

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _run(_block("gate.check_many") + _block("configure_logging(gate.settings.logging)"))
            _run(_block("gate.check_many").replace("can I pay with PayPal?", "where is my parcel"))
    finally:
        structlog.reset_defaults()
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    decided = [line for line in err.getvalue().splitlines() if '"gate.decided"' in line]
    assert decided and all(line.startswith("{") for line in decided)
    assert "PayPal" not in err.getvalue() and "parcel" not in err.getvalue()


def test_wrapper_example(isolated: Path) -> None:
    """The wrapper example answers the parcel question, refuses the poem, cans the thanks."""
    lines = _run(_block('invoke_with_decision("thanks!")')).splitlines()
    assert lines[0].startswith("(the LLM answers")
    assert "Sorry" in lines[1]
    assert lines[2] == "canned False"


def _through_proxy(isolated: Path, upstream: RecordingUpstream, block: str) -> list[str]:
    """The README's code block containing ``block`` run against a real proxy on loopback (the
    README's client key, the recording upstream behind it): its output lines."""
    settings = load_settings(
        None,
        data_dir=isolated / "data",
        upstream={"base_url": upstream.base_url, "api_key": "sk-upstream"},
        server={"api_keys": "sk-shop-bot-1"},
    )
    with LoopbackServer(create_app(settings)) as proxy:
        code = _block(block).replace("127.0.0.1:8080", f"127.0.0.1:{proxy.port}")
        return _run(code).splitlines()


def test_proxy_example(isolated: Path, upstream: RecordingUpstream) -> None:
    """The proxy example prints llm for the parcel and off_topic for the match."""
    lines = _through_proxy(isolated, upstream, 'for text in ["where is my parcel?"')
    assert lines[0].startswith("llm ->")
    assert lines[1].startswith("off_topic -> Sorry")
    assert len(upstream.calls) == 1


def test_tool_calling_example(isolated: Path, upstream: RecordingUpstream) -> None:
    """The tool-calling example checks the route before tool_calls: the refused match question
    (tool_choice required) is a text answer with finish_reason stop, no LLM call."""
    lines = _through_proxy(isolated, upstream, 'tool_choice="required"')
    assert len(lines) == 1 and lines[0].startswith("stop -> Sorry")
    assert upstream.calls == []


def test_langchain_example(
    isolated: Path, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LCEL example, the gate in front of a prompt that adds context: it refuses the poem
    without an LLM call (behind the prompt, the context made it in-domain) and forwards the
    parcel question, filled into the prompt."""
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = _run(_block("StrOutputParser()"))
    assert out.startswith("Sorry")
    (call,) = upstream.calls
    sent = call["messages"][-1]["content"]
    assert sent.startswith("Context: Orders ship") and sent.endswith("I ordered last week")
    assert sent in out  # the upstream's echo, printed


def test_langchain_messages_example(
    isolated: Path, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-chat example (no RunnableWithMessageHistory): the name answering the
    assistant goes on, the poem is refused, and the next question reaches the model without
    the poem and its refusal."""
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert _run(_block('input_key="messages"')).split() == ["llm", "off_topic", "llm"]
    assert len(upstream.calls) == 2
    last = [m["content"] for m in upstream.calls[1]["messages"]]
    assert last[-1] == "can I still change the delivery address?"
    assert not any("poem" in text or "Sorry" in text for text in last)


def test_langchain_history_example(
    isolated: Path, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history_key example forwards the name answering the assistant's question."""
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert _run(_block('history_key="history"')).strip() == "llm"
    assert len(upstream.calls) == 1
