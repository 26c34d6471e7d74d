"""The upstream connection pool: httpx's API on aiohttp's pool.

httpcore's pool (httpx's default transport) checks every pooled keep-alive connection on each
request, a ``poll()`` per connection: with 64 clients in flight that was a fifth of the proxy's
CPU (py-spy during ``eval/benchmark_throughput.py``). ``httpx-aiohttp`` (the transport the
``openai`` SDK offers for the same reason) sends httpx requests through an aiohttp session
instead. The proxy keeps httpx's API (and tests keep ``httpx.MockTransport``); this module adds
what the proxy's error contract needs on top:

* every failure is an ``httpx`` error of the right kind (the library calls a dropped connection
  a ``ConnectTimeout`` and lets some aiohttp errors through unmapped): a timeout stays a
  timeout (504), a connection that cannot be made is a ``ConnectError``, and one cut or
  garbled mid-answer a ``RemoteProtocolError`` (502), in the request and in the body alike;
* failed connects are retried ``retries`` times, as httpcore's ``retries`` does (nothing has
  been sent then, so a retry cannot send a request twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An aiohttp-pooled httpx transport with honest errors and connect retries."""

    def __init__(self, *, limits: httpx.Limits, retries: int = 0) -> None:
        self._inner = AiohttpTransport(limits=limits)
        self._retries = retries

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            try:
                with _honest_errors():
                    response = await self._inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt >= self._retries:
                    raise
                attempt += 1
                continue
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _HonestStream(response.stream)
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _HonestStream(httpx.AsyncByteStream):
    """A response body whose read failures are mapped as the request's are."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _honest_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _honest_errors():
            await self._stream.aclose()


@contextmanager
def _honest_errors() -> Iterator[None]:
    """aiohttp's failures (raw, or as httpx-aiohttp mapped them) as the right httpx errors."""
    try:
        yield
    except httpx.HTTPError as exc:
        if exc.__cause__ is None:  # httpx's own error, not a mapped aiohttp one
            raise
        raise _mapped(exc.__cause__) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _mapped(exc) from exc


def _mapped(exc: BaseException) -> httpx.HTTPError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    return httpx.RemoteProtocolError(message)
