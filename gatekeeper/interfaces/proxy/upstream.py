"""Forwarding to the upstream: send, map its failures to 502/504, relay its answer or stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, MutableMapping
from typing import Any

import anyio
import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from gatekeeper.interfaces.proxy.answers import passthrough_headers
from gatekeeper.interfaces.proxy.disconnects import unless_disconnected
from gatekeeper.interfaces.proxy.drain import (
    SHUTTING_DOWN,
    SHUTTING_DOWN_MESSAGE,
    mark_ended,
    shutting_down_event,
)
from gatekeeper.interfaces.proxy.errors import Json, ProxyError, upstream_failure
from gatekeeper.interfaces.proxy.metrics import path_label
from gatekeeper.interfaces.proxy.slots import HeldStream
from gatekeeper.interfaces.proxy.state import Proxy
from gatekeeper.interfaces.proxy.stream_ends import (
    STREAM_ENDS,
    ResponseEnd,
    StreamEnd,
    json_object,
)


async def send_upstream(
    proxy: Proxy,
    method: str,
    path: str,
    *,
    body: bytes | AsyncIterable[bytes] | None,
    accept: str | None,
    headers: Mapping[str, str],
    query: str = "",
    upstream_headers: Mapping[str, str] | list[tuple[bytes, bytes]] | None = None,
) -> httpx.Response:
    """Send a request upstream (the answer's body not yet read); failures become 502/504.

    ``headers`` go on the proxy's answer (also an error answer); ``upstream_headers`` replace
    the default JSON request headers (:meth:`Proxy.upstream_headers`)."""
    # Built directly rather than by client.build_request, which parses the URL and merges the
    # client's default headers and cookies on every call (the proxy sets all it sends); the
    # client's timeout goes with the request as build_request would put it.
    request = httpx.Request(
        method,
        proxy.upstream_url(path, headers, query),
        content=body,
        headers=upstream_headers or proxy.upstream_headers(accept),
        extensions={"timeout": proxy.client.timeout.as_dict()},
    )
    started = time.perf_counter()
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
    proxy.metrics.upstream_began(path_label(f"/v1/{path}"), time.perf_counter() - started)
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


#: The most of an upstream's error body the proxy reads (an OpenAI error is under a kilobyte):
#: a longer one is not read on, and not passed on (:func:`_raise_for_upstream_status`).
MAX_ERROR_BYTES = 1024 * 1024


async def _error_body(response: httpx.Response) -> bytes | None:
    """An upstream error answer's body (empty when it broke off), closing the answer; None,
    unread beyond it, when it is longer than :data:`MAX_ERROR_BYTES`."""
    declared = response.headers.get("content-length", "")
    chunks: list[bytes] = []
    size = 0
    try:
        if declared.isdigit() and int(declared) > MAX_ERROR_BYTES:
            return None
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ERROR_BYTES:
                return None
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()
    return b"".join(chunks)


async def _raise_for_upstream_status(
    proxy: Proxy, response: httpx.Response, headers: Mapping[str, str]
) -> None:
    """5xx and a refused proxy key become 502; other 4xx (the client's) pass through as-is,
    their body scrubbed of the proxy's keys. A 4xx error body over :data:`MAX_ERROR_BYTES` is
    not passed on: the client gets the upstream's status (so the ``openai`` client raises the
    same error class) with the proxy's own error JSON saying so."""
    status = response.status_code
    read = await _error_body(response)
    body = b"" if read is None else proxy.scrub(read)
    if status in (401, 403):
        proxy.log.error("upstream.auth_failed", status=status)
        raise _fault(
            proxy,
            "auth",
            f"the upstream refused the proxy's credentials (HTTP {status}); "
            "check GATEKEEPER_UPSTREAM__API_KEY",
            headers,
            code="upstream_auth_failed",
        )
    too_long = f"an error body over {MAX_ERROR_BYTES} bytes (not read)"
    if status >= 500:
        proxy.log.warning("upstream.error", status=status, body_too_long=read is None)
        detail = too_long if read is None else _upstream_message(body)
        message = f"the upstream LLM endpoint answered HTTP {status}"
        raise _fault(proxy, "status_5xx", message + (f": {detail}" if detail else ""), headers)
    proxy.metrics.upstream_error("status_4xx")
    out_headers = passthrough_headers(response, headers, proxy.scrub)
    if read is None:
        proxy.log.warning("upstream.error_body_too_long", status=status, limit=MAX_ERROR_BYTES)
        out_headers.pop("content-type", None)  # the proxy's JSON replaces the upstream's body
        raise upstream_failure(
            status,
            f"the upstream LLM endpoint answered HTTP {status} with {too_long}",
            "upstream_error_too_long",
            out_headers,
        )
    raise Passthrough(Response(body, status, headers=out_headers))


def _fault(
    proxy: Proxy, kind: str, message: str, headers: Mapping[str, str], code: str = "upstream_error"
) -> ProxyError:
    """The 502 for an upstream fault of ``kind``, counted in ``upstream_errors_total``."""
    proxy.metrics.upstream_error(kind)
    return upstream_failure(502, message, code, headers)


def _unusable(proxy: Proxy, what: str, headers: Mapping[str, str]) -> ProxyError:
    """502 for a successful-looking answer the client could not use (a gated route's answer
    must be a JSON object, or the SSE stream it asked for)."""
    proxy.log.warning("upstream.malformed", answer=what)
    return _fault(
        proxy,
        "malformed",
        f"the upstream LLM endpoint answered with {what}, not a chat answer; check "
        "GATEKEEPER_UPSTREAM__BASE_URL (an OpenAI-compatible /v1 base)",
        headers,
    )


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


async def forward_gated(
    proxy: Proxy,
    request: Request,
    body: bytes,
    *,
    path: str,
    stream: bool,
    headers: dict[str, str],
    on_response: Callable[[Json], None] | None = None,
) -> Response:
    """Forward an admitted request's raw body to ``upstream/<path>`` (``chat/completions`` or
    ``responses``); the upstream's answer back unchanged (streamed chunk by chunk).
    ``on_response`` is given a successful Responses API answer's ``response`` object (the
    body, or a stream's ``response.completed`` event's), once it has been passed on whole.
    Still waiting on the upstream at the shutdown's cutoff (:mod:`.drain`), it answers 503
    ``server_shutting_down``, or a stream ends with that SSE error event; the client gone
    before the answer begins, the wait ends (:mod:`.disconnects`)."""
    accept = "text/event-stream" if stream else request.headers.get("accept")

    async def answered() -> tuple[httpx.Response, bytes]:
        """The upstream's answer: its response, and its body read whole unless streamed (one
        wait, so one watch for the client's disconnect)."""
        upstream = await send_upstream(
            proxy, "POST", path, body=body, accept=accept, headers=headers
        )
        sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        if not upstream.is_success or (stream and not sse):  # a redirect; JSON for a stream
            await upstream.aclose()
            raise _unusable(proxy, f"HTTP {upstream.status_code}", headers)
        return upstream, b"" if stream else await read_answer(proxy, upstream, headers)

    try:
        with proxy.drain.bounded() as wait:
            upstream, content = await unless_disconnected(request.receive, answered, headers)
    except Passthrough as passthrough:
        return passthrough.response
    if wait.cancelled_caught:
        raise _shutting_down(proxy, headers)
    out_headers = passthrough_headers(upstream, headers, proxy.scrub)
    if not stream:
        answer = json_object(content)
        if answer is None:  # HTML from a captive portal, an empty 204, a JSON list
            raise _unusable(proxy, "a body that is no JSON object", headers)
        if on_response is not None:
            _hand_over(on_response, answer)
        return Response(content, upstream.status_code, headers=out_headers)
    end = STREAM_ENDS[path]()
    return StreamingResponse(
        relay(proxy, upstream, end=end, on_response=on_response, scope=request.scope),
        status_code=upstream.status_code,
        headers=out_headers,
        background=BackgroundTask(upstream.aclose),
    )


async def forward_passthrough(proxy: Proxy, request: Request, path: str) -> Response:
    """Forward a request the gate does not judge to ``upstream/<path>``: method, query string
    and body unchanged (streamed, not size-limited: the upstream sets its own limits), the
    proxy's key. The answer is streamed back; connect failures, timeouts and 5xx are 502/504
    as for gated requests. Once the answer has started, an SSE stream that breaks ends with an
    SSE error event; any other body that breaks is cut off (the connection is aborted), never
    passed off as whole. It holds one of ``server.max_passthrough`` slots until its answer is
    sent (503 when none is free: :mod:`~gatekeeper.interfaces.proxy.slots`)."""
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    with proxy.passthrough_slots.slot() as slot:
        try:
            upstream = await send_upstream(
                proxy,
                request.method,
                path,
                body=request.stream() if has_body else None,
                accept=None,
                headers={},
                query=request.url.query,
                upstream_headers=proxy.forwarded_headers(request.headers.raw),
            )
        except Passthrough as passthrough:
            return passthrough.response
        sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        # A successful body is relayed as sent, never scrubbed of the proxy's keys (its headers
        # are): see gatekeeper.interfaces.proxy.scrubbing; an error status's body was scrubbed.
        return HeldStream(
            relay(proxy, upstream, scope=request.scope) if sse else relay_body(proxy, upstream),
            status_code=upstream.status_code,
            headers=passthrough_headers(upstream, {}, proxy.scrub),
            background=BackgroundTask(upstream.aclose),
            release=slot.hand_over(),
        )


class UpstreamBodyBroken(Exception):
    """A passed-through answer broke off after its status was sent: the client's connection is
    aborted (see :class:`~gatekeeper.interfaces.proxy.middleware.RequestLog`)."""


async def relay_body(proxy: Proxy, upstream: httpx.Response) -> AsyncIterator[bytes]:
    """A non-SSE upstream body as it arrives; a failure mid-way aborts the answer."""
    try:
        async for chunk in upstream.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "body_interrupted"
        proxy.metrics.upstream_error(kind)
        proxy.log.warning("upstream.body_interrupted", kind=kind, error=type(exc).__name__)
        raise UpstreamBodyBroken(type(exc).__name__) from exc
    finally:
        await upstream.aclose()


#: The largest answer read whole (a chat completion, a Responses object, the model list): a
#: chat answer is kilobytes, and a 300 MB one kept ~900 MB of the proxy's memory afterwards.
MAX_ANSWER_BYTES = 32 * 1024 * 1024


async def read_answer(proxy: Proxy, upstream: httpx.Response, headers: Mapping[str, str]) -> bytes:
    """The upstream answer's whole body; a timeout is a 504, a cut or broken body a 502, and
    so is one over :data:`MAX_ANSWER_BYTES`."""
    try:
        chunks, size = [], 0
        async for chunk in upstream.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise _unusable(proxy, f"an answer larger than {MAX_ANSWER_BYTES} bytes", headers)
            chunks.append(chunk)
        return b"".join(chunks)
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
        with anyio.CancelScope(shield=True):  # closed also when the wait was cancelled
            await upstream.aclose()


async def relay(
    proxy: Proxy,
    upstream: httpx.Response,
    *,
    end: StreamEnd | None = None,
    on_response: Callable[[Json], None] | None = None,
    scope: MutableMapping[str, Any] | None = None,
) -> AsyncIterator[bytes]:
    """The upstream's stream as it arrives; a failure mid-stream ends it with an SSE error.

    With ``end`` (an SSE stream of a known kind), a stream that stops before its final event
    (``data: [DONE]`` for chat, ``response.completed`` for Responses) was cut (e.g. the
    connection closed without chunked framing, which httpx does not report): it is ended with
    the same SSE error event, never passed off as whole. One still waiting for its next chunk at
    the shutdown's cutoff (:mod:`.drain`) ends with a ``server_shutting_down`` error event, the
    request's ``scope`` marked so for its log line.
    """
    held = b""  # with ``end``: the start of an event not yet whole (_whole_events)
    chunks = upstream.aiter_bytes()
    try:
        while True:
            with proxy.drain.bounded() as wait:
                chunk = await anext(chunks, None)
            if wait.cancelled_caught:
                yield _stream_cut_at_shutdown(proxy, scope)
                return
            if chunk is None:
                break
            if end is not None:
                end.feed(chunk)
                chunk, held = _whole_events(held, chunk)
            if chunk:
                yield chunk
    except httpx.HTTPError as exc:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "stream_interrupted"
        yield _stream_failed(proxy, kind, f"the upstream stream failed ({type(exc).__name__})")
        return
    finally:
        await upstream.aclose()
    if end is not None and not end.complete():
        yield _stream_failed(
            proxy, "stream_truncated", f"the upstream stream ended without {end.missing}"
        )
        return
    if held:
        yield held
    if on_response is not None and isinstance(end, ResponseEnd):
        _hand_over(on_response, end.response())


#: A blank line, SSE's end of an event: two line ends (CRLF, CR or LF; a CR before an LF is
#: half of a CRLF).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
#: The most of an unfinished event held back (a stream without blank lines is passed on).
MAX_HELD_BYTES = 1024 * 1024


def _whole_events(held: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """``held`` (no blank line in it) and the next ``chunk`` as the whole events to pass on now
    and the start of an event held back, so that a stream cut mid-event never hands the client
    half an event (which it would parse, once the error event's blank line ends it, instead of
    the error). Only the chunk and the few bytes before it are searched: a large event arriving
    in many chunks is not scanned again for each."""
    data = held + chunk
    start = max(0, len(held) - 3)  # a blank line is at most 4 bytes, one of them new
    cut = max((blank.end() for blank in _BLANK_LINE.finditer(data, start)), default=0)
    if len(data) - cut > MAX_HELD_BYTES:
        return data, b""
    return data[:cut], data[cut:]


def _hand_over(on_response: Callable[[Json], None], response: Json | None) -> None:
    if response is not None:
        on_response(response)


def _shutting_down(proxy: Proxy, headers: Mapping[str, str]) -> ProxyError:
    """The 503 for a request still waiting on the upstream at the shutdown's cutoff, with the
    decision's headers."""
    proxy.log.warning("server.shutdown_cutoff", answer="not begun")
    return ProxyError(
        503, SHUTTING_DOWN_MESSAGE, code=SHUTTING_DOWN, kind="server_error", headers=headers
    )


def _stream_cut_at_shutdown(proxy: Proxy, scope: MutableMapping[str, Any] | None) -> bytes:
    """Log a stream ended at the shutdown's cutoff; the SSE error event that ends it."""
    proxy.log.warning("server.shutdown_cutoff", answer="stream")
    if scope is not None:
        mark_ended(scope)
    return shutting_down_event()


def _stream_failed(proxy: Proxy, kind: str, message: str) -> bytes:
    """Count and log a broken upstream stream; the SSE error event that ends the client's."""
    proxy.metrics.upstream_error(kind)
    proxy.log.warning("upstream.stream_failed", kind=kind, error=message)
    error = {"message": message, "type": "upstream_error", "code": f"upstream_{kind}"}
    return f"\n\ndata: {json.dumps({'error': error})}\n\n".encode()
