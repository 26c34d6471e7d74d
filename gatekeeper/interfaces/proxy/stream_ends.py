"""How an upstream's SSE stream must end, by API: chat completions with ``data: [DONE]``, the
Responses API with a terminal event. :func:`~gatekeeper.interfaces.proxy.upstream.relay` feeds
these the stream as it passes, and ends a stream that stopped short with an SSE error event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from gatekeeper.interfaces.proxy.errors import Json


class StreamEnd(Protocol):
    """Watches an SSE stream go by and tells whether it ended as such a stream must end."""

    missing: str  # what a cut stream lacks, for the error event

    def feed(self, chunk: bytes) -> None: ...

    def complete(self) -> bool: ...


class DoneEnd:
    """A chat completion stream ends with ``data: [DONE]``."""

    missing = "its final [DONE] event"
    _TAIL = 64

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-self._TAIL :]

    def complete(self) -> bool:
        last = _lf(self._tail).rstrip().rsplit(b"\n", 1)[-1].strip()
        return last in (b"data: [DONE]", b"data:[DONE]")


class ResponseEnd:
    """A Responses API stream ends with a terminal event: ``response.completed`` (or
    ``response.incomplete``, ``response.failed``, ``error``: the upstream's own account of a
    failure, passed on as it is). Only the last event is kept (and parsed, at the end)."""

    missing = "its final response.completed event"
    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

    def __init__(self) -> None:
        self._pending = b""  # the event being received, its line ends LF (see _lf)
        self._last = b""  # the last complete event

    def feed(self, chunk: bytes) -> None:
        self._pending = _lf(self._pending + chunk)
        self._last, self._pending = _split_events(self._pending, self._last)

    def complete(self) -> bool:
        return _event_type(self._final()) in self.TERMINAL

    def response(self) -> Json | None:
        """The ``response`` object of a stream that ended with ``response.completed``."""
        final = self._final()
        if _event_type(final) != "response.completed":
            return None
        event = json_object(_sse_fields(final)[1] or b"")
        response = event.get("response") if event is not None else None
        return response if isinstance(response, dict) else None

    def _final(self) -> bytes:
        """The last event: the one being received when it is whole but for its blank line
        (its data JSON), else the last complete one."""
        ended = self._pending[:-1] + b"\n" if self._pending.endswith(b"\r") else self._pending
        last, pending = _split_events(ended, self._last)  # at the end, a last CR is a line end
        pending = pending.strip()
        data = _sse_fields(pending)[1]
        whole = data is not None and json_object(data) is not None
        return pending if whole else last


def _split_events(text: bytes, last: bytes) -> tuple[bytes, bytes]:
    """The last complete event with data in ``text`` (line ends LF; ``last`` when it has
    none) and what follows the last blank line."""
    if b"\n\n" not in text:
        return last, text
    complete, _, rest = text.rpartition(b"\n\n")
    for event in reversed(complete.split(b"\n\n")):
        if _event_type(event) is not None:
            return event, rest
    return last, rest


def _lf(data: bytes) -> bytes:
    """``data`` with SSE's three line ends (CRLF, CR, LF) as LF; a last CR is kept as it is,
    as it may be the first half of a CRLF."""
    held = data.endswith(b"\r")
    body = (data[:-1] if held else data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body + b"\r" if held else body


def _sse_fields(event: bytes) -> tuple[str | None, bytes | None]:
    """An SSE event's ``event:`` field and its ``data:`` lines joined (None when absent)."""
    name, data = None, []
    for line in event.split(b"\n"):
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            name = value.decode("utf-8", "replace").strip()
        elif field == b"data":
            data.append(value)
    return name, b"\n".join(data) if data else None


def _event_type(event: bytes) -> str | None:
    """An SSE event's type: its ``event:`` field, else its data's ``type``; None for an event
    without data (comments, keep-alives)."""
    name, data = _sse_fields(event)
    if data is None:
        return None
    if name:
        return name
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else ""


STREAM_ENDS: dict[str, Callable[[], StreamEnd]] = {
    "chat/completions": DoneEnd,
    "responses": ResponseEnd,
}


def json_object(content: bytes) -> Json | None:
    """``content`` parsed, when it is a JSON object; else None."""
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
