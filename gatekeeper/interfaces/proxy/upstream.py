"""Forwarding to the upstream: send, map its failures to 502/504, relay its answer or stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Protocol

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from gatekeeper.interfaces.proxy.answers import passthrough_headers
from gatekeeper.interfaces.proxy.errors import Json, ProxyError, upstream_failure
from gatekeeper.interfaces.proxy.metrics import path_label
from gatekeeper.interfaces.proxy.slots import HeldStream
from gatekeeper.interfaces.proxy.state import Proxy


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
    body, or a stream's ``response.completed`` event's), once it has been passed on whole."""
    accept = "text/event-stream" if stream else request.headers.get("accept")
    try:
        upstream = await send_upstream(
            proxy, "POST", path, body=body, accept=accept, headers=headers
        )
    except Passthrough as passthrough:
        return passthrough.response
    out_headers = passthrough_headers(upstream, headers, proxy.scrub)
    sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
    if not upstream.is_success or (stream and not sse):  # a redirect; JSON for a stream
        await upstream.aclose()
        raise _unusable(proxy, f"HTTP {upstream.status_code}", headers)
    if not stream:
        content = await read_answer(proxy, upstream, headers)
        answer = _json_object(content)
        if answer is None:  # HTML from a captive portal, an empty 204, a JSON list
            raise _unusable(proxy, "a body that is no JSON object", headers)
        if on_response is not None:
            _hand_over(on_response, answer)
        return Response(content, upstream.status_code, headers=out_headers)
    end = _STREAM_ENDS[path]()
    return StreamingResponse(
        relay(proxy, upstream, end=end, on_response=on_response),
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
            relay(proxy, upstream) if sse else relay_body(proxy, upstream),
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
        await upstream.aclose()


class StreamEnd(Protocol):
    """Watches an SSE stream go by and tells whether it ended as such a stream must end."""

    missing: str  # what a cut stream lacks, for the error event

    def feed(self, chunk: bytes) -> None: ...

    def complete(self) -> bool: ...


class DoneEnd:
    """A chat completion stream ends with ``data: [DONE]``."""

    missing = "its final [DONE] event"
    _TAIL = 64

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-self._TAIL :]

    def complete(self) -> bool:
        last = _lf(self._tail).rstrip().rsplit(b"\n", 1)[-1].strip()
        return last in (b"data: [DONE]", b"data:[DONE]")


class ResponseEnd:
    """A Responses API stream ends with a terminal event: ``response.completed`` (or
    ``response.incomplete``, ``response.failed``, ``error``: the upstream's own account of a
    failure, passed on as it is). Only the last event is kept (and parsed, at the end)."""

    missing = "its final response.completed event"
    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

    def __init__(self) -> None:
        self._pending = b""  # the event being received, its line ends LF (see _lf)
        self._last = b""  # the last complete event

    def feed(self, chunk: bytes) -> None:
        self._pending = _lf(self._pending + chunk)
        self._last, self._pending = _split_events(self._pending, self._last)

    def complete(self) -> bool:
        return _event_type(self._final()) in self.TERMINAL

    def response(self) -> Json | None:
        """The ``response`` object of a stream that ended with ``response.completed``."""
        final = self._final()
        if _event_type(final) != "response.completed":
            return None
        event = _json_object(_sse_fields(final)[1] or b"")
        response = event.get("response") if event is not None else None
        return response if isinstance(response, dict) else None

    def _final(self) -> bytes:
        """The last event: the one being received when it is whole but for its blank line
        (its data JSON), else the last complete one."""
        ended = self._pending[:-1] + b"\n" if self._pending.endswith(b"\r") else self._pending
        last, pending = _split_events(ended, self._last)  # at the end, a last CR is a line end
        pending = pending.strip()
        data = _sse_fields(pending)[1]
        whole = data is not None and _json_object(data) is not None
        return pending if whole else last


def _split_events(text: bytes, last: bytes) -> tuple[bytes, bytes]:
    """The last complete event with data in ``text`` (line ends LF; ``last`` when it has
    none) and what follows the last blank line."""
    if b"\n\n" not in text:
        return last, text
    complete, _, rest = text.rpartition(b"\n\n")
    for event in reversed(complete.split(b"\n\n")):
        if _event_type(event) is not None:
            return event, rest
    return last, rest


def _lf(data: bytes) -> bytes:
    """``data`` with SSE's three line ends (CRLF, CR, LF) as LF; a last CR is kept as it is,
    as it may be the first half of a CRLF."""
    held = data.endswith(b"\r")
    body = (data[:-1] if held else data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body + b"\r" if held else body


def _sse_fields(event: bytes) -> tuple[str | None, bytes | None]:
    """An SSE event's ``event:`` field and its ``data:`` lines joined (None when absent)."""
    name, data = None, []
    for line in event.split(b"\n"):
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            name = value.decode("utf-8", "replace").strip()
        elif field == b"data":
            data.append(value)
    return name, b"\n".join(data) if data else None


def _event_type(event: bytes) -> str | None:
    """An SSE event's type: its ``event:`` field, else its data's ``type``; None for an event
    without data (comments, keep-alives)."""
    name, data = _sse_fields(event)
    if data is None:
        return None
    if name:
        return name
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else ""


_STREAM_ENDS: dict[str, Callable[[], StreamEnd]] = {
    "chat/completions": DoneEnd,
    "responses": ResponseEnd,
}


async def relay(
    proxy: Proxy,
    upstream: httpx.Response,
    *,
    end: StreamEnd | None = None,
    on_response: Callable[[Json], None] | None = None,
) -> AsyncIterator[bytes]:
    """The upstream's stream as it arrives; a failure mid-stream ends it with an SSE error.

    With ``end`` (an SSE stream of a known kind), a stream that stops before its final event
    (``data: [DONE]`` for chat, ``response.completed`` for Responses) was cut (e.g. the
    connection closed without chunked framing, which httpx does not report): it is ended with
    the same SSE error event, never passed off as whole.
    """
    held = b""  # with ``end``: the start of an event not yet whole (_whole_events)
    try:
        async for chunk in upstream.aiter_bytes():
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


def _json_object(content: bytes) -> Json | None:
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _hand_over(on_response: Callable[[Json], None], response: Json | None) -> None:
    if response is not None:
        on_response(response)


def _stream_failed(proxy: Proxy, kind: str, message: str) -> bytes:
    """Count and log a broken upstream stream; the SSE error event that ends the client's."""
    proxy.metrics.upstream_error(kind)
    proxy.log.warning("upstream.stream_failed", kind=kind, error=message)
    error = {"message": message, "type": "upstream_error", "code": f"upstream_{kind}"}
    return f"\n\ndata: {json.dumps({'error': error})}\n\n".encode()
