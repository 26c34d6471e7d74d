"""The proxy's HTTP endpoints: each parses, calls the gate or the upstream, and answers."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gatekeeper.errors import (
    GatekeeperError,
)
from gatekeeper.interfaces.proxy.answers import decision_headers, local_answer, passthrough_headers
from gatekeeper.interfaces.proxy.requests import authorize, parse_chat_request, read_body
from gatekeeper.interfaces.proxy.state import proxy_of
from gatekeeper.interfaces.proxy.upstream import (
    Passthrough,
    forward_chat,
    read_answer,
    send_upstream,
)


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
    except Passthrough as passthrough:
        return passthrough.response
    content = await read_answer(proxy, upstream, {})
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
