"""The proxy under test, in-process: its settings, the app with its lifespan running in front of
a :class:`~tests.support.fake_upstream.FakeUpstream`, a client that talks to it through
``httpx.ASGITransport`` (no sockets), and raw ASGI calls (no client-side path normalisation).

The fixtures built on it (``gate``, ``upstream``, ``client``, ``keyed``) are in
``tests/unit/conftest.py``; the proxy on loopback is :mod:`tests.support.loopback`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import openai
from fastapi import FastAPI
from pydantic import SecretStr
from structlog.testing import capture_logs

from gatekeeper.errors import StoreUnavailableError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import Settings, UpstreamSettings
from tests.support.fake_upstream import FakeUpstream

UPSTREAM = "http://upstream.test/v1"
CLIENT_KEY = "sk-client-0001"
ORDER = [{"role": "user", "content": "where is my order"}]
JOKE = [{"role": "user", "content": "tell me a joke"}]
#: The off-topic reply of :func:`gatekeeper.testing.tiny_catalog`.
OFF_TOPIC_REPLY = "Sorry, I only help with orders."


def with_upstream(
    settings: Settings,
    upstream: UpstreamSettings,
    *,
    gate: dict[str, Any] | None = None,
    **server: Any,
) -> Settings:
    """``settings`` with ``upstream``, and the ``server`` (and ``gate``) settings given changed."""
    update: dict[str, Any] = {
        "upstream": upstream,
        "server": settings.server.model_copy(update=server),
    }
    if gate is not None:
        update["gate"] = settings.gate.model_copy(update=gate)
    return settings.model_copy(update=update)


def proxy_settings(
    gate: Gatekeeper, *, upstream_key: str = "sk-upstream-key", **server: Any
) -> Settings:
    """The gate's settings with the fake upstream and the ``server`` settings given."""
    upstream = UpstreamSettings(
        base_url=UPSTREAM, api_key=SecretStr(upstream_key), timeout=5, max_retries=0
    )
    return with_upstream(gate.settings, upstream, **server)


@asynccontextmanager
async def running_app(
    gate: Gatekeeper, upstream: FakeUpstream, **options: Any
) -> AsyncIterator[FastAPI]:
    """The app in front of ``upstream`` with its lifespan running (``options``: of
    :func:`proxy_settings`)."""
    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    app = create_app(proxy_settings(gate, **options), gate=gate, upstream_client=upstream_client)
    async with app.router.lifespan_context(app):
        yield app
    await upstream_client.aclose()


@asynccontextmanager
async def serving(
    gate: Gatekeeper, upstream: FakeUpstream, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (``options``: of :func:`proxy_settings`); a client
    that talks to it in-process."""
    async with running_app(gate, upstream, **options) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    """The official client, talking to the app in-process."""
    return openai.AsyncOpenAI(
        base_url="http://localhost/v1", api_key="unused", http_client=client, max_retries=0
    )


# -- raw ASGI -------------------------------------------------------------------------------------


def http_scope(
    method: str, path: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The ASGI scope of an HTTP/1.1 request from 127.0.0.1 (no query string)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def request_messages(body_parts: list[bytes], *, disconnect: bool) -> list[dict[str, Any]]:
    """The ASGI messages of a request body sent in ``body_parts``, then its end or, with
    ``disconnect``, the client gone."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": True} for part in body_parts
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    else:
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    return messages


async def call_asgi(
    app: Any,
    body_parts: list[bytes],
    *,
    disconnect: bool,
    raw_path: bytes = b"/v1/chat/completions",
) -> list[dict[str, Any]]:
    """Drive the app with raw ASGI messages (no client-side path normalisation):
    ``body_parts`` POSTed to ``raw_path``, then (maybe) a disconnect; what the app sent."""

    messages = request_messages(body_parts, disconnect=disconnect)
    sent: list[dict[str, Any]] = []
    answered = anyio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await answered.wait()  # as a server does: the client is gone once the answer is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
    scope = http_scope("POST", unquote(raw_path.decode()), raw_path, headers)
    await app(scope, receive, send)
    return sent


async def raw_call(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    raw_path: bytes,
    body_parts: list[bytes],
    *,
    disconnect: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drive the app with raw ASGI messages (no client-side path normalisation); the messages
    it sent and its log events."""
    async with running_app(gate, upstream) as app:
        with capture_logs() as logs:
            sent = await call_asgi(app, body_parts, disconnect=disconnect, raw_path=raw_path)
    return sent, logs


def status_of(sent: list[dict[str, Any]]) -> int:
    """The status of the answer in the ASGI messages ``sent``."""
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    return int(start["status"])


class SwitchedChroma:
    """A Chroma server that is down until :attr:`up` is set, then serves ``indexed``'s store:
    a :class:`~gatekeeper.chroma_client.LazyClient` whose opener fails until then."""

    def __init__(self, indexed: Gatekeeper, *, retry_seconds: float) -> None:
        from gatekeeper.chroma_client import LazyClient

        self.up = False
        self._indexed = indexed
        self.client = LazyClient(self._open, retry_seconds=retry_seconds)

    def _open(self) -> Any:
        if not self.up:
            raise StoreUnavailableError("Chroma is unreachable: connection refused")
        return self._indexed.store._client

    def gate(self, settings: Settings) -> Gatekeeper:
        """A hashing gate on ``settings`` whose store is ``indexed``'s, behind this Chroma."""
        from gatekeeper.store import ExemplarStore
        from gatekeeper.testing import HashingEmbedder, tiny_catalog

        store = ExemplarStore(self.client, self._indexed.store.name)
        return Gatekeeper.from_settings(
            settings, catalog=tiny_catalog(), embedder=HashingEmbedder(), store=store
        )
