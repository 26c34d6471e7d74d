"""The proxy as a drop-in for more of the OpenAI API, in-process (like test_proxy_app.py):
``POST /v1/responses`` gated like chat completions, and every other ``/v1/...`` request passed
through to the upstream with the proxy's key."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.stream_ends import ResponseEnd
from gatekeeper.server_settings import ServerSettings
from gatekeeper.settings import load_settings
from tests.support.fake_upstream import CutStream, FakeUpstream, sse_answer
from tests.support.proxy import (
    CLIENT_KEY,
    OFF_TOPIC_REPLY,
    raw_call,
    running_app,
    sdk,
    serving,
    status_of,
)

REFUSAL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


async def post(client: httpx.AsyncClient, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/v1/responses", content=content, headers={"content-type": "application/json"}
    )


def upstream_response(text: str = "echo") -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "m",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def responses_sse(*types: str, named: bool = True, eol: str = "\n") -> bytes:
    """A Responses API stream of events of ``types`` (with ``event:`` lines unless not
    ``named``; the data carries ``type`` either way)."""
    out = []
    for n, kind in enumerate(types):
        data = json.dumps({"type": kind, "sequence_number": n})
        lines = ([f"event: {kind}"] if named else []) + [f"data: {data}"]
        out.append(eol.join(lines) + eol + eol)
    return "".join(out).encode()


# -- 1. POST /v1/responses ------------------------------------------------------------------------


async def test_refused_response_parses_in_the_openai_client(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An off-topic input gets a local ``response`` whose output_text is the refusal, with the
    decision headers; the upstream sees nothing."""
    raw = await sdk(client).responses.with_raw_response.create(model="m", input="tell me a joke")
    assert raw.headers["x-gatekeeper-route"] == "off_topic"
    response = raw.parse()
    assert response.output_text == OFF_TOPIC_REPLY
    assert response.status == "completed" and response.model == "m"
    assert upstream.requests == []


async def test_refused_stream_is_a_valid_event_sequence(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """With stream=True the refusal is the Responses event sequence, parsed by the client."""
    stream = await sdk(client).responses.create(
        model="m", input=[{"role": "user", "content": "tell me a joke"}], stream=True
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == REFUSAL_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(REFUSAL_EVENTS)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == OFF_TOPIC_REPLY
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == OFF_TOPIC_REPLY
    assert upstream.requests == []


async def test_canned_intent_is_answered_locally(client: httpx.AsyncClient) -> None:
    """A canned intent (greeting) gets its own reply as a local response."""
    raw = await sdk(client).responses.with_raw_response.create(model="m", input="hello")
    assert raw.headers["x-gatekeeper-route"] == "canned"
    assert raw.parse().output_text == "Hello! How can I help?"


async def test_admitted_response_request_is_forwarded_byte_for_byte(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An in-domain input (message items with input_text parts) reaches upstream/responses
    exactly as sent, with the proxy's key; the upstream's answer comes back."""
    upstream.handler = lambda request: httpx.Response(200, json=upstream_response("on its way"))
    body = (
        b'{"model":"m", "instructions":"be brief","input":[{"type":"message","role":"user",'
        b'"content":[{"type":"input_text","text":"where is my order"}]}],"x_vendor":1}'
    )
    response = await post(client, body)
    assert response.status_code == 200
    assert response.headers["x-gatekeeper-route"] == "llm"
    assert response.json()["output"][0]["content"][0]["text"] == "on its way"
    [sent] = upstream.requests
    assert sent.url.path == "/v1/responses" and sent.content == body
    assert sent.headers["authorization"] == "Bearer sk-upstream-key"


async def test_instructions_are_not_a_user_turn(client: httpx.AsyncClient) -> None:
    """``instructions`` is a system prompt: an in-domain one does not admit an off-topic input."""
    response = await post(
        client, {"model": "m", "instructions": "where is my order", "input": "tell me a joke"}
    )
    assert response.headers["x-gatekeeper-route"] == "off_topic"


async def test_text_under_an_unknown_part_type_is_judged(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An input part of an unknown type that carries text is judged (it was taken for an
    attachment and forwarded unjudged); one with a non-string text is a 422."""
    part = {"type": "made_up", "text": "tell me a joke"}
    message = {"role": "user", "content": [part]}
    response = await post(client, {"model": "m", "input": [message]})
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []
    untyped = {"role": "user", "content": [{"text": "tell me a joke"}]}
    response = await post(client, {"model": "m", "input": [untyped]})
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    bad = {"role": "user", "content": [{"type": "made_up", "text": 5}]}
    assert (await post(client, {"model": "m", "input": [bad]})).status_code == 422


async def test_the_last_user_message_is_judged_with_its_history(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Assistant output_text items and tool items are history, not the judged turn."""
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "where is my order"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Which order?"}]},
            {"type": "function_call_output", "call_id": "c1", "output": "{}"},
            {"role": "user", "content": [{"type": "input_text", "text": "tell me a joke"}]},
        ],
    }
    response = await post(client, body)
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []


async def test_an_image_after_a_served_turn_is_forwarded_as_a_followup(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An input_image with no text, after an in-domain turn, reaches the upstream unchanged,
    flagged as a follow-up; after an off-topic turn it is refused locally."""
    upstream.handler = lambda request: httpx.Response(200, json=upstream_response())
    photo = {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}
    served = {"model": "m", "input": [{"role": "user", "content": "where is my order"}, photo]}
    response = await post(client, served)
    assert response.headers["x-gatekeeper-route"] == "llm"
    assert response.headers["x-gatekeeper-followup"] == "true"
    assert [json.loads(request.content) for request in upstream.requests] == [served]
    drifted = {"model": "m", "input": [{"role": "user", "content": "tell me a joke"}, photo]}
    response = await post(client, drifted)
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "m"}, 422, "missing_required_parameter"),
        ({"input": 5}, 422, "invalid_type"),
        ({"input": [1]}, 422, "invalid_type"),
        ({"input": [{"role": 1, "content": "x"}]}, 422, "invalid_type"),
        ({"input": [{"role": "user", "content": 5}]}, 422, "invalid_type"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, 422, None),
        ({"input": "where is my order", "stream": "yes"}, 422, "invalid_type"),
        ({"input": "where is my order", "instructions": ["x"]}, 422, "invalid_type"),
        ({"input": []}, 400, "empty_message"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, 400, "empty_message"),
        ({"input": "   "}, 400, "empty_message"),
    ],
)
async def test_bad_responses_requests_are_4xx(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    body: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    """Wrong shapes are 422, nothing to judge (no customer message, no tool result) is 400;
    never forwarded, never a 500."""
    response = await post(client, body)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"input":"where is my order","input":"tell me a joke"}',
        b'{"input":"where is my order","x":"\\ud800"}',
        b'{"input":"where is my order","temperature":NaN}',
        b'{"input":"where is my order"',
    ],
    ids=["duplicate-key", "lone-surrogate", "nan", "truncated"],
)
async def test_responses_bodies_are_read_strictly(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: bytes
) -> None:
    """The same strict JSON as chat completions: what is judged is what would be forwarded."""
    response = await post(client, body)
    assert response.status_code == 400
    assert upstream.requests == []


async def test_responses_need_the_key(keyed: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    response = await post(keyed, {"model": "m", "input": "where is my order"})
    assert response.status_code == 401
    assert upstream.requests == []


async def test_responses_upstream_failures_are_502_504(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Upstream 5xx is a 502, a timeout a 504, each with the decision headers."""
    upstream.handler = lambda request: httpx.Response(500, json={"error": {"message": "boom"}})
    failed = await post(client, {"model": "m", "input": "where is my order"})
    assert failed.status_code == 502 and failed.headers["x-gatekeeper-route"] == "llm"

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    upstream.handler = slow
    timed_out = await post(client, {"model": "m", "input": "where is my order"})
    assert timed_out.status_code == 504


# -- the end of a forwarded Responses stream -----------------------------------------------------


async def stream(client: httpx.AsyncClient) -> httpx.Response:
    return await post(client, {"model": "m", "input": "where is my order", "stream": True})


@pytest.mark.parametrize(
    "body",
    [
        responses_sse("response.created", "response.output_text.delta", "response.completed"),
        responses_sse("response.created", "response.completed", eol="\r\n"),
        responses_sse("response.created", "response.completed", named=False),
        responses_sse("response.created", "response.incomplete"),
        responses_sse("response.created", "response.failed"),
        responses_sse("response.created", "response.completed") + b": keep-alive\n\n",
    ],
    ids=["lf", "crlf", "data-type-only", "incomplete", "failed", "comment-after"],
)
async def test_complete_responses_stream_is_relayed_unchanged(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: bytes
) -> None:
    """A stream ending in a terminal event comes back byte for byte, no error added."""
    upstream.handler = sse_answer(body)
    response = await stream(client)
    assert response.content == body
    assert 'kind="stream_truncated"} 0.0' in (await client.get("/metrics")).text


async def test_responses_stream_without_completed_ends_with_an_sse_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A stream that stops before ``response.completed`` (even after a [DONE]-like line) is
    ended with the SSE error event and counted."""
    body = responses_sse("response.created", "response.output_text.delta")
    upstream.handler = sse_answer(body)
    response = await stream(client)
    assert response.content.startswith(body)
    last = response.text.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_stream_truncated"
    assert 'kind="stream_truncated"} 1.0' in (await client.get("/metrics")).text


async def test_responses_stream_breaking_mid_way_ends_with_an_sse_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        head = responses_sse("response.created")
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=CutStream(head)
        )

    upstream.handler = broken
    response = await stream(client)
    assert response.text.count('"error"') == 1
    assert "upstream_stream_interrupted" in response.text


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_response_end_survives_any_chunking(size: int) -> None:
    """The terminal event is found however the bytes are split (CRLF pairs included)."""
    for eol in ("\n", "\r\n"):
        for named in (True, False):
            whole = responses_sse("response.created", "response.completed", named=named, eol=eol)
            for cut in (whole, whole[:-2], whole[: whole.rindex(b"data:")]):
                end = ResponseEnd()
                for i in range(0, len(cut), size):
                    end.feed(cut[i : i + size])
                assert end.complete() is (cut != whole[: whole.rindex(b"data:")])


# -- 2. other /v1/ routes pass through -----------------------------------------------------------


async def test_embeddings_pass_through_with_the_proxy_key(
    keyed: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """POST /v1/embeddings: body and content type unchanged, the proxy's key, not the client's;
    the upstream's answer comes back with its status and end-to-end headers."""
    embedding = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
    }
    upstream.handler = lambda request: httpx.Response(
        200, json=embedding, headers={"x-request-id": "req-1", "connection": "keep-alive"}
    )
    body = b'{"model":"text-embedding-3-small",  "input":["tell me a joke"]}'
    response = await keyed.post(
        "/v1/embeddings",
        content=body,
        headers={
            "authorization": f"Bearer {CLIENT_KEY}",
            "content-type": "application/json",
            "openai-beta": "x",
        },
    )
    assert response.status_code == 200
    assert response.json() == embedding
    assert response.headers["x-request-id"] == "req-1"
    assert "x-gatekeeper-route" not in response.headers  # not judged
    [sent] = upstream.requests
    assert (sent.method, sent.url.path, sent.content) == ("POST", "/v1/embeddings", body)
    assert sent.headers["authorization"] == "Bearer sk-upstream-key"
    assert sent.headers["openai-beta"] == "x"
    assert sent.headers["content-type"] == "application/json"


async def test_a_get_passes_through_with_its_query_string(
    keyed: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.handler = lambda request: httpx.Response(200, json={"id": "m", "object": "model"})
    response = await keyed.get(
        "/v1/models/m%2Fx?limit=2&after=a%20b", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert response.status_code == 200 and response.json()["id"] == "m"
    [sent] = upstream.requests
    assert sent.method == "GET" and sent.content == b""
    assert sent.url.raw_path == b"/v1/models/m%2Fx?limit=2&after=a%20b"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT", "PATCH"])
async def test_unauthenticated_passthrough_is_401(
    keyed: httpx.AsyncClient, upstream: FakeUpstream, method: str
) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = await keyed.request(method, "/v1/files/file-1", headers=headers)
        assert response.status_code == 401
    assert upstream.requests == []


async def test_passthrough_failures_are_mapped(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Upstream 5xx and unreachable: 502; timeout: 504; 4xx: passed through as-is."""
    upstream.handler = lambda request: httpx.Response(503, json={"error": {"message": "busy"}})
    assert (await client.get("/v1/files")).status_code == 502

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    upstream.handler = unreachable
    gone = await client.post("/v1/embeddings", json={"input": "x"})
    assert gone.status_code == 502
    assert gone.json()["error"]["code"] == "upstream_unavailable"

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    upstream.handler = slow
    assert (await client.delete("/v1/files/file-1")).status_code == 504

    upstream.handler = lambda request: httpx.Response(404, json={"error": {"message": "no"}})
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no"


async def test_stored_responses_pass_through(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Only POST /v1/responses is judged: GET /v1/responses/{id} is passed through."""
    upstream.handler = lambda request: httpx.Response(200, json=upstream_response())
    response = await client.get("/v1/responses/resp_1")
    assert response.status_code == 200 and response.json()["id"] == "resp_1"
    assert upstream.requests[0].url.path == "/v1/responses/resp_1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/v1/chat/completions"),  # an upstream base URL without /v1 serves it
        ("POST", "/v1/v1/responses"),
        ("POST", "/v1/deployments/m/chat/completions"),  # Azure / LiteLLM style
        ("POST", "/v1/openai/deployments/m/chat/completions"),
        ("POST", "/v1/chat/completions/x"),
        ("POST", "/v1/chat/completions:generate"),
        ("POST", "/v1/responses:create"),
        ("POST", "/v1/chat/completion"),
        ("POST", "/v1/fim/completions"),
        ("POST", "/v1/chat"),
        ("POST", "/v1/generate"),
        ("POST", "/v1/models/gpt:generateContent"),
        ("POST", "/v1/responses/resp_1/compact"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/assistants"),
        ("POST", "/v1/conversations"),
        ("PUT", "/v1/chat/completions"),
        ("PATCH", "/v1/responses"),
    ],
)
async def test_only_listed_endpoints_pass_through(
    client: httpx.AsyncClient, upstream: FakeUpstream, method: str, path: str
) -> None:
    """Passthrough is an allowlist (server.passthrough): every path the walkthrough got a
    lenient upstream to generate through is refused with 403, never forwarded with the proxy's
    key; under chat/ and responses/ only stored objects are read, deleted or cancelled."""
    body = {"model": "m", "messages": [{"role": "user", "content": "write me a long poem"}]}
    response = await client.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "endpoint_not_gated"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("GET", "/v1/chat/completions/chatcmpl-1/messages"),
        ("DELETE", "/v1/responses/resp_1"),
        ("POST", "/v1/responses/resp_1/cancel"),
        ("GET", "/v1/responses/resp_1/input_items"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/moderations"),
        ("POST", "/v1/audio/transcriptions"),
        ("GET", "/v1/files"),
        ("GET", "/v1/vector_stores"),
    ],
)
async def test_the_endpoints_a_chatbot_uses_beside_the_chat_pass(
    client: httpx.AsyncClient, upstream: FakeUpstream, method: str, path: str
) -> None:
    """Models, embeddings, files, moderations, audio, vector stores and the stored objects of
    the gated endpoints pass through by default, without a method-override header."""
    upstream.handler = lambda request: httpx.Response(200, json={"object": "list", "data": []})
    stored = path.startswith(("/v1/chat/", "/v1/responses/"))  # no body there
    response = await client.request(
        method,
        path,
        json=None if stored else {"input": "x"},
        headers={"x-http-method-override": "POST"},
    )
    assert response.status_code == 200, response.text
    assert [(r.method, r.url.path) for r in upstream.requests] == [(method, path)]
    assert "x-http-method-override" not in upstream.requests[0].headers


async def test_the_passthrough_list_is_the_operators(
    gate: Gatekeeper,
    upstream: FakeUpstream,
) -> None:
    """server.passthrough opens an endpoint the default keeps shut (images); an endpoint that
    generates from unjudged input cannot be listed, nor a typo of an endpoint; the default no
    longer passes embeddings, nor the model list, once the list leaves them out."""
    upstream.handler = lambda request: httpx.Response(200, json={"ok": True})
    listed = ServerSettings(passthrough="images, /Models/").passthrough
    assert listed == ["images", "models"]
    async with serving(gate, upstream, passthrough=listed) as proxied:
        assert (await proxied.post("/v1/images/generations", json={})).status_code == 200
        assert (await proxied.get("/v1/models/m1")).status_code == 200
        assert (await proxied.post("/v1/embeddings", json={})).status_code == 403
    with pytest.raises(ConfigError, match="without passing the gate"):
        load_settings(None, server={"passthrough": ["completions"]})
    with pytest.raises(ConfigError, match="first segment"):
        load_settings(None, server={"passthrough": ["images/generations"]})
    with pytest.raises(ConfigError, match="did you mean 'models'"):
        load_settings(None, server={"passthrough": ["modles", "embeddings"]})
    assert ServerSettings(passthrough="my_tools").passthrough == ["my_tools"]  # an upstream's own
    async with serving(gate, upstream, passthrough=["embeddings"]) as proxied:
        assert (await proxied.get("/v1/models")).status_code == 403  # it was always passed


@pytest.mark.parametrize(
    "path", ["/v1/completions", "/v1/threads/runs", "/v1/threads/t1/runs", "/v1/realtime/sessions"]
)
async def test_generation_endpoints_the_gate_cannot_read_are_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """Passing these through would let any client skip the gate: 403, never forwarded."""
    response = await client.post(path, json={"prompt": "tell me a joke", "model": "m"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "endpoint_not_gated"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions%09",  # request.url.path drops a tab the upstream receives
        "/v1/chat/completions%0D",
        "/v1/chat/completions%0B",
        "/v1/chat/completions%C2%A0",  # no-break space
        "/v1/chat/completions%E2%80%8B",  # zero-width space
        "/v1/%E2%80%8Bresponses",
    ],
)
async def test_a_gated_path_with_invisible_characters_is_named_as_such(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """White space or a format character around a gated path's segment (which an upstream
    may trim) is a 400 naming the gated path, for GET too (not passed through as a read)."""
    for method in ("POST", "GET"):
        response = await client.request(method, path, json={"model": "m"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_path"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions/",
        "/v1//chat/completions",
        "/v1/chat//completions",
        "/v1/chat/completions%2F",
        "/v1/Chat/Completions",
        "/v1/responses/",
        "/v1//completions",
        "/v1/Completions",
        "/v1//threads/abc/runs",
        "/v1/Realtime/sessions",
        "/v1/batches",
        # found by an outside-in walkthrough: path parameters, trailing dots, NUL, Anthropic's
        # messages API, the legacy engines paths, compaction under /v1/responses
        "/v1/chat/completions;x",
        "/v1/chat/completions.",
        "/v1/chat/completions%00",
        "/v1/responses;v=2",
        "/v1/messages",
        "/v1/engines/gpt/completions",
        "/v1/responses/compact",
    ],
)
async def test_other_spellings_of_generation_endpoints_never_pass_ungated(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """A trailing or doubled slash or other case (which a lenient upstream may serve) is
    refused, never forwarded with the proxy's key."""
    body = {"model": "m", "messages": [{"role": "user", "content": "write an essay"}]}
    response = await client.post(path, json=body)
    assert response.status_code in (400, 403)
    assert response.json()["error"]["code"] in ("invalid_path", "endpoint_not_gated")
    assert upstream.requests == []


async def test_other_methods_on_the_exact_gated_paths_pass_through(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """GET /v1/chat/completions (the stored completions list) is passed through as before."""
    upstream.handler = lambda request: httpx.Response(200, json={"object": "list", "data": []})
    response = await client.get("/v1/chat/completions")
    assert response.status_code == 200 and response.json()["object"] == "list"
    assert upstream.requests[0].url.path == "/v1/chat/completions"


async def test_passthrough_sse_is_relayed(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An SSE answer on a passed-through path comes back as it is (no end check: unknown kind)."""
    body = b"data: {}\n\n"
    upstream.handler = sse_answer(body)
    response = await client.post("/v1/audio/speech", json={"input": "hi", "stream_format": "sse"})
    assert response.status_code == 200 and response.content == body


@pytest.mark.parametrize(
    "path", [b"/v1/../admin", b"/v1/files/%2e%2e/%2E%2E/admin", b"/v1/./x", b"/v1/a/.."]
)
async def test_passthrough_never_leaves_the_upstream_v1(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    path: bytes,
) -> None:
    """Dot segments (plain or percent-encoded) would reach other upstream paths with the
    proxy's key: 400, never forwarded."""
    sent, _ = await raw_call(gate, upstream, path, [b"{}"])
    assert status_of(sent) == 400
    assert upstream.requests == []


async def test_client_gone_mid_passthrough_body_is_499_not_500(
    gate: Gatekeeper,
    upstream: FakeUpstream,
) -> None:
    """The passed-through body is streamed upstream; a client gone mid-body is the client's
    doing (499, logged as such), not an upstream failure or a bug."""
    sent, logs = await raw_call(gate, upstream, b"/v1/files", [b'{"a": '], disconnect=True)
    events = [entry["event"] for entry in logs]
    assert status_of(sent) == 499, (sent, events)
    assert "server.internal_error" not in events
    assert "upstream.unavailable" not in events


# -- 3. previous_response_id: the conversation behind a stored answer --------------------------


def answering(text: str, ident: str) -> Any:
    """An upstream that answers every Responses request with ``text`` under id ``ident``."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**upstream_response(text), "id": ident})

    return handler


async def test_a_reply_to_a_stored_answer_is_judged_with_its_conversation(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A client that sends only the new turn and previous_response_id gets the same decision as
    one that sends the whole chat: the order number answering the assistant's question is
    forwarded as a follow-up (alone it is refused), its body unchanged."""
    upstream.handler = answering("Your order number, please?", "resp_up_1")
    first = await post(client, {"model": "m", "input": "where is my order"})
    assert first.headers["x-gatekeeper-route"] == "llm"
    alone = await post(client, {"model": "m", "input": "NW-55120"})
    assert alone.headers["x-gatekeeper-route"] == "off_topic"
    body = {"model": "m", "input": "NW-55120", "previous_response_id": "resp_up_1"}
    reply = await post(client, body)
    assert reply.headers["x-gatekeeper-route"] == "llm"
    assert reply.headers["x-gatekeeper-followup"] == "true"
    assert json.loads(upstream.requests[-1].content) == body


async def test_a_streamed_answer_is_remembered_from_its_completed_event(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A streamed forwarded answer's conversation is kept from its response.completed event."""
    completed = {
        "type": "response.completed",
        "response": {**upstream_response("Your order number, please?"), "id": "resp_up_s"},
    }
    upstream.handler = sse_answer(
        b"event: response.created\ndata: {}\n\n"
        + f"event: response.completed\ndata: {json.dumps(completed)}\n\n".encode()
    )
    await post(client, {"model": "m", "input": "where is my order", "stream": True})
    upstream.handler = answering("thanks", "resp_up_2")
    reply = await post(
        client, {"model": "m", "input": "NW-55120", "previous_response_id": "resp_up_s"}
    )
    assert reply.headers["x-gatekeeper-route"] == "llm"


async def test_continuing_the_proxys_own_answer_sends_the_upstream_what_it_missed(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """After a refusal (an answer the upstream never saw), an in-domain turn that names it is
    forwarded with the upstream's own previous id, so the upstream can continue; the refused
    exchange stays out ("where is my parcel, then do what I asked first" would otherwise hand
    the LLM the very request the gate refused)."""
    upstream.handler = answering("Sure, which order?", "resp_up_9")
    await post(client, {"model": "m", "input": "where is my order"})
    refused = await post(
        client, {"model": "m", "input": "tell me a joke", "previous_response_id": "resp_up_9"}
    )
    assert refused.headers["x-gatekeeper-route"] == "off_topic"
    local_id = refused.json()["id"]
    assert local_id.startswith("resp_gk_")
    body = {"model": "m", "input": "where is my parcel", "previous_response_id": local_id}
    forwarded = await post(client, body)
    assert forwarded.headers["x-gatekeeper-route"] == "llm"
    sent = json.loads(upstream.requests[-1].content)
    assert sent["previous_response_id"] == "resp_up_9"
    assert sent["input"] == [{"role": "user", "content": "where is my parcel"}]
    assert b"joke" not in upstream.requests[-1].content


async def test_a_refused_turn_before_a_trailing_system_message_never_reaches_the_upstream(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A refused Responses input ending in a system message after the customer's turn keeps
    that turn out of what a later continuation sends the upstream."""
    upstream.handler = answering("Sure, which order?", "resp_up_9")
    await post(client, {"model": "m", "input": "where is my order"})
    joke = [
        {"role": "user", "content": "tell me a joke"},
        {"role": "system", "content": "answer briefly"},
    ]
    body = {"model": "m", "input": joke, "previous_response_id": "resp_up_9"}
    refused = await post(client, body)
    assert refused.headers["x-gatekeeper-route"] == "off_topic"
    body = {
        "model": "m",
        "input": "where is my parcel",
        "previous_response_id": refused.json()["id"],
    }
    assert (await post(client, body)).headers["x-gatekeeper-route"] == "llm"
    assert b"joke" not in upstream.requests[-1].content


def test_remembered_conversations_keep_only_what_the_gate_reads() -> None:
    """A remembered chat keeps the customer's and the assistant's turns as text cut to
    max_chars (attachments by type, beside the text of a turn that has both): 15 MB of
    instructions is not held per answer."""
    from gatekeeper.interfaces.proxy.threads import ResponseThreads, Thread

    threads = ResponseThreads(10, max_chars=100)
    image = {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 10_000}
    chat = (
        {"role": "system", "content": "x" * 15_000_000},
        {"role": "user", "content": "y" * 5_000},
        {"role": "user", "content": [image]},
        {"role": "user", "content": [" ", image, {"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": "Sure."},
    )
    threads.remember("resp_1", Thread(chat))
    kept = threads.get("resp_1")
    assert kept is not None
    assert kept.messages == (
        {"role": "user", "content": "y" * 100},
        {"role": "user", "content": [{"type": "input_image"}]},
        {"role": "user", "content": [{"type": "text", "text": " \nhi"}, {"type": "input_image"}]},
        {"role": "assistant", "content": "Sure."},
    )


async def test_a_forgotten_answer_of_the_proxys_own_is_not_sent_upstream(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A previous_response_id of the proxy's own that it no longer holds (a restart, another
    process) is dropped from the forwarded body: the upstream would refuse an id it never
    issued."""
    body = {"model": "m", "input": "where is my order", "previous_response_id": "resp_gk_0ld"}
    assert (await post(client, body)).headers["x-gatekeeper-route"] == "llm"
    assert json.loads(upstream.requests[-1].content) == {
        "model": "m",
        "input": [{"role": "user", "content": "where is my order"}],
    }


def test_remembered_conversations_are_bounded() -> None:
    """The most recent `size` answers are kept (least recently used out); size 0 keeps none;
    a non-string id finds nothing."""
    from gatekeeper.interfaces.proxy.threads import ResponseThreads, Thread

    threads = ResponseThreads(2)
    for ident in ("a", "b"):
        threads.remember(ident, Thread(messages=({"role": "user", "content": ident},)))
    assert threads.get("a") is not None  # now the most recent
    threads.remember("c", Thread(messages=()))
    assert threads.get("b") is None and threads.get("a") and threads.get("c")
    assert threads.get(["a"]) is None
    none = ResponseThreads(0)
    none.remember("a", Thread(messages=()))
    assert none.get("a") is None


def test_remembered_conversations_fit_their_memory_budget() -> None:
    """Remembered answers are evicted, least recently used first, to keep their JSON size
    within `max_bytes`; one answer larger than the budget is not remembered at all."""
    from gatekeeper.interfaces.proxy.threads import ResponseThreads, Thread

    photo = {"role": "user", "content": [{"type": "input_image", "image_url": "x" * 60_000}]}
    threads = ResponseThreads(10_000, max_bytes=200_000)
    for ident in range(10):
        threads.remember(f"r{ident}", Thread(messages=(), local=True, unseen=(photo,)))
        assert threads.bytes <= 200_000
    assert threads.get("r9") is not None and threads.get("r0") is None
    threads.remember("r9", Thread(messages=(), local=True, unseen=(photo,) * 4))
    assert threads.get("r9") is None and threads.bytes <= 200_000
    assert threads.get("r8") is not None


def test_the_memory_budget_counts_bytes_not_characters() -> None:
    """An emoji costs 4 bytes of the budget, not 1: 60,000 of them do not fit in 200,000."""
    from gatekeeper.interfaces.proxy.threads import ResponseThreads, Thread

    threads = ResponseThreads(10, max_bytes=200_000)
    said = {"role": "assistant", "content": "\N{GRINNING FACE}" * 60_000}
    threads.remember("r", Thread(messages=(), local=True, unseen=(said,)))
    assert threads.get("r") is None and threads.bytes == 0


def test_a_continued_conversation_is_encoded_for_its_new_items_only() -> None:
    """Remembering an answer that continues a remembered one encodes only its new turns and
    items (those it took over share the bytes held for them) and counts the same bytes as
    encoding all."""
    from gatekeeper.interfaces.proxy.threads import ResponseThreads, Thread

    shown = {"role": "user", "content": [{"type": "input_image", "image_url": "data:,AAAA"}]}
    asked = ({"role": "user", "content": "where is my order"},)
    threads = ResponseThreads(10)
    threads.remember("r1", Thread(messages=asked, local=True, unseen=(shown,)))
    first = threads.get("r1")
    assert first is not None and first.messages == asked and first.unseen == (shown,)
    said = {"role": "user", "content": "NW-55120"}
    continued = Thread((*first.messages, said), local=True, unseen=(*first.unseen, said))
    threads.remember("r2", continued, first)
    second = threads.get("r2")
    assert second is not None and second.unseen == (shown, said)
    assert second.blobs[0] is first.blobs[0] and second.blobs[2] is first.blobs[1]
    measured = ResponseThreads(10)  # the same two answers, each encoded whole
    measured.remember("r1", Thread(messages=asked, local=True, unseen=(shown,)))
    measured.remember("r2", continued)
    assert threads.bytes == measured.bytes


async def test_the_proxy_remembers_a_continued_conversation_from_what_it_holds(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """A reply naming a remembered answer (forwarded, or refused by the gate) is remembered with
    the earlier turns as they were held (the same bytes), not cut down and encoded again."""
    upstream.handler = answering("Your order number, please?", "resp_up_1")
    async with running_app(gate, upstream) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            await post(client, {"model": "m", "input": "where is my order"})
            upstream.handler = answering("Thanks", "resp_up_2")
            body = {"model": "m", "input": "NW-55120", "previous_response_id": "resp_up_1"}
            assert (await post(client, body)).headers["x-gatekeeper-route"] == "llm"
            body = {"model": "m", "input": "tell me a joke", "previous_response_id": "resp_up_2"}
            refused = await post(client, body)
        threads = app.state.proxy.threads
        chain = [threads.get(ident) for ident in ("resp_up_1", "resp_up_2", refused.json()["id"])]
    for earlier, later in itertools.pairwise(chain):
        assert earlier is not None and later is not None
        shared = len(earlier.messages)
        assert later.messages[:shared] == earlier.messages
        assert all(
            a is b for a, b in zip(earlier.blobs[:shared], later.blobs[:shared], strict=True)
        )


async def test_the_memory_budget_is_the_operators(
    gate: Gatekeeper,
    upstream: FakeUpstream,
) -> None:
    """With `server.response_threads_bytes` too small for an answer's conversation, the answer
    is not remembered: a reply naming it is judged on what it carries."""
    upstream.handler = answering("Your order number, please?", "resp_up_1")
    async with serving(gate, upstream, response_threads_bytes=10) as small:
        await post(small, {"model": "m", "input": "where is my order"})
        body = {"model": "m", "input": "NW-55120", "previous_response_id": "resp_up_1"}
        assert (await post(small, body)).headers["x-gatekeeper-route"] == "off_topic"


# -- text the gate must read, shapes the gate must refuse (walkthrough of session 23) -----------


@pytest.mark.parametrize(
    "part",
    [
        {"type": "refusal", "refusal": "tell me a joke"},
        {"type": "thinking", "thinking": "tell me a joke"},
    ],
)
async def test_refusal_and_thinking_parts_are_judged_as_text(
    client: httpx.AsyncClient, upstream: FakeUpstream, part: dict[str, Any]
) -> None:
    """A content part of type refusal or thinking carries text an upstream (vLLM) reads as
    the turn's: the gate judges it (it was taken for an attachment and forwarded)."""
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": [part]}]},
    )
    responses = await post(client, {"model": "m", "input": [{"role": "user", "content": [part]}]})
    for answer in (chat, responses):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []


@pytest.mark.parametrize("role", ["User", "user ", "customer"])
async def test_a_role_no_chat_has_is_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream, role: str
) -> None:
    """A message whose role is no chat role ('User', 'user ') is a 422 naming it, on both
    gated routes: an upstream whose template prints any role would read it as a turn."""
    messages = [{"role": "user", "content": "where is my order"}, {"role": role, "content": "x"}]
    chat = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    responses = await post(client, {"model": "m", "input": messages})
    for answer in (chat, responses):
        assert answer.status_code == 422
        assert repr(role) in answer.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "item",
    [
        {"type": "Message", "role": "user", "content": "tell me a joke"},
        {"type": "message ", "role": "user", "content": "tell me a joke"},
        {"type": "input_text", "text": "tell me a joke"},
        {"type": "message", "content": "tell me a joke"},
    ],
)
async def test_a_responses_item_that_reads_as_a_message_but_is_none_is_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream, item: dict[str, Any]
) -> None:
    """An input item spelled almost like a message (type 'Message', a bare input_text, no
    role) is a 422, not skipped as history while a lenient upstream reads it."""
    answer = await post(
        client, {"model": "m", "input": [{"role": "user", "content": "where is my order"}, item]}
    )
    assert answer.status_code == 422, answer.text
    assert "input[1]" in answer.json()["error"]["message"]
    assert upstream.requests == []
