"""What the proxy takes from a hostile or broken peer, for real (uvicorn on loopback): an
upstream sending an endless error body."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gatekeeper.interfaces.proxy.upstream import MAX_ERROR_BYTES
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
