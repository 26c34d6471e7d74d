"""Forwarding to the upstream: send, map its failures to 502/504, relay its answer or stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from gatekeeper.interfaces.proxy.answers import passthrough_headers
from gatekeeper.interfaces.proxy.errors import ProxyError, upstream_failure
from gatekeeper.interfaces.proxy.state import Proxy


async def send_upstream(
    proxy: Proxy,
    method: str,
    path: str,
    *,
    body: bytes | None,
    accept: str | None,
    headers: Mapping[str, str],
) -> httpx.Response:
    """Send a request upstream (the answer's body not yet read); failures become 502/504."""
    request = proxy.client.build_request(
        method,
        proxy.upstream_url(path, headers),
        content=body,
        headers=proxy.upstream_headers(accept),
    )
    try:
        response = await proxy.client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise timeout_error(proxy, exc, headers) from exc
    except httpx.HTTPError as exc:
        proxy.metrics.upstream_error("unavailable")
        proxy.log.warning("upstream.unavailable", error=type(exc).__name__, path=path)
        raise upstream_failure(
            502,
            f"cannot reach the upstream LLM endpoint ({type(exc).__name__})",
            "upstream_unavailable",
            headers,
        ) from exc
    if response.status_code >= 400:
        await _raise_for_upstream_status(proxy, response, headers)
    return response


def timeout_error(proxy: Proxy, exc: Exception, headers: Mapping[str, str]) -> ProxyError:
    proxy.metrics.upstream_error("timeout")
    proxy.log.warning("upstream.timeout", error=type(exc).__name__)
    return upstream_failure(
        504,
        f"the upstream LLM endpoint did not answer within {proxy.settings.upstream.timeout:g}s",
        "upstream_timeout",
        headers,
    )


async def _raise_for_upstream_status(
    proxy: Proxy, response: httpx.Response, headers: Mapping[str, str]
) -> None:
    """5xx and a refused proxy key become 502; other 4xx (the client's) pass through as-is."""
    status = response.status_code
    try:
        body = await response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    if status in (401, 403):
        proxy.metrics.upstream_error("auth")
        proxy.log.error("upstream.auth_failed", status=status)
        raise upstream_failure(
            502,
            f"the upstream refused the proxy's credentials (HTTP {status}); "
            "check GATEKEEPER_UPSTREAM__API_KEY",
            "upstream_auth_failed",
            headers,
        )
    if status >= 500:
        proxy.metrics.upstream_error("status_5xx")
        proxy.log.warning("upstream.error", status=status)
        detail = _upstream_message(body)
        raise upstream_failure(
            502,
            f"the upstream LLM endpoint answered HTTP {status}" + (f": {detail}" if detail else ""),
            "upstream_error",
            headers,
        )
    proxy.metrics.upstream_error("status_4xx")
    raise Passthrough(Response(body, status, headers=passthrough_headers(response, headers)))


class Passthrough(Exception):
    """An upstream answer to return as-is (its 4xx is about the client's request)."""

    def __init__(self, response: Response) -> None:
        super().__init__("passthrough")
        self.response = response


def _upstream_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, RecursionError):
        return ""
    return str(message)[:300] if message else ""


async def forward_chat(
    proxy: Proxy, request: Request, body: bytes, *, stream: bool, headers: dict[str, str]
) -> Response:
    """Forward the raw body; the upstream's answer back unchanged (streamed chunk by chunk)."""
    accept = "text/event-stream" if stream else request.headers.get("accept")
    try:
        upstream = await send_upstream(
            proxy, "POST", "chat/completions", body=body, accept=accept, headers=headers
        )
    except Passthrough as passthrough:
        return passthrough.response
    out_headers = passthrough_headers(upstream, headers)
    if not stream:
        content = await read_answer(proxy, upstream, headers)
        return Response(content, upstream.status_code, headers=out_headers)
    sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
    return StreamingResponse(
        relay(proxy, upstream, expect_done=sse),
        status_code=upstream.status_code,
        headers=out_headers,
        background=BackgroundTask(upstream.aclose),
    )


async def read_answer(proxy: Proxy, upstream: httpx.Response, headers: Mapping[str, str]) -> bytes:
    """The upstream answer's whole body; a timeout is a 504, a cut or broken body a 502."""
    try:
        return await upstream.aread()
    except httpx.TimeoutException as exc:
        raise timeout_error(proxy, exc, headers) from exc
    except httpx.HTTPError as exc:  # e.g. RemoteProtocolError: closed before content-length
        proxy.metrics.upstream_error("body_interrupted")
        proxy.log.warning("upstream.body_interrupted", error=type(exc).__name__)
        raise upstream_failure(
            502,
            f"the upstream LLM endpoint's answer was cut off ({type(exc).__name__})",
            "upstream_interrupted",
            headers,
        ) from exc
    finally:
        await upstream.aclose()


async def relay(
    proxy: Proxy, upstream: httpx.Response, *, expect_done: bool = False
) -> AsyncIterator[bytes]:
    """The upstream's stream as it arrives; a failure mid-stream ends it with an SSE error.

    With ``expect_done`` (a chat completion SSE stream) a stream that ends without its final
    ``data: [DONE]`` event was cut (e.g. the connection closed without chunked framing, which
    httpx does not report): it is ended with the same SSE error event, never passed off as whole.
    """
    tail = b""
    try:
        async for chunk in upstream.aiter_bytes():
            tail = (tail + chunk)[-_TAIL:]
            yield chunk
    except httpx.HTTPError as exc:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "stream_interrupted"
        yield _stream_failed(proxy, kind, f"the upstream stream failed ({type(exc).__name__})")
        return
    finally:
        await upstream.aclose()
    if expect_done and not _ends_with_done(tail):
        yield _stream_failed(
            proxy, "stream_truncated", "the upstream stream ended without its final [DONE] event"
        )


_TAIL = 64


def _ends_with_done(tail: bytes) -> bool:
    last = tail.rstrip().rsplit(b"\n", 1)[-1].strip()
    return last in (b"data: [DONE]", b"data:[DONE]")


def _stream_failed(proxy: Proxy, kind: str, message: str) -> bytes:
    """Count and log a broken upstream stream; the SSE error event that ends the client's."""
    proxy.metrics.upstream_error(kind)
    proxy.log.warning("upstream.stream_failed", kind=kind, error=message)
    error = {"message": message, "type": "upstream_error", "code": f"upstream_{kind}"}
    return f"\n\ndata: {json.dumps({'error': error})}\n\n".encode()
