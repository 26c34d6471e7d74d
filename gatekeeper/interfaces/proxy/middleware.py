"""ASGI middleware: one log event and one metrics count per answer, a last-resort 500, the
inbound key check on every non-public path, and the deadline of a request's body."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import anyio
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from gatekeeper.interfaces.proxy.drain import ENDED_KEY
from gatekeeper.interfaces.proxy.errors import error_response, internal_error_response
from gatekeeper.interfaces.proxy.metrics import Metrics, path_label
from gatekeeper.interfaces.proxy.passthrough import declares_body
from gatekeeper.interfaces.proxy.requests import key_refusal
from gatekeeper.interfaces.proxy.scrubbing import MIN_SCRUBBED
from gatekeeper.interfaces.proxy.upstream import UpstreamBodyBroken

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone before its answer
#: How an answer begun as a 200 ended when the client left before its end (a stream).
CLIENT_GONE = "client_disconnected"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_KEY_LIKE = re.compile(r"(?i)sk-")

Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]


class RequestLog:
    """ASGI middleware: one ``http.request`` log event and count per answer (no bodies), and a
    generic 500 body for anything that escaped every handler."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        metrics: Metrics,
        log: Any,
        secrets: Sequence[SecretStr] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log
        self.secrets = list(secrets)  # never logged as a request id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {}

        async def recording_send(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["route"] = _header(message, b"x-gatekeeper-route")
                seen["message_id"] = _header(message, b"x-gatekeeper-message-id")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                seen["sent"] = True
            await send(message)

        async def recording_receive() -> AsgiMessage:
            message = await receive()
            if message["type"] == "http.disconnect" and "status" in seen and "sent" not in seen:
                seen["gone"] = True  # in the middle of its answer (a stream): a 499, not a 200
            return message

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, recording_receive, recording_send)
        except ClientDisconnect:  # escaped the handlers (e.g. mid-answer): still the client's
            self.log.info("http.client_disconnected", path=scope.get("path"))
            seen.setdefault("status", CLIENT_CLOSED_REQUEST)
        except asyncio.CancelledError:
            # The server's graceful-shutdown time ran out with this request in flight (uvicorn
            # cancels it): a 503 the client can retry elsewhere, not uvicorn's plain-text 500
            # and a traceback in the JSON log. Not re-raised: nothing is left to cancel.
            self.log.warning("server.request_cancelled", path=scope.get("path"))
            if "status" not in seen:
                await error_response(
                    503,
                    "the gatekeeper proxy is shutting down; retry the request",
                    "server_shutting_down",
                    "server_error",
                )(scope, receive, recording_send)
        except UpstreamBodyBroken:
            # A passed-through answer broke off mid-body (logged and counted where it broke).
            # Returning with the answer unfinished makes the server close the connection, so
            # the client sees a cut answer, never a short one passed off as whole (no
            # traceback: not a bug).
            pass
        except Exception as exc:
            self.log.error(
                "server.internal_error",
                path=scope.get("path"),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            if "status" in seen:
                raise
            await internal_error_response()(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
        self._log_request(scope, seen, started)

    def _log_request(self, scope: Scope, seen: dict[str, Any], started: float) -> None:
        path = scope.get("path", "")
        status = int(seen.get("status", 500))
        # an answer begun as a 200 that the shutdown's cutoff ended (a stream), or that the
        # client left before its end: its outcome
        ended = scope.get(ENDED_KEY)
        if ended is None and seen.get("gone"):
            ended = CLIENT_GONE
            self.log.info("http.client_disconnected", path=path, during="answer")
        if ended is not None:
            status = CLIENT_CLOSED_REQUEST if ended == CLIENT_GONE else 503
        self.metrics.answered(path_label(path), status)
        self.log.info(
            "http.request",
            method=scope.get("method"),
            path=path,
            status=status,
            **({"ended": ended} if ended is not None else {}),
            route=seen.get("route"),
            # joins this line with the decision's gate.decided line
            message_id=seen.get("message_id"),
            request_id=request_id(scope, self.secrets),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def request_id(scope: Scope, secrets: Sequence[SecretStr] = ()) -> str | None:
    """The client's (or load balancer's) ``x-request-id``, when it looks like an id (at most
    128 letters, digits and ``.-_:``): logged, so a request can be followed across systems.
    Anything else is not logged (it could carry anything), nor a value shaped like an API key
    (``sk-...``), nor one holding one of ``secrets`` (the inbound keys and the upstream key) or
    a long piece of one: a client that put its key in the wrong header."""
    value = _header(scope, b"x-request-id")
    if value is None or not _REQUEST_ID.fullmatch(value) or _KEY_LIKE.match(value):
        return None
    if any(_holds_secret(value, secret.get_secret_value()) for secret in secrets):
        return None
    return value


def _holds_secret(value: str, secret: str) -> bool:
    """Whether ``value`` holds ``secret``, or is a piece of it of :data:`MIN_SCRUBBED` characters
    or more (an empty secret is none)."""
    if not secret:
        return False
    return secret in value or (len(value) >= MIN_SCRUBBED and value in secret)


def _header(message: AsgiMessage | Scope, name: bytes) -> str | None:
    for key, value in message.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class InboundAuth:
    """ASGI middleware: with ``server.api_keys`` set, every path but ``public_paths`` needs a
    key, including ``/metrics``, ``/readyz`` and ``/openapi.json`` (the API endpoints check it
    again themselves, so they are never public)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        keys: Sequence[SecretStr],
        public_paths: Iterable[str],
    ) -> None:
        self.app = app
        self.keys = list(keys)
        self.public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope.get("path") not in self.public:
            refusal = key_refusal(self.keys, _header(scope, b"authorization"))
            if refusal is not None:
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyDeadline:
    """ASGI middleware: a request's body must arrive whole within ``seconds`` of the request's
    start, its headers (``server.body_timeout``); else the request is answered 408 in the
    proxy's error JSON and its connection closed, and the handler reading the body (a gated
    request's, or a passed-through one's on its way upstream) is cancelled. So a client
    trickling its body (slowloris) holds a connection, and a passthrough slot, that long at
    most. The deadline ends once the body is whole, the client has gone or the answer has begun;
    an answer begun before the body is whole (a 401, a 413 on the declared length) closes the
    connection once sent, so the rest of the body cannot keep it open either. A request that
    announces no body (no ``content-length``, or 0, and no ``transfer-encoding``) has none."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, seconds: float, log: Any
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not declares_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        answered = whole = False
        with anyio.move_on_after(self.seconds) as deadline:

            async def receiving() -> AsgiMessage:
                nonlocal whole
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    deadline.deadline = math.inf  # the body is whole, or the client gone
                    whole = True
                return message

            async def sending(message: AsgiMessage) -> None:
                nonlocal answered
                if message["type"] == "http.response.start":
                    deadline.deadline = math.inf
                    answered = True
                    if not whole:  # closed once answered: the rest cannot keep it open
                        message = with_headers(message, {"connection": "close"})
                await send(message)

            await self.app(scope, receiving, sending)
        if deadline.cancelled_caught and not answered:
            self.log.warning("http.body_timeout", path=scope.get("path"), seconds=self.seconds)
            await error_response(
                408,
                f"the request body did not arrive whole within {self.seconds:g} s "
                "(server.body_timeout)",
                "request_timeout",
                headers={"connection": "close"},
            )(scope, receive, send)


def with_headers(start: AsgiMessage, extra: dict[str, str]) -> AsgiMessage:
    """An ``http.response.start`` with the headers ``extra`` set (any of those names it had,
    replaced)."""
    names = {name.lower().encode() for name in extra}
    kept = [(k, v) for k, v in start.get("headers", []) if bytes(k).lower() not in names]
    added = [(k.encode(), v.encode("latin-1")) for k, v in extra.items()]
    return {**start, "headers": [*kept, *added]}
