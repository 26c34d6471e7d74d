"""The OpenAI-compatible gating proxy (``gatekeeper serve``).

Point a chatbot's ``base_url`` at the proxy and it keeps working, minus the off-topic calls:

``POST /v1/chat/completions``
    The gate decides the request's ``messages`` (the last user turn, read with the turns before
    it). Admitted requests are forwarded to ``upstream.base_url`` with the raw body unchanged and
    the proxy's own upstream key; the upstream's answer comes back unchanged (streams chunk by
    chunk). Off-topic and canned requests get a locally built ``chat.completion`` (or, with
    ``stream: true``, ``chat.completion.chunk`` events ending in ``data: [DONE]``). Every answer
    carries ``x-gatekeeper-route``, ``x-gatekeeper-intent`` and ``x-gatekeeper-score``.
``GET /v1/models``
    Passed through to the upstream.
``GET /healthz`` · ``GET /readyz`` · ``GET /metrics``
    Alive; model loaded and collection reachable; Prometheus text (see :mod:`gatekeeper.metrics`).

Forwarding uses ``httpx`` rather than the ``openai`` client: the body goes upstream byte for byte
(tools, vendor fields and all, nothing re-serialised), and the answer's bytes, status and SSE
events come back as the upstream sent them.

Errors are OpenAI-style bodies ``{"error": {"message", "type", "code"}}``:

====  ===================================================================================
401   ``server.api_keys`` set and the request's ``Authorization: Bearer`` key missing/wrong
400   body is not JSON; the judged user message is empty or over ``gate.max_message_chars``
413   body over ``server.max_body_bytes``
422   JSON of the wrong shape: no ``messages``, wrong types
502   upstream unreachable, answered 5xx, or refused the proxy's key (other 4xx pass through)
504   upstream timed out (``upstream.timeout``)
500   a bug: logged, answered with a generic body, never a traceback
====  ===================================================================================

When the gate itself fails (model or Chroma), ``gate.on_error`` decides: ``fail_open`` forwards,
``fail_closed`` refuses; both are counted. With ``gate.shadow`` every request is decided, logged
and counted, then forwarded.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from gatekeeper.backends import local_chunks, local_completion
from gatekeeper.batching import DecisionBatcher
from gatekeeper.decision import Decision
from gatekeeper.errors import (
    EmbeddingError,
    EmptyMessageError,
    GatekeeperError,
    IndexMismatchError,
    IndexMissingError,
    InputError,
    MessageTooLongError,
    ModelNotFoundError,
    StoreError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.logging import get_logger
from gatekeeper.metrics import Metrics
from gatekeeper.settings import Settings, UpstreamSettings

GRACEFUL_SHUTDOWN_SECONDS = 30.0
KNOWN_PATHS = frozenset({"/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"})
#: Upstream answer headers never passed back: hop-by-hop, or recomputed by this server.
_DROP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
    }
)

Json = dict[str, Any]


# -- errors -----------------------------------------------------------------------------------


class ProxyError(Exception):
    """An answer with an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.kind, self.headers)


def error_response(
    status: int,
    message: str,
    code: str,
    kind: str = "invalid_request_error",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """``{"error": {"message", "type", "code"}}`` with ``status``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _upstream_failure(
    status: int, message: str, code: str, headers: Mapping[str, str]
) -> ProxyError:
    return ProxyError(status, message, code=code, kind="upstream_error", headers=headers)


# -- the proxy's state --------------------------------------------------------------------------


@dataclass
class Proxy:
    """What the handlers share; built in the app's lifespan."""

    settings: Settings
    gate: Gatekeeper
    client: httpx.AsyncClient
    metrics: Metrics
    log: Any = field(default_factory=get_logger)
    batcher: DecisionBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = DecisionBatcher(self.gate, on_error=self.settings.gate.on_error)

    def upstream_url(self, path: str, headers: Mapping[str, str]) -> str:
        base = self.settings.upstream.base_url
        if not base:
            raise _upstream_failure(
                502,
                "no upstream is configured: set GATEKEEPER_UPSTREAM__BASE_URL",
                "upstream_not_configured",
                headers,
            )
        return f"{base.rstrip('/')}/{path}"

    def upstream_headers(self, accept: str | None) -> dict[str, str]:
        """Headers sent upstream: the proxy's own key, never the client's."""
        headers = {
            "content-type": "application/json",
            "accept": accept or "application/json",
            "accept-encoding": "identity",
        }
        key = self.settings.upstream.api_key
        if key is not None and key.get_secret_value():
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return headers

    async def decide(self, messages: Any) -> Decision:
        """The gate's decision on ``messages``; input mistakes become 4xx."""
        policy = self.settings.gate.on_error
        started = time.perf_counter()
        try:
            # Concurrent requests share forward passes (see gatekeeper.batching).
            decision = await self.batcher.decide(messages)
        except EmptyMessageError as exc:
            raise ProxyError(400, str(exc), code="empty_message") from exc
        except MessageTooLongError as exc:
            raise ProxyError(400, str(exc), code="message_too_long") from exc
        except InputError as exc:
            raise ProxyError(422, str(exc), code="invalid_messages") from exc
        if self.settings.gate.shadow and not decision.shadow:  # the proxy's own setting
            decision = decision.model_copy(update={"shadow": True})
        self.metrics.observe_decision(
            decision, seconds=time.perf_counter() - started, policy=policy
        )
        return decision

    def readiness(self) -> Json:
        """Model loaded and collection reachable (blocking: run in a thread)."""
        self.gate.ready()
        info = self.gate.store.info()
        if info is None:
            raise IndexMissingError.for_collection(self.gate.store.name)
        return {
            "status": "ready",
            "collection": info.collection,
            "model": info.model,
            "exemplars": info.count,
        }


def proxy_of(request: Request) -> Proxy:
    state: Proxy = request.app.state.proxy
    return state


def build_upstream_client(settings: UpstreamSettings) -> httpx.AsyncClient:
    """The pooled HTTP client used to reach the upstream (connect failures retried)."""
    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    transport = httpx.AsyncHTTPTransport(retries=settings.max_retries)
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, transport=transport, limits=limits)


# -- request checks -----------------------------------------------------------------------------


def authorize(proxy: Proxy, request: Request) -> None:
    """401 unless the request carries one of ``server.api_keys`` (when any are configured)."""
    keys = proxy.settings.server.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ProxyError(
            401,
            "missing API key: send it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    given = token.encode()
    if not any(hmac.compare_digest(given, k.get_secret_value().encode()) for k in keys):
        raise ProxyError(
            401, "incorrect API key", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is longer than ``limit`` bytes."""
    too_large = ProxyError(
        413,
        f"the request body is larger than {limit} bytes (server.max_body_bytes)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_chat_request(body: bytes) -> Json:
    """The JSON of a chat request, checked for the shape the gate needs."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProxyError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(payload, dict):
        raise ProxyError(422, "the request body must be a JSON object", code="invalid_type")
    if "messages" not in payload:
        raise ProxyError(
            422, "missing required parameter: 'messages'", code="missing_required_parameter"
        )
    check_messages(payload["messages"])
    if "stream" in payload and not isinstance(payload["stream"], bool | None):
        raise ProxyError(422, "'stream' must be a boolean", code="invalid_type")
    n = payload.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise ProxyError(422, "'n' must be an integer from 1 to 128", code="invalid_value")
    return payload


def check_messages(messages: Any) -> None:
    """422 unless ``messages`` is a non-empty list of ``{"role": str, "content": ...}``."""
    if not isinstance(messages, list) or not messages:
        raise ProxyError(
            422, "'messages' must be a non-empty list of chat messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProxyError(
                422, f"messages[{i}] must be an object with a string 'role'", code="invalid_type"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ProxyError(
                422,
                f"messages[{i}].content must be a string or a list of content parts",
                code="invalid_type",
            )


# -- answers ------------------------------------------------------------------------------------


def _header_value(value: str) -> str:
    return quote(value, safe=" !#$%&'()*+,-./:;<=>?@[]^_`{|}~") if not value.isascii() else value


def decision_headers(decision: Decision) -> dict[str, str]:
    """``x-gatekeeper-*`` headers of a decision (no customer text)."""
    headers = {
        "x-gatekeeper-route": decision.route.value,
        "x-gatekeeper-intent": _header_value(decision.intent or "none"),
        "x-gatekeeper-score": f"{decision.score:.4f}",
        "x-gatekeeper-threshold": f"{decision.threshold:.4f}",
    }
    if decision.shadow:
        headers["x-gatekeeper-shadow"] = "true"
    if decision.gate_error:
        headers["x-gatekeeper-gate-error"] = decision.gate_error
    if decision.message_id:
        headers["x-gatekeeper-message-id"] = decision.message_id
    return headers


def local_answer(payload: Json, text: str, headers: dict[str, str]) -> Response:
    """The gate's own answer: a ``chat.completion`` or an SSE stream of chunks."""
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    n = payload.get("n") or 1
    if payload.get("stream"):
        options = payload.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = local_chunks(text, model=model, n=n, include_usage=usage)
        events = [f"data: {c.model_dump_json(exclude_unset=True)}\n\n" for c in chunks]
        events.append("data: [DONE]\n\n")
        return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)
    completion = local_completion(text, model=model, n=n)
    return JSONResponse(completion.model_dump(mode="json", exclude_unset=True), headers=headers)


async def _iterate(items: list[str]) -> AsyncIterator[bytes]:
    for item in items:
        yield item.encode()


def passthrough_headers(upstream: httpx.Response, extra: Mapping[str, str]) -> dict[str, str]:
    """The upstream answer's end-to-end headers, plus ``extra``."""
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_HEADERS}
    headers.update(extra)
    return headers


# -- forwarding ---------------------------------------------------------------------------------


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
        raise _timeout(proxy, exc, headers) from exc
    except httpx.HTTPError as exc:
        proxy.metrics.upstream_error("unavailable")
        proxy.log.warning("upstream.unavailable", error=type(exc).__name__, path=path)
        raise _upstream_failure(
            502,
            f"cannot reach the upstream LLM endpoint ({type(exc).__name__})",
            "upstream_unavailable",
            headers,
        ) from exc
    if response.status_code >= 400:
        await _raise_for_upstream_status(proxy, response, headers)
    return response


def _timeout(proxy: Proxy, exc: Exception, headers: Mapping[str, str]) -> ProxyError:
    proxy.metrics.upstream_error("timeout")
    proxy.log.warning("upstream.timeout", error=type(exc).__name__)
    return _upstream_failure(
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
        raise _upstream_failure(
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
        raise _upstream_failure(
            502,
            f"the upstream LLM endpoint answered HTTP {status}" + (f": {detail}" if detail else ""),
            "upstream_error",
            headers,
        )
    proxy.metrics.upstream_error("status_4xx")
    raise _Passthrough(Response(body, status, headers=passthrough_headers(response, headers)))


class _Passthrough(Exception):
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
    except _Passthrough as passthrough:
        return passthrough.response
    out_headers = passthrough_headers(upstream, headers)
    if not stream:
        try:
            content = await upstream.aread()
        except httpx.TimeoutException as exc:
            raise _timeout(proxy, exc, headers) from exc
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


# -- endpoints ----------------------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    """Gate a chat completion request; forward it or answer it."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    body = await read_body(request, proxy.settings.server.max_body_bytes)
    payload = parse_chat_request(body)
    decision = await proxy.decide(payload["messages"])
    headers = decision_headers(decision)
    if decision.forwarded:
        return await forward_chat(
            proxy, request, body, stream=payload.get("stream") is True, headers=headers
        )
    if decision.gate_error is None:  # a refusal because the gate failed saves nothing
        proxy.metrics.saved_call()
    reply = decision.reply or proxy.gate.catalog.off_topic.reply
    return local_answer(payload, reply, headers)


async def list_models(request: Request) -> Response:
    """The upstream's model list, passed through."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    try:
        upstream = await send_upstream(proxy, "GET", "models", body=None, accept=None, headers={})
    except _Passthrough as passthrough:
        return passthrough.response
    try:
        content = await upstream.aread()
    except httpx.TimeoutException as exc:
        raise _timeout(proxy, exc, {}) from exc
    finally:
        await upstream.aclose()
    return Response(content, upstream.status_code, headers=passthrough_headers(upstream, {}))


async def healthz(request: Request) -> Response:
    """Alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the model is loaded and the collection is reachable."""
    proxy = proxy_of(request)
    try:
        ready = await asyncio.to_thread(proxy.readiness)
    except GatekeeperError as exc:
        # The detail (hosts, paths) goes to the log, not to an unauthenticated probe.
        proxy.log.warning("server.not_ready", error=str(exc), error_type=type(exc).__name__)
        return JSONResponse({"status": "not_ready", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse(ready)


async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    content, media_type = proxy_of(request).metrics.render()
    return Response(content, media_type=media_type)


# -- the app ------------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    gate: Gatekeeper | None = None,
    upstream_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    """The proxy app. The gate is built from ``settings`` at startup unless given, and its model
    loaded then; ``upstream_client`` (closed by its owner) replaces the pooled HTTP client."""
    metrics_ = Metrics()
    log = get_logger()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_gate = gate
        if the_gate is None:
            the_gate = await asyncio.to_thread(Gatekeeper.from_settings, settings)
        try:
            await asyncio.to_thread(the_gate.ready)
        except (IndexMismatchError, ModelNotFoundError):
            raise  # misconfigured, not unavailable: refuse to serve rather than fail open
        except (EmbeddingError, StoreError) as exc:
            log.error(
                "gate.not_ready",
                error=str(exc),
                error_type=type(exc).__name__,
                policy=settings.gate.on_error,
            )
        client = upstream_client or build_upstream_client(settings.upstream)
        app.state.proxy = Proxy(settings, the_gate, client, metrics_, log)
        _log_ready(log, settings)
        try:
            yield
        finally:
            if upstream_client is None:
                await client.aclose()
            log.info("server.stopped")

    app = FastAPI(
        title="gatekeeper", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    _add_error_handlers(app, log)
    app.add_middleware(RequestLog, metrics=metrics_, log=log)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gatekeeper")
    except PackageNotFoundError:
        return "0"


def _log_ready(log: Any, settings: Settings) -> None:
    base = settings.upstream.base_url
    upstream = str(httpx.URL(base).copy_with(username=None, password=None)) if base else None
    if upstream is None:
        log.warning("server.no_upstream", hint="set GATEKEEPER_UPSTREAM__BASE_URL")
    log.info(
        "server.ready",
        upstream=upstream,
        inbound_auth=bool(settings.server.api_keys),
        shadow=settings.gate.shadow,
        on_error=settings.gate.on_error,
    )


def _add_error_handlers(app: FastAPI, log: Any) -> None:
    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return error_response(exc.status_code, str(exc.detail), code, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        return error_response(422, str(exc), "invalid_request")

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error(
            "server.internal_error",
            path=request.url.path,
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        return _internal_error_response()

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def _internal_error_response() -> JSONResponse:
    return error_response(
        500, "internal error in the gatekeeper proxy (logged)", "internal_error", "server_error"
    )


Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]


class RequestLog:
    """ASGI middleware: one ``http.request`` log event and count per answer (no bodies), and a
    generic 500 body for anything that escaped every handler."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, metrics: Metrics, log: Any
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log

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
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:
            self.log.error(
                "server.internal_error",
                path=scope.get("path"),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            if "status" in seen:
                raise
            await _internal_error_response()(scope, receive, recording_send)
        path = scope.get("path", "")
        status = int(seen.get("status", 500))
        self.metrics.answered(path if path in KNOWN_PATHS else "other", status)
        self.log.info(
            "http.request",
            method=scope.get("method"),
            path=path,
            status=status,
            route=seen.get("route"),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _header(message: AsgiMessage, name: bytes) -> str | None:
    for key, value in message.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


# -- running ------------------------------------------------------------------------------------


def run_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    graceful_shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
) -> None:
    """Serve the proxy with uvicorn until SIGINT/SIGTERM; in-flight requests then get up to
    ``graceful_shutdown_seconds`` to finish."""
    import uvicorn

    host = host or settings.server.host
    port = port or settings.server.port
    # Configuration mistakes (catalog, model, an index of another model) stop the server here,
    # with the library's own error, before it listens: never a proxy that forwards everything.
    gate = Gatekeeper.from_settings(settings)
    gate.ready()
    config = uvicorn.Config(
        create_app(settings, gate=gate),
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_shutdown_seconds),
    )
    get_logger().info("server.starting", host=host, port=port)
    uvicorn.Server(config).run()


__all__ = ["ProxyError", "create_app", "run_server"]
