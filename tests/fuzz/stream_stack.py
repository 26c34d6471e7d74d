"""The stack the stream fuzz tests run against: the proxy served by uvicorn on loopback (its
own pooled upstream client) in front of a :class:`ScriptedUpstream`, and the checks every
streamed answer must pass: SSE that ends as its kind of stream must end, or with an error event;
an error status that is a JSON error; no exception in the server."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import UpstreamSettings
from gatekeeper.testing import LoopbackServer, make_gate
from tests.fuzz.scripted_upstream import Script, ScriptedUpstream
from tests.support.proxy import with_upstream

#: The stream fuzz tests' hypothesis profile. Each example is a few requests over real sockets,
#: so the default count (``GATEKEEPER_FUZZ_EXAMPLES``) is below the in-process fuzz tests'.
FUZZ = settings(
    max_examples=int(os.environ.get("GATEKEEPER_FUZZ_EXAMPLES", "30")),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

CLIENT_KEY = "sk-stream-fuzz"
OFF_TOPIC_REPLY = "Sorry, I only help with orders."
GREETING_REPLY = "Hello! How can I help?"
LOCAL_REPLIES = (OFF_TOPIC_REPLY, GREETING_REPLY)
#: The terminal event types of a Responses API stream.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class ServerErrors(logging.Handler):
    """Collects ERROR records of the server's loggers (an exception escaped to uvicorn)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        """The messages collected since the last call."""
        taken = [f"{r.getMessage()} {r.exc_info!r}" for r in self.records]
        self.records.clear()
        return taken


class Stack:
    """The proxy, its scripted upstream and what the tests learnt along the way (a plain
    class: hypothesis reports it by its short ``repr``)."""

    def __init__(self, proxy: LoopbackServer, upstream: ScriptedUpstream, errors: ServerErrors):
        self.proxy, self.upstream, self.errors = proxy, upstream, errors
        self.ids: list[str] = []  # response ids the proxy has answered with

    def __repr__(self) -> str:
        return f"Stack({self.proxy.url} -> {self.upstream.base_url})"

    @property
    def base_url(self) -> str:
        return f"{self.proxy.url}/v1"

    def post(self, path: str, body: bytes, script: Script) -> httpx.Response:
        """POST ``body`` to the proxy with ``script`` upstream; the answer read whole (a broken
        answer raises)."""
        self.upstream.script = script
        headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
        return httpx.post(f"{self.base_url}/{path}", content=body, headers=headers, timeout=30)

    def assert_alive(self) -> None:
        """The server answers and no exception reached it."""
        assert httpx.get(f"{self.proxy.url}/healthz", timeout=10).status_code == 200
        assert self.errors.take() == []


@contextmanager
def running_stack(data_dir: Path) -> Iterator[Stack]:
    """The tiny gate's proxy in front of a scripted upstream, both on loopback."""
    gate = make_gate(data_dir)
    gate.index()
    errors = ServerErrors()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn", "asyncio")]
    for logger in loggers:
        logger.addHandler(errors)
    with ScriptedUpstream() as upstream:
        settings = with_upstream(
            gate.settings,
            UpstreamSettings(base_url=upstream.base_url, max_retries=0, timeout=10),
            api_keys=[SecretStr(CLIENT_KEY)],
        )
        with LoopbackServer(create_app(settings, gate=gate)) as proxy:
            try:
                yield Stack(proxy, upstream, errors)
            finally:
                for logger in loggers:
                    logger.removeHandler(errors)


# -- reading SSE as a client does (WHATWG's event stream parsing) --------------------------------


@dataclass(frozen=True)
class Event:
    event: str | None
    data: str


def sse_events(body: bytes) -> list[Event]:
    """The events a client dispatches from ``body`` (a last event without its blank line is
    dropped, as a client drops it)."""
    events, name, data = [], None, []
    for line in re.split(r"\r\n|\r|\n", body.decode("utf-8", "replace"))[:-1]:
        if not line:
            if data:
                events.append(Event(name, "\n".join(data)))
            name, data = None, []
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    return events


def json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_error_event(event: Event) -> bool:
    """The proxy's (or an upstream's) ``data: {"error": {...}}`` event."""
    data = json_object(event.data)
    return data is not None and isinstance(data.get("error"), dict)


def ended_well(path: str, events: list[Event]) -> bool:
    """Whether a stream's last event ends it as a ``path`` stream must end."""
    if not events:
        return False
    last = events[-1]
    if path == "chat/completions":
        return last.data == "[DONE]"
    data = json_object(last.data) or {}
    return (last.event or data.get("type")) in TERMINAL


def check_answer(path: str, answer: httpx.Response) -> list[Event]:
    """The checks every answer of the proxy passes: a 5xx is an upstream's fault's 502/504
    with a JSON error; a successful event stream ends well or with an error event. Its
    events."""
    if answer.status_code >= 500:
        assert answer.status_code in (502, 504), answer.status_code
        assert isinstance((json_object(answer.text) or {}).get("error"), dict), answer.text
        return []
    sse = answer.headers.get("content-type", "").startswith("text/event-stream")
    if not sse or not answer.is_success:  # an upstream's 4xx passes as it came
        return []
    events = sse_events(answer.content)
    assert ended_well(path, events) or (events and is_error_event(events[-1])), answer.content
    return events
