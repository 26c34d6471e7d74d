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


def test_stdlib_records_are_the_same_json_lines() -> None:
    """A third-party stdlib record (uvicorn's, Chroma's) comes out as a JSON line with level,
    timestamp, logger and pid, like gatekeeper's own events, secrets dropped."""
    import logging
    import os

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(LoggingSettings(), stream=stream)
    try:
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("chromadb").info("below the level: not written")
        get_logger().info("gate.decided", route="llm")
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, level
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "Invalid HTTP request received."
    expected = ("warning", "uvicorn.error", os.getpid())
    assert (first["level"], first["logger"], first["pid"]) == expected
    assert "timestamp" in first
    assert second["event"] == "gate.decided" and second["pid"] == os.getpid()


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
