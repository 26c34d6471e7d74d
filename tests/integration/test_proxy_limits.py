"""What the proxy takes from a hostile or broken peer, for real (uvicorn on loopback): an
upstream sending an endless error body, clients that send their body slowly, and connections
left idle."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from structlog.testing import capture_logs

from gatekeeper.interfaces.proxy.runner import KEEP_ALIVE_SECONDS
from gatekeeper.interfaces.proxy.upstream import MAX_ERROR_BYTES
from gatekeeper.testing import LoopbackServer, RecordingUpstream
from tests.support.loopback import StartProxy, client_for
from tests.support.proxy import ORDER

pytestmark = pytest.mark.integration

#: What the endless upstream offers: far more than the proxy may read.
ENDLESS = 256 * 1024 * 1024


class EndlessErrors:
    """An upstream on a plain socket (so what it counts is what the kernel took) answering
    every request with ``status`` and a chunked error body that goes on, up to :data:`ENDLESS`
    bytes, for as long as the reader takes it; :attr:`sent` counts the body bytes sent."""

    def __init__(self) -> None:
        self.status = 400
        self.sent = 0
        self.ended = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        self.sent = 0
        self.ended.clear()
        received = b""
        while b"\r\n\r\n" not in received:
            received += connection.recv(65_536) or b"\r\n\r\n"  # closed: answer anyway
        head, _, body = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            body += connection.recv(65_536) or b"-" * int(length.group(1))
        chunk = b"x" * 65_536
        try:
            connection.sendall(
                b"HTTP/1.1 %d Oops\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n\r\n" % self.status
            )
            while self.sent < ENDLESS:
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.sent += len(chunk)
        except OSError:  # the proxy closed the connection
            pass
        finally:
            self.ended.set()


@pytest.fixture
def endless() -> Iterator[EndlessErrors]:
    """An :class:`EndlessErrors` upstream, closed after the test."""
    upstream = EndlessErrors()
    yield upstream
    upstream.close()


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, openai.BadRequestError, 400),
        (429, openai.RateLimitError, 429),
        (503, openai.InternalServerError, 502),
    ],
)
def test_an_endless_upstream_error_body_is_not_read_whole(
    start_proxy: StartProxy,
    endless: EndlessErrors,
    status: int,
    error: type[openai.APIStatusError],
    code: int,
) -> None:
    """An upstream error whose body never ends is read up to MAX_ERROR_BYTES and closed: the
    client gets the upstream's 4xx (the openai client's error class for it) or a 502 for a 5xx,
    with the proxy's error JSON, and the upstream could send only about that much."""
    upstream = endless
    upstream.status = status
    proxy = start_proxy(base_url=upstream.base_url)
    with pytest.raises(error) as raised:
        client_for(proxy).chat.completions.create(model="m", messages=ORDER)  # type: ignore[arg-type]
    assert upstream.ended.wait(10), "the upstream's answer was left open"
    assert upstream.sent < 32 * MAX_ERROR_BYTES  # socket buffers on both sides, not 256 MiB
    assert raised.value.status_code == code
    body: Any = raised.value.body
    assert f"error body over {MAX_ERROR_BYTES} bytes" in body["message"]
    assert body["type"] == "upstream_error"


def test_an_endless_error_body_of_a_passed_through_request_is_not_read_whole(
    start_proxy: StartProxy, endless: EndlessErrors
) -> None:
    """A passed-through request's upstream error is capped as a gated one's: its status, the
    proxy's error JSON."""
    upstream = endless
    upstream.status = 404
    proxy = start_proxy(base_url=upstream.base_url)
    answer = httpx.get(f"{proxy.url}/v1/files/file-1", timeout=30)
    assert upstream.ended.wait(10)
    assert upstream.sent < 32 * MAX_ERROR_BYTES
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "upstream_error_too_long"


# -- slow and idle clients ------------------------------------------------------------------------

#: ``server.body_timeout`` of the slow-client tests.
BODY_TIMEOUT = 0.5


@pytest.fixture
def reading() -> Iterator[tuple[LoopbackServer, list[bytes | None]]]:
    """An upstream that reads each request's whole body before it answers (a JSON list); the
    bodies it received (None: the request was cut off before its end)."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    received: list[bytes | None] = []

    async def answer(request: Any) -> Response:
        try:
            received.append(await request.body())
        except ClientDisconnect:
            received.append(None)
            return Response(status_code=499)
        return JSONResponse({"object": "list", "data": []})

    app = Starlette(routes=[Route("/v1/{path:path}", answer, methods=["GET", "POST"])])
    with LoopbackServer(app) as server:
        yield server, received


def _trickled(port: int, head: bytes, byte: bytes, limit: float = 10.0) -> tuple[bytes, float]:
    """Send a request's ``head``, then its body one ``byte`` every 0.1 s, answered or not,
    until the server closes the connection; what came back, and the seconds from the head to
    the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        # timed from before the head is sent: the server's deadline starts once it has read
        # it, which can be before a clock read after sendall (0.4999996 s for a 0.5 s deadline)
        started, answer = time.monotonic(), b""
        sock.sendall(head)
        while time.monotonic() - started < limit:
            if select.select([sock], [], [], 0.1)[0]:
                data = sock.recv(65_536)
                if not data:
                    return answer, time.monotonic() - started
                answer += data
            else:
                with contextlib.suppress(OSError):  # closed for writing: read what came
                    sock.sendall(byte)
    raise AssertionError(f"the connection was still open after {limit} s: {answer!r}")


def _head(method: str, path: str, framing: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "framing", "byte"),
    [
        ("/v1/chat/completions", "content-length: 1000", b" "),
        ("/v1/chat/completions", "transfer-encoding: chunked", b"1\r\n \r\n"),
        ("/v1/files", "content-length: 1000", b" "),  # passed through: streamed upstream
    ],
    ids=["gated", "gated-chunked", "passthrough"],
)
def test_a_body_not_whole_within_body_timeout_is_a_408_and_the_connection_closed(
    start_proxy: StartProxy,
    reading: tuple[LoopbackServer, list[bytes | None]],
    path: str,
    framing: str,
    byte: bytes,
) -> None:
    """A client trickling its body (a byte every 0.1 s) gets a 408 in the proxy's error JSON
    once server.body_timeout has passed, and its connection is closed; a passed-through
    request's upstream request is cut off, never ended as if whole, and its slot is free again;
    no 500, and the server goes on serving."""
    upstream, received = reading
    server = {"body_timeout": BODY_TIMEOUT, "max_passthrough": 1}
    proxy = start_proxy(base_url=f"{upstream.url}/v1", server=server)
    with capture_logs() as events:
        answer, seconds = _trickled(proxy.port, _head("POST", path, framing), byte)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "server.body_timeout" in error["message"]
    assert BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 3
    assert [e for e in events if e["event"] == "http.body_timeout"]
    assert not [e for e in events if e["event"] == "server.internal_error"]
    assert httpx.get(f"{proxy.url}/v1/models", timeout=10).status_code == 200  # the slot is free
    passed_through = path == "/v1/files"
    expected = [None, b""] if passed_through else [b""]  # (the cut request) and GET /v1/models
    waited = time.monotonic()
    while len(received) < len(expected) and time.monotonic() - waited < 5:
        time.sleep(0.05)
    assert sorted(received, key=repr) == sorted(expected, key=repr)
    assert httpx.get(f"{proxy.url}/healthz", timeout=10).status_code == 200


def test_an_answer_given_before_the_body_is_whole_closes_the_connection(
    start_proxy: StartProxy,
) -> None:
    """A request answered before its body has arrived (401: no key) has its connection closed
    after the answer: a client trickling the rest of its body cannot keep it open."""
    proxy = start_proxy(api_keys=("sk-client-0001",), server={"body_timeout": BODY_TIMEOUT})
    head = _head("POST", "/v1/chat/completions", "content-length: 100000")
    answer, seconds = _trickled(proxy.port, head, b" ")
    assert answer.startswith(b"HTTP/1.1 401 ") and b"connection: close" in answer.lower()
    assert seconds < BODY_TIMEOUT + 3


def test_a_browser_refused_before_its_body_is_whole_has_its_connection_closed(
    start_proxy: StartProxy,
) -> None:
    """A request refused for its Host (403, a rebound name) before its body has arrived has its
    connection closed after the answer, as a 401 does."""
    proxy = start_proxy(server={"body_timeout": BODY_TIMEOUT})
    head = _head("POST", "/v1/chat/completions", "content-length: 100000")
    answer, seconds = _trickled(proxy.port, head.replace(b"localhost", b"evil.example"), b" ")
    assert answer.startswith(b"HTTP/1.1 403 ") and b"connection: close" in answer.lower()
    assert b"host_not_allowed" in answer and seconds < BODY_TIMEOUT + 3


def test_a_slow_body_within_body_timeout_and_a_slow_answer_after_it_are_served(
    start_proxy: StartProxy, upstream: RecordingUpstream
) -> None:
    """The deadline is the body's alone: a body trickled in within server.body_timeout is
    served, and an answer that takes longer than it once the body is whole is not cut."""
    proxy = start_proxy(server={"body_timeout": 1.0})
    body = json.dumps({"model": "m", "messages": ORDER}).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(_head("POST", "/v1/chat/completions", f"content-length: {len(body)}"))
        for piece in (body[:10], body[10:20], body[20:]):
            time.sleep(0.2)
            sock.sendall(piece)
        assert sock.recv(65_536).startswith(b"HTTP/1.1 200 ")
    upstream.delay(1.5)
    answer = client_for(proxy).chat.completions.create(model="m", messages=ORDER)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "echo: where is my order"


def test_an_idle_keep_alive_connection_is_closed(start_proxy: StartProxy) -> None:
    """After an answer, a keep-alive connection with no new request is closed after uvicorn's
    timeout_keep_alive (KEEP_ALIVE_SECONDS, as gatekeeper serve sets it), not kept open."""
    proxy = start_proxy()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert sock.recv(65_536).startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        assert sock.recv(65_536) == b""  # closed by the server
    assert KEEP_ALIVE_SECONDS - 1 < time.monotonic() - answered < KEEP_ALIVE_SECONDS + 3
