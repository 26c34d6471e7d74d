"""The proxy's upstream transport (httpx on aiohttp's pool) against misbehaving servers on
loopback: every failure is the httpx error the proxy maps to 502 or 504."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gatekeeper.interfaces.proxy.state import build_upstream_client
from gatekeeper.interfaces.proxy.transport import UpstreamTransport
from gatekeeper.settings import UpstreamSettings

pytestmark = pytest.mark.integration

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))


async def _serve(behaviour: Behaviour) -> AsyncIterator[str]:
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await behaviour(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.close()


async def _send(url: str, *, read_timeout: float = 5.0, retries: int = 0) -> bytes:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    transport = UpstreamTransport(limits=limits, retries=retries)
    async with httpx.AsyncClient(transport=transport, timeout=read_timeout) as client:
        response = await client.post(url, content=b'{"model": "m"}')
        return response.content


async def _run(behaviour: Behaviour, **kwargs: float) -> bytes:
    servers = _serve(behaviour)
    url = await anext(servers)
    try:
        return await _send(url, **kwargs)  # type: ignore[arg-type]
    finally:
        await servers.aclose()


async def test_a_good_answer_is_read_whole() -> None:
    """A well-formed answer arrives as sent, over a kept-alive connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()

    assert await _run(answer) == b"{}"


async def test_body_cut_before_content_length_is_a_protocol_error() -> None:
    """content-length 775, 40 bytes, close: RemoteProtocolError (502), not a timeout."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 775\r\n\r\n" + b"x" * 40)
        await writer.drain()

    with pytest.raises(httpx.RemoteProtocolError):
        await _run(cut)


async def test_connection_closed_without_an_answer_is_a_protocol_error() -> None:
    """A server that reads the request and hangs up is a RemoteProtocolError, not the
    ConnectTimeout httpx-aiohttp itself would report."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    with pytest.raises(httpx.RemoteProtocolError):
        await _run(hang_up)


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    """A status line that is not HTTP is an httpx error, never a raw aiohttp exception."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    with pytest.raises(httpx.RemoteProtocolError):
        await _run(garbage)


async def test_chunked_stream_cut_mid_chunk_is_a_protocol_error() -> None:
    """A chunked body whose connection closes mid-chunk fails while the body is read."""

    async def cut_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nonly-part")
        await writer.drain()

    with pytest.raises(httpx.RemoteProtocolError):
        await _run(cut_chunk)


async def test_an_answer_that_never_comes_is_a_timeout() -> None:
    """No answer within the read timeout is a TimeoutException (504)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(3)

    with pytest.raises(httpx.TimeoutException):
        await _run(silent, read_timeout=0.3)


async def test_a_refused_connection_is_a_connect_error_after_the_retries() -> None:
    """A closed port is a ConnectError (502) once the connect retries are spent."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await _send(f"http://127.0.0.1:{port}/v1/models", retries=2)


async def test_the_upstream_client_keeps_no_cookies() -> None:
    """A cookie the upstream sets in one answer is never sent with a later request."""
    heads: list[bytes] = []

    async def sets_cookies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            heads.append(head.lower())
            length = [
                line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ]
            if length:
                await reader.readexactly(int(length[0].split(b":")[1]))
            writer.write(
                OK.replace(b"\r\n\r\n", b"\r\nset-cookie: sticky=customer-a; Path=/\r\n\r\n", 1)
            )
            await writer.drain()

    servers = _serve(sets_cookies)
    url = await anext(servers)
    try:
        async with build_upstream_client(UpstreamSettings(base_url=url)) as client:
            first = await client.post(url, content=b"{}")
            await client.post(url, content=b"{}")
    finally:
        await servers.aclose()
    assert first.headers["set-cookie"].startswith("sticky=")
    assert len(heads) == 2
    assert all(b"cookie:" not in head for head in heads)
