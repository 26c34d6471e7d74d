"""Logging: JSON lines in production, secrets never rendered."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from gatekeeper.gate import Gatekeeper
from gatekeeper.logging import configure_logging, get_logger, message_id
from gatekeeper.settings import LoggingSettings


def test_json_lines_when_not_a_terminal() -> None:
    """With format auto and a non-terminal stream, each event is one JSON line."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(), stream=stream)
    try:
        get_logger().info("gate.decided", route="llm", api_key="sk-secret")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "gate.decided" and line["route"] == "llm"
    assert line["api_key"] == "***"
    assert "sk-secret" not in stream.getvalue()


def test_message_id_is_stable_and_not_the_text() -> None:
    """The message id is a keyed hash: stable for one key, differs across keys, not the text."""
    key = b"k" * 32
    assert message_id("hello", key) == message_id("hello", key)
    assert message_id("hello", key) != message_id("hello!", key)
    assert message_id("hello", key) != message_id("hello", b"other key")
    assert "hello" not in message_id("hello", key)


def test_unconfigured_library_prints_nothing_to_stdout(
    tiny_gate: Gatekeeper, capsys: pytest.CaptureFixture[str]
) -> None:
    """Used as a library without logging set up, the gate writes nothing to stdout."""
    structlog.reset_defaults()
    capsys.readouterr()
    tiny_gate.check("where is my order")
    assert capsys.readouterr().out == ""
