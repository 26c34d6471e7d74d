"""The proxy's HTTP endpoints: each parses, calls the gate or the upstream, and answers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gatekeeper.decision import Decision, Route
from gatekeeper.interfaces.local_answers import response_id
from gatekeeper.interfaces.proxy.answers import (
    decision_headers,
    local_answer,
    local_responses_answer,
    passthrough_headers,
)
from gatekeeper.interfaces.proxy.errors import Json
from gatekeeper.interfaces.proxy.passthrough import declares_body, passthrough_refusal
from gatekeeper.interfaces.proxy.requests import (
    authorize,
    parse_chat_request,
    parse_request,
    parse_responses_request,
    read_body,
)
from gatekeeper.interfaces.proxy.state import Proxy, proxy_of
from gatekeeper.interfaces.proxy.threads import (
    LOCAL_PREFIX,
    Thread,
    answered,
    input_items,
    local_thread,
    output_text,
    unnamed,
    upstream_payload,
)
from gatekeeper.interfaces.proxy.tool_turns import tool_outputs, tool_results
from gatekeeper.interfaces.proxy.upstream import (
    Passthrough,
    forward_gated,
    forward_passthrough,
    read_answer,
    send_upstream,
)


async def chat_completions(request: Request) -> Response:
    """Gate a chat completion request; forward it or answer it."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    body = await read_body(request, proxy.settings.server.max_body_bytes)
    payload = await parse_request(parse_chat_request, body)
    messages = payload["messages"]
    decision = await proxy.decide(messages, tool_results=tool_results(messages))
    headers = decision_headers(decision)
    if decision.forwarded:
        stream = payload.get("stream") is True
        kept = _unrefused(proxy, payload, "messages")
        sent = body if kept is None else _json_body(kept)
        return await forward_gated(
            proxy, request, sent, path="chat/completions", stream=stream, headers=headers
        )
    return local_answer(payload, _refusal(proxy, decision), headers)


async def responses(request: Request) -> Response:
    """Gate a Responses API request (``input``, ``instructions``); forward it or answer it."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    body = await read_body(request, proxy.settings.server.max_body_bytes)
    payload, messages = await parse_request(parse_responses_request, body)
    previous_id = payload.get("previous_response_id")
    previous = proxy.threads.get(previous_id)
    judged = [*previous.messages, *messages] if previous is not None else messages
    # tool results alone continue the held conversation (judged on its customer turn) or,
    # when none is held, an admitted turn all the same (tool_turns)
    decision = await proxy.decide(judged, tool_results=tool_outputs(payload["input"]))
    headers = decision_headers(decision)
    if decision.forwarded:

        def remember(response: Json) -> None:
            text = output_text(response)
            if text is not None:
                thread = Thread(answered(judged, text))
                proxy.threads.remember(response.get("id"), thread, previous)

        return await forward_gated(
            proxy,
            request,
            _continuable(body, payload, previous, previous_id, _unrefused(proxy, payload, "input")),
            path="responses",
            stream=payload.get("stream") is True,
            headers=headers,
            on_response=remember,
        )
    text = _refusal(proxy, decision)
    ident = response_id()
    # a refusal, not the gate failing (its unavailable reply answers the turn, which stays)
    refused = decision.route is Route.OFF_TOPIC and decision.gate_error is None
    items = input_items(payload["input"])  # as sent: the upstream may be shown them later
    shown = _unrefused_chat(proxy, items) or items
    thread = local_thread(judged, shown, text, previous, previous_id, refused=refused)
    proxy.threads.remember(ident, thread, previous)
    return local_responses_answer(payload, text, headers, ident=ident)


def _continuable(
    body: bytes, payload: Json, previous: Thread | None, previous_id: Any, kept: Json | None
) -> bytes:
    """The body to forward: as sent, unless it continues one of the proxy's own answers, which
    the upstream never saw (see :mod:`gatekeeper.interfaces.proxy.threads`), or ``kept`` (the
    payload without refused turns, :func:`_unrefused`) differs from it."""
    if previous is None and isinstance(previous_id, str) and previous_id.startswith(LOCAL_PREFIX):
        previous = Thread(messages=(), local=True)  # ours but forgotten: continue from nothing
    if previous is not None and previous.local:
        return _json_body(upstream_payload(kept or payload, previous))
    return body if kept is None else _json_body(kept)


def _unrefused(proxy: Proxy, payload: Json, key: str) -> Json | None:
    """``payload`` with the turns the gate refused taken out of its chat ``payload[key]``
    (:func:`_unrefused_chat`), or None when there are none."""
    kept = _unrefused_chat(proxy, payload[key])
    return None if kept is None else {**payload, key: kept}


def _unrefused_chat(proxy: Proxy, chat: Any) -> list[Json] | None:
    """``chat`` as the upstream may see it, or None when that is as sent (or it is no list):
    a Responses ``item_reference`` to one of this process's answers it still holds replaced by
    that answer (a refusal, or a reply:
    :meth:`~gatekeeper.interfaces.proxy.threads.ResponseThreads.resolved`), then without the
    turns the gate refused (:meth:`~gatekeeper.gate.Gatekeeper.without_refused`) unless
    ``server.forward_refused_turns`` keeps them, and the proxy's own output messages given
    back inline without the ids the upstream never stored
    (:func:`~gatekeeper.interfaces.proxy.threads.unnamed`; after the refusals are taken out,
    so that a reference to a refusal taken out still finds it by its id)."""
    if not isinstance(chat, list):
        return None
    kept: list[Any] = proxy.threads.resolved(chat)
    if not proxy.settings.server.forward_refused_turns:
        kept = list(proxy.gate.without_refused(kept))
    kept = unnamed(kept)
    return None if kept == chat else [dict(m) if isinstance(m, dict) else m for m in kept]


def _json_body(payload: Json) -> bytes:
    """A request body rewritten by the proxy (lone surrogates were refused on parsing)."""
    return json.dumps(payload, ensure_ascii=False).encode()


def _refusal(proxy: Proxy, decision: Decision) -> str:
    """The text of a refused or canned request's local answer (and the saved call counted)."""
    if decision.gate_error is None:  # a refusal because the gate failed saves nothing
        proxy.metrics.saved_call()
    return decision.reply or proxy.gate.catalog.off_topic.reply


async def passthrough(request: Request) -> Response:
    """Any other ``/v1/...`` request (embeddings, models/{id}, files, stored responses, ...):
    forwarded with the proxy's key, its body and query string unchanged, the answer streamed
    back, when :mod:`~gatekeeper.interfaces.proxy.passthrough` lets it pass."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    # decoded (/v1/%63ompletions is refused too), as the server received it: request.url.path
    # would drop a %09 or %0A that the upstream receives
    path = str(request.scope["path"]).removeprefix("/v1/")
    raw = request.scope.get("raw_path")  # as sent: %2F in an id stays %2F
    refusal = passthrough_refusal(
        path,
        request.method,
        proxy.settings.server.passthrough,
        raw=raw if isinstance(raw, bytes) else b"",
        query=request.url.query,
        body=declares_body(request.headers),
    )
    if refusal is not None:
        raise refusal
    raw_path = raw.decode("latin-1").removeprefix("/v1/") if isinstance(raw, bytes) else path
    return await forward_passthrough(proxy, request, raw_path)


async def list_models(request: Request) -> Response:
    """The upstream's model list, passed through (read whole: a cut list is a 502) when
    ``server.passthrough`` lists ``models``; refused like any passthrough for a method
    override in the query or a body. Its query string is not forwarded (the list takes
    none)."""
    proxy = proxy_of(request)
    authorize(proxy, request)
    refusal = passthrough_refusal(
        "models",
        "GET",
        proxy.settings.server.passthrough,
        query=request.url.query,
        body=declares_body(request.headers),
    )
    if refusal is not None:
        raise refusal
    with proxy.passthrough_slots.slot():
        try:
            upstream = await send_upstream(
                proxy, "GET", "models", body=None, accept=None, headers={}
            )
        except Passthrough as passthrough:
            return passthrough.response
        content = await read_answer(proxy, upstream, {})
    return Response(
        content, upstream.status_code, headers=passthrough_headers(upstream, {}, proxy.scrub)
    )


async def healthz(request: Request) -> Response:
    """Alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the model is loaded, the collection is reachable and an upstream is set (the
    detail of a failure, hosts and paths, goes to the log, not to an unauthenticated probe)."""
    proxy = proxy_of(request)
    answer, status = await proxy.health.acheck(proxy.readiness)
    return JSONResponse(answer, status_code=status)


async def metrics(request: Request) -> Response:
    """Prometheus metrics (readiness checked first: ``gatekeeper_ready`` is current)."""
    proxy = proxy_of(request)
    await proxy.health.acheck(proxy.readiness)
    proxy.record_serving()  # the catalog may have been followed since the last scrape
    content, media_type = proxy.metrics.render()
    return Response(content, media_type=media_type)
