"""The proxy app factory: lifespan (gate, upstream client), routes, error handlers, middleware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gatekeeper._validation import shown_url
from gatekeeper._version import __version__
from gatekeeper.calibration import refuse_foreign_threshold
from gatekeeper.errors import GatekeeperError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.answers import warm_local_answers
from gatekeeper.interfaces.proxy.browsers import BrowserGuard, loopback
from gatekeeper.interfaces.proxy.disconnects import ClientGone
from gatekeeper.interfaces.proxy.drain import STATE_KEY
from gatekeeper.interfaces.proxy.endpoints import (
    chat_completions,
    healthz,
    list_models,
    metrics,
    passthrough,
    readyz,
    responses,
)
from gatekeeper.interfaces.proxy.errors import (
    Json,
    ProxyError,
    error_response,
    internal_error_response,
)
from gatekeeper.interfaces.proxy.metrics import Metrics
from gatekeeper.interfaces.proxy.middleware import (
    CLIENT_CLOSED_REQUEST,
    BodyDeadline,
    InboundAuth,
    RequestLog,
)
from gatekeeper.interfaces.proxy.state import (
    Proxy,
    build_gate,
    build_upstream_client,
    keep_warm,
    prepare_gate,
)
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings


def create_app(
    settings: Settings,
    *,
    gate: Gatekeeper | None = None,
    upstream_client: httpx.AsyncClient | None = None,
    prepared: bool = False,
) -> FastAPI:
    """The proxy app. The gate is built from ``settings`` at startup unless given, and its model
    loaded then (not again when ``prepared`` says the caller ran :func:`prepare_gate` on it);
    ``upstream_client`` (closed by its owner) replaces the pooled HTTP client."""
    metrics_ = Metrics()
    metrics_.count_failures_from(settings.gate.on_error)
    log = get_logger()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        the_gate = gate
        if the_gate is None:
            the_gate = await asyncio.to_thread(build_gate, settings)
            # never another catalog's threshold, however the app was made (a uvicorn factory)
            refuse_foreign_threshold(settings, "serve", the_gate.catalog.content_hash())
        if gate is None or not prepared:
            # Misconfigured (model, index of another model): refuse to serve, not fail open.
            # Unavailable (Chroma down): logged, served per gate.on_error until it recovers.
            await asyncio.to_thread(prepare_gate, the_gate, settings.gate.on_error, log)
        client = upstream_client or build_upstream_client(settings.upstream)
        proxy = app.state.proxy = Proxy(settings, the_gate, client, metrics_, log)
        proxy.record_serving()
        ready, _ = await asyncio.to_thread(proxy.health.check, proxy.readiness)
        await asyncio.to_thread(_warm, the_gate, search=ready["status"] != "not_ready")
        _log_started(log, settings, ready)
        warmer = asyncio.create_task(keep_warm(app.state.proxy))
        try:
            yield {STATE_KEY: app.state.proxy.drain}  # started by a DrainingServer's shutdown
        finally:
            warmer.cancel()
            app.state.proxy.batcher.close()
            if upstream_client is None:
                await client.aclose()
            if gate is None:  # built here: its Chroma files or HTTP pools are ours to release
                await asyncio.to_thread(the_gate.close)
            log.info("server.stopped")

    app = FastAPI(
        title="gatekeeper", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/responses", responses, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    for path, probe in (("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)):
        # some probes and scrapers check with HEAD
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)
    # Last: every other /v1/ method and path goes through (GET /v1/responses/{id}, embeddings, ...),
    # one route per method so that each has an operation id of its own in /openapi.json.
    for method in _ALL_METHODS:
        app.add_api_route(
            "/v1/{path:path}",
            passthrough,
            methods=[method],
            operation_id=f"passthrough_{method.lower()}",
        )
    _add_error_handlers(app, log)
    server = settings.server
    app.add_middleware(InboundAuth, keys=server.api_keys, public_paths=server.public_paths)
    # outside the key check: a refused browser never reaches it, a preflight carries no key;
    # inside the body's deadline, which closes the connection of a refusal sent before the body
    app.add_middleware(
        BrowserGuard,
        origins=server.allowed_origins,
        hosts=server.allowed_hosts,
        check_host=loopback(server.host),
    )
    app.add_middleware(BodyDeadline, seconds=server.body_timeout, log=log)
    secrets = [k for k in (settings.upstream.api_key, *server.api_keys) if k is not None]
    # outermost: sees every answer
    app.add_middleware(RequestLog, metrics=metrics_, log=log, secrets=secrets)
    return app


_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _warm(gate: Gatekeeper, *, search: bool) -> None:
    """Pay the first request's one-time costs at start-up: the local answers' imports (paid
    by the first refusal on the event loop, they held every request up for ~0.4 s), and with
    ``search`` (a gate that is not down) the first search's read of the build into memory
    (~40 ms for 800 exemplars). No decision is made, logged or counted."""
    warm_local_answers()
    if search:
        with suppress(GatekeeperError):  # failing now: the requests retry, and say so
            gate.store.query(gate.embedder.embed(["warm"]))


def _log_started(log: Any, settings: Settings, ready: Json) -> None:
    """``server.started``, with the status ``/readyz`` answers (a warning unless ready)."""
    base = settings.upstream.base_url
    upstream = shown_url(base) if base else None
    if upstream is None:
        log.warning(
            "server.no_upstream",
            hint="set GATEKEEPER_UPSTREAM__BASE_URL (/readyz answers 503 until then)",
        )
    if not settings.server.api_keys and not loopback(settings.server.host):
        log.warning(
            "server.open",
            host=settings.server.host,
            hint="no inbound key (server.api_keys): anyone who reaches this port uses the "
            "upstream on the proxy's key; set GATEKEEPER_SERVER__API_KEYS",
        )
    said = log.info if ready["status"] == "ready" else log.warning
    said(
        "server.started",
        status=ready["status"],
        **({"reason": ready["reason"]} if "reason" in ready else {}),
        upstream=upstream,
        inbound_auth=bool(settings.server.api_keys),
        shadow=settings.gate.shadow,
        on_error=settings.gate.on_error,
        # what is served: an inherited GATEKEEPER_CATALOG beats the file's `catalog:`
        config=str(settings.source_file) if settings.source_file is not None else None,
        catalog=str(settings.catalog),
        store=f"{settings.store.host}:{settings.store.port}" if settings.store.host else "embedded",
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

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client closed the connection mid-request, or sent a body the server could not
        # parse (uvicorn then drops the connection): the client's doing, not a bug. Nobody is
        # left to read the answer; 499 (nginx's "client closed request") is for the log and
        # the metrics.
        log.info("http.client_disconnected", path=request.url.path, method=request.method)
        # gone while the upstream answered: with the decision's headers, for the log line
        headers = exc.headers if isinstance(exc, ClientGone) else None
        return Response(status_code=CLIENT_CLOSED_REQUEST, headers=headers)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error(
            "server.internal_error",
            path=request.url.path,
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        return internal_error_response()

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, internal_error)
