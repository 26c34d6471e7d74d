"""Answers the proxy builds itself: decision headers, local chat completions and chunk streams,
local Responses API responses and event streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import quote

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from gatekeeper.decision import Decision
from gatekeeper.interfaces.local_answers import (
    local_chunks,
    local_completion,
    local_response,
    local_response_events,
    structured,
)
from gatekeeper.interfaces.proxy.errors import HOP_BY_HOP, Json

#: Upstream answer headers never passed back: hop-by-hop, recomputed by this server, or the
#: operator's own (a cookie for the proxy's client; the OpenAI organization and project the
#: upstream key belongs to, which are the operator's account, not the customer's business).
_DROP_HEADERS = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "date",
    "server",
    "set-cookie",
    "openai-organization",
    "openai-project",
}


#: Upstream answer headers by prefix never passed back: the proxy's own
#: (:func:`decision_headers`), and CORS (which browser origins may read an answer is the
#: proxy's to say: :mod:`.browsers`).
_NOT_RELAYED_PREFIXES = ("x-gatekeeper-", "access-control-")


def _header_value(value: str) -> str:
    """An intent name as a header value: as written when it is printable ASCII without a
    ``%``, else percent-encoded (UTF-8, ``%`` too), so a name with a line break (a spreadsheet
    cell) or another control character can never break or forge a header, and
    ``urllib.parse.unquote`` gives every name back exactly."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~")


def decision_headers(decision: Decision) -> dict[str, str]:
    """``x-gatekeeper-*`` headers of a decision (no customer text)."""
    headers = {
        "x-gatekeeper-route": decision.route.value,
        "x-gatekeeper-intent": _header_value(decision.intent or "none"),
        "x-gatekeeper-score": f"{decision.score:.4f}",
        "x-gatekeeper-threshold": f"{decision.threshold:.4f}",
    }
    if decision.nearest_intent and decision.nearest_intent != decision.intent:
        # a refused message's nearest in-domain intent, apart: dashboards count intent=none
        headers["x-gatekeeper-nearest-intent"] = _header_value(decision.nearest_intent)
    if decision.followup:
        headers["x-gatekeeper-followup"] = "true"
    if decision.shadow:
        headers["x-gatekeeper-shadow"] = "true"
    if decision.gate_error:
        headers["x-gatekeeper-gate-error"] = decision.gate_error
    if decision.message_id:
        headers["x-gatekeeper-message-id"] = decision.message_id
    return headers


def local_answer(payload: Json, text: str, headers: dict[str, str]) -> Response:
    """The gate's own answer: a ``chat.completion`` or an SSE stream of chunks (a refusal
    under a structured ``response_format``: :mod:`gatekeeper.interfaces.local_answers`)."""
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    n = payload.get("n") or 1
    refusal = structured(payload.get("response_format"))
    if payload.get("stream"):
        options = payload.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = local_chunks(text, model=model, n=n, include_usage=usage, refusal=refusal)
        events = [f"data: {c.model_dump_json(exclude_unset=True)}\n\n" for c in chunks]
        events.append("data: [DONE]\n\n")
        return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)
    completion = local_completion(text, model=model, n=n, refusal=refusal)
    return JSONResponse(completion.model_dump(mode="json", exclude_unset=True), headers=headers)


def local_responses_answer(
    payload: Json, text: str, headers: dict[str, str], *, ident: str | None = None
) -> Response:
    """The gate's own answer to a Responses API request: a ``response`` object, or with
    ``stream: true`` its SSE events (``event: <type>`` and ``data: <event>``), from
    ``response.created`` to ``response.completed``."""
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    instructions = (
        payload.get("instructions") if isinstance(payload.get("instructions"), str) else None
    )
    options = payload.get("text")
    refusal = isinstance(options, Mapping) and structured(options.get("format"))
    echo = _tool_fields(payload)
    if payload.get("stream"):
        events = [
            f"event: {e.type}\ndata: {_event_data(e, echo)}\n\n"
            for e in local_response_events(
                text, model=model, instructions=instructions, ident=ident, refusal=refusal
            )
        ]
        return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)
    response = local_response(
        text, model=model, instructions=instructions, ident=ident, refusal=refusal
    )
    return JSONResponse(
        {**response.model_dump(mode="json", exclude_unset=True), **echo}, headers=headers
    )


def _tool_fields(payload: Json) -> Json:
    """The request's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` that a local
    ``response`` echoes, as the API echoes request fields (those given with the type the API
    takes; the others keep the object's defaults: no tools, ``auto``, ``true``)."""
    wanted = {"tools": list, "tool_choice": str | dict, "parallel_tool_calls": bool}
    return {key: payload[key] for key, kind in wanted.items() if isinstance(payload.get(key), kind)}


def _event_data(event: BaseModel, echo: Json) -> str:
    """A local stream event's JSON, the ``response`` it carries (if any) echoing ``echo``."""
    if not echo or not isinstance(getattr(event, "response", None), BaseModel):
        return event.model_dump_json(exclude_unset=True)
    data = event.model_dump(mode="json", exclude_unset=True)
    data["response"].update(echo)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def warm_local_answers() -> None:
    """Build (and drop) one local answer of each shape: chat and Responses, whole and
    streamed, text and refusal. Their modules (``openai.types``, loaded lazily so that
    ``import gatekeeper`` stays light) then load at start-up: loaded by the first refused or
    canned request of a serving process, on its event loop, they held up every other request
    for ~0.4 s."""
    for response_format in (None, {"type": "json_object"}):
        for stream in (False, True):
            chat = {"stream": stream, "response_format": response_format}
            local_answer({**chat, "stream_options": {"include_usage": True}}, "-", {})
            local_responses_answer({"stream": stream, "text": {"format": response_format}}, "-", {})


async def _iterate(items: list[str]) -> AsyncIterator[bytes]:
    for item in items:
        yield item.encode()


def passthrough_headers(
    upstream: httpx.Response, extra: Mapping[str, str], scrub: Callable[[bytes], bytes]
) -> dict[str, str]:
    """The upstream answer's end-to-end headers, each ``scrub``-bed of the proxy's keys (an
    upstream that echoes the ``Authorization`` it got), plus ``extra``.

    Values are relayed as the bytes received (held as Latin-1 text, which the server encodes
    back to the same bytes): a UTF-8 value (``café``) is passed on, never a 500. Headers named
    ``x-gatekeeper-*`` are the proxy's own (its decision, read by its request log too): an
    upstream's are dropped, never passed off as the gate's, and so are its ``access-control-*``
    (CORS) headers. A name given more than once is passed on once, its values joined by
    ``, `` (as ``httpx`` reads them)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in upstream.headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name in _DROP_HEADERS or name.startswith(_NOT_RELAYED_PREFIXES):
            continue
        value = scrub(raw_value).decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    headers.update(extra)
    return headers
