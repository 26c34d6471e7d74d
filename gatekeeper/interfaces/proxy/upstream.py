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
        try:
            content = await upstream.aread()
        except httpx.TimeoutException as exc:
            raise timeout_error(proxy, exc, headers) from exc
        finally:
            await upstream.aclose()
        return Response(content, upstream.status_code, headers=out_headers)
    return StreamingResponse(
        relay(proxy, upstream),
        status_code=upstream.status_code,
        headers=out_headers,
        background=BackgroundTask(upstream.aclose),
    )


async def relay(proxy: Proxy, upstream: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream's stream as it arrives; a failure mid-stream ends it with an SSE error."""
    try:
        async for chunk in upstream.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "stream_interrupted"
        proxy.metrics.upstream_error(kind)
        proxy.log.warning("upstream.stream_failed", error=type(exc).__name__)
        error = {
            "message": f"the upstream stream failed ({type(exc).__name__})",
            "type": "upstream_error",
            "code": f"upstream_{kind}",
        }
        yield f"\n\ndata: {json.dumps({'error': error})}\n\n".encode()
    finally:
        await upstream.aclose()
