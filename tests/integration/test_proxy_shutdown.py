"""The proxy's graceful shutdown on loopback (uvicorn, real sockets): what is still waiting on the
upstream when the grace period is about to end is answered by the proxy, not cut by uvicorn."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.testing import LoopbackServer
from tests.support.loopback import proxy_settings
from tests.support.proxy import ORDER

GRACE = 2  # seconds: the proxy ends what is left 1 s before uvicorn would cancel it


class StallingUpstream:
    """A chat endpoint that answers a stream's first event (or, not streamed, nothing) and then
    waits until released; it records whether the proxy closed the stream it was sending."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.closed = threading.Event()
        self.server = LoopbackServer(self._app())

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response, StreamingResponse
        from starlette.routing import Route

        async def wait_for_release() -> None:
            await anyio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
                self.started.set()
                await wait_for_release()
                yield b"data: [DONE]\n\n"
            finally:
                self.closed.set()

        async def chat(request: Request) -> Response:
            body = json.loads(await request.body())
            if body.get("stream"):
                return StreamingResponse(events(), media_type="text/event-stream")
            self.started.set()
            await wait_for_release()
            return Response(b"{}", media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
def stalling() -> Iterator[StallingUpstream]:
    upstream = StallingUpstream()
    upstream.server.start()
    yield upstream
    upstream.release.set()
    upstream.server.stop()


def start_proxy(gate: Gatekeeper, upstream: StallingUpstream) -> LoopbackServer:
    settings = proxy_settings(gate, f"{upstream.server.url}/v1", timeout=60.0)
    app = create_app(settings, gate=gate)
    return LoopbackServer(app, graceful_shutdown_seconds=GRACE).start()


def stream_lines(url: str) -> list[str]:
    body = {"model": "m", "stream": True, "messages": ORDER}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as answer:
        assert answer.status_code == 200
        return [line for line in answer.iter_lines() if line]


def test_a_stream_running_at_the_end_of_the_grace_period_ends_with_an_error_event(
    gate: Gatekeeper, stalling: StallingUpstream
) -> None:
    """A stream still running when the shutdown's grace period is about to end is ended by the
    proxy: a server_shutting_down SSE error event, then a whole (not cut) stream; the upstream
    stream is closed and the request logged as 503 server_shutting_down."""
    server = start_proxy(gate, stalling)
    with capture_logs() as logs, ThreadPoolExecutor(1) as pool:
        lines = pool.submit(stream_lines, server.url)
        assert stalling.started.wait(10)
        server.stop()  # as SIGTERM: uvicorn's graceful shutdown
        received = lines.result(timeout=10)  # no RemoteProtocolError: the stream was ended
    assert received[0].startswith('data: {"choices"')
    error = json.loads(received[-1].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down"
    assert stalling.closed.wait(5)
    [request] = [entry for entry in logs if entry["event"] == "http.request"]
    assert request["status"] == 503 and request["ended"] == "server_shutting_down"


def test_a_request_waiting_on_the_upstream_at_the_end_of_the_grace_period_is_a_503(
    gate: Gatekeeper, stalling: StallingUpstream
) -> None:
    """A request with no answer yet when the grace period is about to end gets the proxy's 503
    server_shutting_down, with the gate's x-gatekeeper-* headers (the gate had decided)."""
    server = start_proxy(gate, stalling)
    body = {"model": "m", "messages": ORDER}
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, f"{server.url}/v1/chat/completions", json=body, timeout=30)
        assert stalling.started.wait(10)
        server.stop()
        response = answer.result(timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert response.headers["x-gatekeeper-route"] == "llm"
