"""Logging with structlog: JSON lines in production, a readable console in development.

Called once at the edge (CLI, server); the library only asks for a logger. Every decision is one
``gate.decided`` event with route, intent, score, threshold and latency, and an id of the
message (a hash) instead of its text, unless ``logging.log_text`` is on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Protocol

import structlog

from gatekeeper.settings import LoggingSettings

_SECRET_KEYS = frozenset({"api_key", "authorization", "password", "token"})


def message_id(text: str, key: bytes) -> str:
    """A short id of a message: joins logs, headers and reports without holding the text.

    Keyed (HMAC-SHA256), so a short message ("yes", an order number) cannot be recovered by
    hashing guesses; the same key gives the same id, across processes and replicas.
    """
    digest = hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return digest.hexdigest()[:16]


def drop_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: never log a value under a secret-looking key."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def configure_logging(
    settings: LoggingSettings, *, stream: Any = None, readable_hints: bool = False
) -> None:
    """Configure structlog, and the stdlib root logger through the same renderer, for this
    process: uvicorn's, Chroma's and httpx's records come out as the same JSON lines (or
    console lines) as gatekeeper's own, with ``logger`` naming their source. JSON lines carry
    the ``pid``: several serving processes share one stderr. ``readable_hints``, for a command
    a person runs (not a server): see :func:`hints_as_lines`."""
    stream = stream or sys.stderr
    fmt = log_format(settings, stream)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    stamped: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_secrets,
    ]
    if fmt == "json":
        stamped.append(add_pid)
    level = getattr(logging, settings.level)
    structlog.configure(
        processors=[
            *([hints_as_lines(stream)] if readable_hints else []),
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line: lines of several serving processes sharing stderr never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)  # also one write per line
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=max(level, logging.WARNING), handlers=[handler], force=True)


def log_format(settings: LoggingSettings, stream: Any = None) -> str:
    """``json`` or ``console``: the format lines written on ``stream`` (stderr) come in, with
    ``auto`` read as ``console`` on a terminal, else ``json``."""
    if settings.format != "auto":
        return settings.format
    stream = stream or sys.stderr
    return "console" if getattr(stream, "isatty", lambda: False)() else "json"


def hints_as_lines(stream: Any) -> Any:
    """A structlog processor for a command a person runs: a warning that carries a ``hint``
    (advice, e.g. ``gate.calibration_stale``'s command to run) is written on ``stream`` as one
    readable ``warning: <hint>`` line, as the command's other warnings are, instead of a log
    line (a JSON object, when stderr is no terminal)."""

    def processor(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        hint = event_dict.get("hint")
        if method != "warning" or not isinstance(hint, str):
            return event_dict
        stream.write(f"warning: {hint}\n")
        stream.flush()
        raise structlog.DropEvent

    return processor


def add_pid(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the process id, to tell serving processes apart."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


class Logger(Protocol):
    """What the library logs with: an event name and key-value fields (structlog style)."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


class _LibraryLogger:
    """A logger that is polite as a library: structlog's when the application configured
    structlog (the CLI and server do, tests capture), else the stdlib ``logging`` logger, which
    prints nothing below WARNING unless the application set logging up. Never stdout."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _target(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(self._name)
        return structlog.wrap_logger(
            logging.getLogger(self._name),
            processors=[drop_secrets, structlog.processors.KeyValueRenderer(key_order=["event"])],
            wrapper_class=structlog.stdlib.BoundLogger,
        )

    def debug(self, event: str, **fields: Any) -> Any:
        return self._target().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> Any:
        return self._target().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> Any:
        return self._target().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> Any:
        return self._target().error(event, **fields)


def get_logger(name: str = "gatekeeper") -> Logger:
    """The library's logger (see :class:`_LibraryLogger`)."""
    return _LibraryLogger(name)
