"""The gating proxy for real: uvicorn on loopback in front of a recording OpenAI-compatible
upstream, driven by the official ``openai`` client and by raw HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from gatekeeper.errors import (
    BackendError,
    EmbeddingError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.wrapper import GatedBackend
from gatekeeper.settings import Settings, UpstreamSettings, load_settings
from gatekeeper.testing import LoopbackServer, RecordingUpstream
from tests.integration._processes import free_port
from tests.support.loopback import (
    UPSTREAM_KEY,
    StartProxy,
    client_for,
    proxy_settings,
    tiny_gate_at,
)
from tests.support.proxy import CLIENT_KEY, JOKE, OFF_TOPIC_REPLY, ORDER

pytestmark = pytest.mark.integration

# -- fixtures -------------------------------------------------------------------------------------


# upstream, gate and start_proxy: tests/integration/conftest.py


@pytest.fixture
def proxy(start_proxy: StartProxy) -> LoopbackServer:
    """A proxy with the tiny gate, no inbound auth."""
    return start_proxy()


def chat(server: LoopbackServer, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    """A raw (headers + parsed) non-streaming chat completion through the proxy."""
    return client_for(server).chat.completions.with_raw_response.create(
        model="shop-llm", messages=messages, **kwargs
    )


def stream_text(stream: Any) -> str:
    """The text of a parsed chat completion stream."""
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def post_raw(server: LoopbackServer, content: bytes, **headers: str) -> httpx.Response:
    """POST raw bytes to the proxy's chat completions endpoint."""
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def metric(server: LoopbackServer, line_start: str) -> float:
    """The value of the first /metrics sample line starting with ``line_start`` (0 if absent)."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- gating ---------------------------------------------------------------------------------------


def test_off_topic_never_reaches_upstream(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """An off-topic request gets a valid chat.completion with the refusal; upstream sees nothing."""
    raw = chat(proxy, JOKE)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == OFF_TOPIC_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "shop-llm"
    assert raw.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.calls == []


def test_off_topic_stream_is_a_valid_sse_stream(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """With stream=true a refusal is a chunk stream the openai client parses, ending in [DONE]."""
    stream = client_for(proxy).chat.completions.create(
        model="shop-llm", messages=JOKE, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == OFF_TOPIC_REPLY
    assert chunks[-1].usage is not None
    raw = httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"model": "m", "messages": JOKE, "stream": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")
    assert upstream.calls == []


def test_canned_intent_answers_its_fixed_reply(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """A greeting gets the catalog's canned reply and decision headers; no upstream call."""
    raw = chat(proxy, [{"role": "user", "content": "hello"}])
    assert raw.parse().choices[0].message.content == "Hello! How can I help?"
    assert (raw.headers["x-gatekeeper-route"], raw.headers["x-gatekeeper-intent"]) == (
        "canned",
        "greeting",
    )
    assert upstream.calls == []


def test_admitted_request_reaches_upstream_with_the_proxys_key(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """An in-domain request is forwarded with the proxy's upstream key, never the client's."""
    raw = chat(proxy, ORDER, temperature=0.1)
    assert raw.parse().choices[0].message.content == "echo: where is my order"
    assert raw.headers["x-gatekeeper-route"] == "llm"
    assert raw.headers["x-gatekeeper-intent"] == "order_status"
    assert upstream.calls == [{"model": "shop-llm", "messages": ORDER, "temperature": 0.1}]
    assert upstream.headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(upstream.headers)


def test_admitted_stream_passes_through_chunk_by_chunk(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """A streamed admitted request yields the upstream's chunks, one event per word."""
    raw = client_for(proxy).chat.completions.with_raw_response.create(
        model="shop-llm", messages=ORDER, stream=True
    )
    chunks = list(raw.parse())
    assert raw.headers["x-gatekeeper-route"] == "llm"
    assert stream_text(chunks) == "echo: where is my order"
    assert len(chunks) == 1 + len(["echo:", "where", "is", "my", "order"]) + 1
    assert upstream.calls[0]["stream"] is True


def test_request_body_is_forwarded_byte_for_byte(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """The raw body (tools, vendor fields, odd spacing, unicode) reaches upstream as sent."""
    body = (
        '{ "model":"shop-llm",  "messages":[{"role":"system","content":"Be brief ✓"},'
        '{"role":"user","content":"where is my order 📦"}],\n "temperature":0.30,'
        '"tools":[{"type":"function","function":{"name":"lookup_order","parameters":{}}}],'
        '"x_vendor_option":{"keep":[1,2.50,null]} }'
    ).encode()
    response = post_raw(proxy, body)
    assert response.status_code == 200
    assert upstream.raw_bodies == [body]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_answer_is_returned_byte_for_byte(
    proxy: LoopbackServer, upstream: RecordingUpstream, stream: bool
) -> None:
    """The proxied answer's bytes equal the upstream's own answer to the same request."""
    body = json.dumps({"model": "m", "messages": ORDER, "stream": stream}).encode()
    key = {"authorization": f"Bearer {UPSTREAM_KEY}", "content-type": "application/json"}
    direct = httpx.post(f"{upstream.base_url}/chat/completions", content=body, headers=key)
    proxied = post_raw(proxy, body)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert proxied.headers["content-type"] == direct.headers["content-type"]


def test_decision_headers_on_every_answer(proxy: LoopbackServer) -> None:
    """Admitted, refused, canned and streamed answers all carry route, intent and score."""
    for messages in (ORDER, JOKE, [{"role": "user", "content": "hi there"}]):
        for stream in (False, True):
            response = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "m", "messages": messages, "stream": stream},
            )
            assert response.headers["x-gatekeeper-route"] in {"llm", "off_topic", "canned"}
            assert response.headers["x-gatekeeper-intent"]
            float(response.headers["x-gatekeeper-score"])


# -- conversations --------------------------------------------------------------------------------


def test_follow_up_order_number_passes(proxy: LoopbackServer, upstream: RecordingUpstream) -> None:
    """A bare order number after an order question is forwarded with the whole conversation,
    flagged as a follow-up."""
    conversation = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Happy to check! What is the order number?"},
        {"role": "user", "content": "NW-55120"},
    ]
    raw = chat(proxy, conversation)
    assert raw.headers["x-gatekeeper-route"] == "llm"
    assert raw.headers["x-gatekeeper-followup"] == "true"
    assert raw.parse().choices[0].message.content == "echo: NW-55120"
    assert upstream.calls[0]["messages"] == conversation


def test_off_topic_turn_mid_conversation_is_refused(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """An off-topic turn after an in-domain exchange is still refused."""
    conversation = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "It ships tomorrow."},
        {"role": "user", "content": "tell me a joke"},
    ]
    assert chat(proxy, conversation).parse().choices[0].message.content == OFF_TOPIC_REPLY
    assert upstream.calls == []


# -- other endpoints ------------------------------------------------------------------------------


def test_models_are_passed_through(proxy: LoopbackServer) -> None:
    """GET /v1/models returns the upstream's model list."""
    assert [m.id for m in client_for(proxy).models.list()] == ["echo-model"]


def test_health_and_readiness(proxy: LoopbackServer) -> None:
    """/healthz says alive; /readyz reports the loaded model and the collection."""
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{proxy.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["model"] == "hashing:256"
    assert ready.json()["runtime"] == "hashing"
    assert ready.json()["exemplars"] > 0


def test_metrics_count_decisions_and_saved_calls(proxy: LoopbackServer) -> None:
    """/metrics counts decisions by route and intent, saved LLM calls and gate latency."""
    chat(proxy, ORDER)
    chat(proxy, JOKE)
    chat(proxy, [{"role": "user", "content": "hello"}])
    text = httpx.get(f"{proxy.url}/metrics").text
    assert (
        'gatekeeper_decisions_total{intent="order_status",mode="enforce",route="llm"} 1.0' in text
    )
    assert 'gatekeeper_decisions_total{intent="greeting",mode="enforce",route="canned"} 1.0' in text
    assert metric(proxy, "gatekeeper_llm_calls_saved_total") == 2
    assert metric(proxy, "gatekeeper_gate_seconds_count") == 3


def test_unknown_path_is_an_openai_style_404(proxy: LoopbackServer) -> None:
    """An unknown path answers 404 with an OpenAI-style error body (unknown /v1/ paths are
    passed through to the upstream: see test_proxy_responses_loopback.py)."""
    response = httpx.get(f"{proxy.url}/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- inbound auth ---------------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(start_proxy: StartProxy, upstream: RecordingUpstream) -> None:
    """With inbound keys configured, a missing or wrong key gets 401 and nothing is forwarded."""
    server = start_proxy(api_keys=(CLIENT_KEY, "sk-other"))
    missing = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ORDER})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client_for(server, key="sk-wrong").chat.completions.create(model="m", messages=ORDER)
    with pytest.raises(openai.AuthenticationError):
        client_for(server, key="sk-wrong").models.list()
    assert upstream.calls == []


def test_valid_key_is_accepted(start_proxy: StartProxy, upstream: RecordingUpstream) -> None:
    """Any configured inbound key works, and it is not the key sent upstream."""
    server = start_proxy(api_keys=("sk-other", CLIENT_KEY))
    reply = client_for(server).chat.completions.create(model="m", messages=ORDER)
    assert reply.choices[0].message.content == "echo: where is my order"
    assert upstream.headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_keys_never_appear_in_logs_or_answers(
    start_proxy: StartProxy, upstream: RecordingUpstream
) -> None:
    """Neither key, nor the customer's text, is logged; the upstream key is never returned."""
    server = start_proxy(api_keys=(CLIENT_KEY,))
    with capture_logs() as logs:
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "m", "messages": ORDER},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        models = httpx.get(
            f"{server.url}/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"}
        )
    logged = json.dumps(logs, default=str)
    assert any(entry["event"] == "http.request" for entry in logs)
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "where is my order"):
        assert secret not in logged
    for answer in (response, models):
        assert UPSTREAM_KEY not in answer.text
        assert UPSTREAM_KEY not in json.dumps(dict(answer.headers))


# -- client mistakes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_type"),
        (b'{"model": "m"}', 422, "missing_required_parameter"),
        (b'{"messages": "where is my order"}', 422, "invalid_type"),
        (b'{"messages": []}', 422, "invalid_type"),
        (b'{"messages": ["where is my order"]}', 422, "invalid_type"),
        (b'{"messages": [{"content": "hi"}]}', 422, "invalid_type"),
        (b'{"messages": [{"role": "user", "content": 42}]}', 422, "invalid_type"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            422,
            "invalid_type",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": 0}', 422, "invalid_value"),
        # malformed content parts: refused as the Responses API refuses them (a number's text
        # used to be judged as the customer's)
        (b'{"messages": [{"role": "user", "content": [42]}]}', 422, "invalid_type"),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}',
            422,
            "invalid_type",
        ),
        (b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}', 422, "invalid_type"),
        (b'{"messages": [{"role": "user", "content": "   "}]}', 400, "empty_message"),
        (b'{"messages": [{"role": "system", "content": "be nice"}]}', 400, "empty_message"),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}',
            400,
            "empty_message",
        ),
    ],
)
def test_client_mistakes_are_4xx_with_a_clear_message(
    proxy: LoopbackServer, upstream: RecordingUpstream, body: bytes, status: int, code: str
) -> None:
    """Malformed or ill-shaped requests get 400/422 with an OpenAI-style body, never 500."""
    response = post_raw(proxy, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert upstream.calls == []


def test_message_over_the_length_limit_is_400(proxy: LoopbackServer, gate: Gatekeeper) -> None:
    """A user message longer than gate.max_message_chars is refused with 400."""
    too_long = "where is my order " * (gate.settings.gate.max_message_chars // 10)
    with pytest.raises(openai.BadRequestError, match="max_message_chars"):
        client_for(proxy).chat.completions.create(
            model="m", messages=[{"role": "user", "content": too_long}]
        )


def test_body_over_the_size_limit_is_413(start_proxy: StartProxy) -> None:
    """A body larger than server.max_body_bytes is refused with 413, declared or chunked."""
    server = start_proxy(max_body_bytes=2048)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    assert post_raw(server, big).status_code == 413

    def chunked() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    response = httpx.post(f"{server.url}/v1/chat/completions", content=chunked())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def send_and_close(server: LoopbackServer, raw: bytes) -> None:
    """Send raw bytes on a fresh connection, then close it without reading an answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw)
        time.sleep(0.2)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: [::1]\r\ncontent-type: application/json\r\n"
        b'content-length: 1000\r\n\r\n{"messages": [{"role": "us',
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: [::1]\r\ncontent-type: application/json\r\n"
        b'transfer-encoding: chunked\r\n\r\n5\r\n{"mes\r\nzz\r\nnot a chunk\r\n',
    ],
    ids=["disconnect-mid-body", "broken-chunked-body"],
)
def test_client_gone_mid_request_is_a_client_event(proxy: LoopbackServer, raw: bytes) -> None:
    """A client that disconnects mid-body, or sends a broken chunked body, is logged as
    http.client_disconnected without a traceback and counted as 499, not as a 500."""
    with capture_logs() as logs:
        send_and_close(proxy, raw)
        wait_for(lambda: any(e["event"] == "http.request" for e in logs))
    events = [entry["event"] for entry in logs]
    assert "http.client_disconnected" in events
    assert "server.internal_error" not in events
    assert not any("exc_info" in entry for entry in logs)
    assert metric(proxy, 'gatekeeper_requests_total{path="/v1/chat/completions",status="499"}') == 1
    assert metric(proxy, 'gatekeeper_requests_total{path="/v1/chat/completions",status="500"}') == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_a_client_gone_while_the_upstream_answers_ends_the_wait(
    proxy: LoopbackServer, upstream: RecordingUpstream, path: str
) -> None:
    """A client that hangs up on a non-streamed request while the upstream is still writing
    its answer (3 s here) ends the proxy's wait: logged at once as http.client_disconnected
    and counted as 499, with the decision's route and message id (the proxy waited the 3 s,
    logged 200, and paid for the answer)."""
    upstream.delay(3)
    body = json.dumps({"model": "m", "messages": ORDER, "input": ORDER}).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    raw = head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body
    with capture_logs() as logs:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(raw)
            wait_for(lambda: upstream.calls)  # the proxy is waiting on the upstream
        wait_for(lambda: any(e["event"] == "http.request" for e in logs))
    [logged] = [entry for entry in logs if entry["event"] == "http.request"]
    assert logged["status"] == 499 and logged["route"] == "llm", logged
    [decided] = [entry for entry in logs if entry["event"] == "gate.decided"]
    assert logged["message_id"] == decided["message_id"]
    assert "http.client_disconnected" in [entry["event"] for entry in logs]
    assert metric(proxy, f'gatekeeper_requests_total{{path="{path}",status="499"}}') == 1


# -- upstream failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_down_is_502(start_proxy: StartProxy, stream: bool) -> None:
    """An unreachable upstream gives 502 with an OpenAI-style body and the decision headers."""
    server = start_proxy(base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(server).chat.completions.create(model="m", messages=ORDER, stream=stream)
    assert caught.value.status_code == 502
    assert caught.value.response.json()["error"]["code"] == "upstream_unavailable"
    assert caught.value.response.headers["x-gatekeeper-route"] == "llm"
    assert metric(server, 'gatekeeper_upstream_errors_total{kind="unavailable"}') == 1


def test_off_topic_is_answered_even_when_upstream_is_down(start_proxy: StartProxy) -> None:
    """Refusals need no upstream: they still work while it is down."""
    server = start_proxy(base_url=f"http://127.0.0.1:{free_port()}/v1")
    reply = client_for(server).chat.completions.create(model="m", messages=JOKE)
    assert reply.choices[0].message.content == OFF_TOPIC_REPLY


def test_upstream_5xx_is_502(proxy: LoopbackServer, upstream: RecordingUpstream) -> None:
    """An upstream 500 becomes a 502 that names the upstream's status."""
    upstream.fail_with(500)
    response = post_raw(proxy, json.dumps({"model": "m", "messages": ORDER}).encode())
    assert response.status_code == 502
    assert response.json()["error"] == {
        "message": "the upstream LLM endpoint answered HTTP 500: simulated failure",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_error",
    }


def test_upstream_refusing_the_proxy_key_is_502(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """An upstream 401 is the proxy's misconfiguration, not the client's: 502."""
    upstream.fail_with(401)
    response = post_raw(proxy, json.dumps({"model": "m", "messages": ORDER}).encode())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"


def test_upstream_client_errors_pass_through(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """An upstream 4xx about the request itself (e.g. 400, 429) comes back unchanged."""
    for status in (400, 429):
        upstream.fail_with(status)
        response = post_raw(proxy, json.dumps({"model": "m", "messages": ORDER}).encode())
        assert response.status_code == status
        assert response.json()["error"]["code"] == "simulated"


def test_upstream_timeout_is_504(start_proxy: StartProxy, upstream: RecordingUpstream) -> None:
    """An upstream slower than upstream.timeout gives 504."""
    server = start_proxy(timeout=0.3)
    upstream.delay(1.5)
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(server).chat.completions.create(model="m", messages=ORDER)
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["code"] == "upstream_timeout"
    assert metric(server, 'gatekeeper_upstream_errors_total{kind="timeout"}') == 1


# -- gate failures and shadow mode ----------------------------------------------------------------


def test_fail_open_forwards_when_the_model_fails(
    start_proxy: StartProxy, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """With fail_open, a crashed embedding model lets requests through, counted in metrics."""
    broken = tiny_gate_at(tmp_path / "data")
    server = start_proxy(with_gate=broken, on_error="fail_open")
    broken.embedder.failure = EmbeddingError("the model crashed")  # type: ignore[attr-defined]
    raw = chat(server, JOKE)
    assert raw.parse().choices[0].message.content == "echo: tell me a joke"
    assert raw.headers["x-gatekeeper-gate-error"] == "EmbeddingError"
    assert len(upstream.calls) == 1
    assert (
        metric(server, 'gatekeeper_gate_failures_total{error="EmbeddingError",policy="fail_open"}')
        == 1
    )


def test_fail_closed_refuses_when_the_store_fails(
    start_proxy: StartProxy, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """With fail_closed and no copy in memory to ride it out on (store.search chroma), a lost
    Chroma index refuses requests with the unavailable reply (not the off-topic one: the
    customer asked about an order), counted; /readyz says not ready."""
    broken = tiny_gate_at(tmp_path / "data", store={"search": "chroma"})
    server = start_proxy(with_gate=broken, on_error="fail_closed")
    broken.store.drop_all()
    raw = chat(server, ORDER)
    assert raw.parse().choices[0].message.content == broken.settings.gate.unavailable_reply
    assert broken.settings.gate.unavailable_reply != OFF_TOPIC_REPLY
    assert raw.headers["x-gatekeeper-route"] == "off_topic"
    assert raw.headers["x-gatekeeper-gate-error"] == "IndexMissingError"
    assert upstream.calls == []
    assert (
        metric(
            server, 'gatekeeper_gate_failures_total{error="IndexMissingError",policy="fail_closed"}'
        )
        == 1
    )
    assert httpx.get(f"{server.url}/readyz").status_code == 503


def test_a_bug_is_a_generic_500_not_a_traceback(
    start_proxy: StartProxy, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """An unexpected exception answers an OpenAI-style 500 without internals; nothing forwarded."""
    buggy = tiny_gate_at(tmp_path / "data")
    server = start_proxy(with_gate=buggy)
    buggy.embedder.failure = ZeroDivisionError("a bug")  # type: ignore[attr-defined]
    response = post_raw(server, json.dumps({"model": "m", "messages": ORDER}).encode())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "ZeroDivisionError" not in response.text
    assert "Traceback" not in response.text
    assert upstream.calls == []
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_shadow_mode_decides_but_forwards_everything(
    start_proxy: StartProxy, upstream: RecordingUpstream
) -> None:
    """In shadow mode an off-topic request is forwarded; headers and metrics keep the decision."""
    server = start_proxy(shadow=True)
    raw = chat(server, JOKE)
    assert raw.parse().choices[0].message.content == "echo: tell me a joke"
    assert raw.headers["x-gatekeeper-route"] == "off_topic"
    assert raw.headers["x-gatekeeper-intent"] == "none"  # refused: no intent, whatever is near
    assert raw.headers["x-gatekeeper-nearest-intent"]  # ... which has a header of its own
    assert raw.headers["x-gatekeeper-shadow"] == "true"
    assert len(upstream.calls) == 1
    assert metric(server, 'gatekeeper_decisions_total{intent="none",mode="shadow"') == 1
    assert metric(server, "gatekeeper_llm_calls_saved_total") == 0


# -- lifecycle ------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll until ``condition()`` is truthy."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_graceful_shutdown_lets_in_flight_requests_finish(
    gate: Gatekeeper, upstream: RecordingUpstream
) -> None:
    """A request in flight when shutdown starts still gets its full answer."""
    server = LoopbackServer(create_app(proxy_settings(gate, upstream.base_url), gate=gate)).start()
    upstream.delay(0.5)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(chat, server, ORDER)
        wait_for(lambda: upstream.calls)
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        assert answer.result(timeout=10).parse().choices[0].message.content == (
            "echo: where is my order"
        )
        stopping.join()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz")


def _tiny_shop_settings(tmp_path: Path, upstream: RecordingUpstream, **gate: Any) -> Settings:
    """Settings for a one-intent catalog of its own (the shipped threshold is the shop's), an
    embeddings endpoint that is down, and the recording upstream."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "domain: a tiny shop\n"
        "intents:\n  - name: order_status\n    exemplars: [where is my order]\n"
        "off_topic:\n  reply: Orders only.\n  exemplars: [tell me a joke]\n"
    )
    return load_settings(
        None,
        data_dir=tmp_path / "data",
        catalog=catalog,
        embedding={
            "provider": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "none",
            "max_retries": 0,
            "timeout": 1,
        },
        upstream={"base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "max_retries": 0},
        gate=gate,
    )


def test_gate_is_built_from_settings_when_not_given(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Without a gate the app builds one from settings at startup and serves with it."""
    settings = _tiny_shop_settings(
        tmp_path, upstream, on_error="fail_closed", allow_uncalibrated=True
    )
    with LoopbackServer(create_app(settings)) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        reply = client_for(server).chat.completions.create(model="m", messages=ORDER)
    assert reply.choices[0].message.content == settings.gate.unavailable_reply  # fail_closed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_app_does_not_start_on_another_catalogs_threshold(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """create_app(settings) whose catalog is not the one the threshold was calibrated on
    does not start (as `gatekeeper serve` refuses), unless gate.allow_uncalibrated."""
    with pytest.raises(RuntimeError, match="did not start"):
        LoopbackServer(create_app(_tiny_shop_settings(tmp_path, upstream))).start()
    assert upstream.calls == []


# -- the Python wrapper over a real endpoint ------------------------------------------------------


@pytest.fixture
def chat_backend(upstream: RecordingUpstream) -> OpenAIChatBackend:
    """An OpenAI chat backend pointed at the recording upstream."""
    return OpenAIChatBackend(
        UpstreamSettings(
            base_url=upstream.base_url,
            api_key=SecretStr(UPSTREAM_KEY),
            model="shop-llm",
            max_retries=0,
            timeout=5,
        )
    )


def test_wrapped_openai_backend_forwards_admitted(
    gate: Gatekeeper, chat_backend: OpenAIChatBackend, upstream: RecordingUpstream
) -> None:
    """Admitted messages reach the endpoint; off-topic ones get a local ChatCompletion."""
    gated = GatedBackend(gate, chat_backend)
    assert gated("where is my order").choices[0].message.content == "echo: where is my order"
    assert gated("tell me a joke").choices[0].message.content == OFF_TOPIC_REPLY
    assert [c["messages"] for c in upstream.calls] == [ORDER]
    assert upstream.calls[0]["model"] == "shop-llm"


async def test_wrapped_openai_backend_async_and_streaming(
    gate: Gatekeeper, chat_backend: OpenAIChatBackend, upstream: RecordingUpstream
) -> None:
    """``acall`` uses the async client; streams come back as the client's stream."""
    gated = GatedBackend(gate, chat_backend)
    stream = await gated.acall(ORDER, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == (
        "echo: where is my order"
    )
    assert len(upstream.calls) == 1
    await chat_backend.aclose()


def test_openai_backend_errors_are_gatekeeper_errors(
    chat_backend: OpenAIChatBackend, upstream: RecordingUpstream
) -> None:
    """Status, timeout and connection failures become BackendError and its subclasses."""
    upstream.fail_with(503)
    with pytest.raises(BackendError) as caught:
        chat_backend("where is my order")
    assert caught.value.status_code == 503
    upstream.fail_with(None)
    upstream.delay(1.5)
    slow = OpenAIChatBackend(chat_backend.settings.model_copy(update={"timeout": 0.3}))
    with pytest.raises(UpstreamTimeoutError):
        slow("where is my order")
    down = OpenAIChatBackend(
        chat_backend.settings.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    )
    with pytest.raises(UpstreamUnavailableError):
        down("where is my order")


# -- the real default gate on realistic conversations ---------------------------------------------


SHOP_REFUSAL = "Sorry, I can only help with questions about Northwind Goods"


def turns(*texts: str) -> list[dict[str, str]]:
    """A conversation alternating user and assistant turns, starting with the user."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]


ADMITTED_CHATS = {
    "order number after a lost parcel": turns(
        "Hi, my parcel never arrived, the tracking says delivered two days ago",
        "I'm sorry to hear that! Could you give me your order number?",
        "NW-55120",
    ),
    "yes to a return": turns(
        "can I return the jacket I bought last week?",
        "Yes, within 30 days. Shall I start a return for you?",
        "yes please",
    ),
    "e-mail after a login problem": turns(
        "I can't log into my account, the password reset email never comes",
        "Let me help. Which e-mail address is on the account?",
        "sarah.klein@example.com",
    ),
    "name for an order lookup": turns(
        "hey could you look up my order",
        "Sure, what's the name on the order?",
        "Sarah Klein",
    ),
}
REFUSED_CHATS = {
    "match result mid-chat": turns(
        "where is my order?",
        "It's out for delivery today and should arrive by 6 pm.",
        "who won the match last night?",
    ),
    "poem after a refund": turns(
        "I want a refund for the broken lamp",
        "I've started the refund; it takes 3-5 business days.",
        "cool. can you write me a poem about autumn?",
    ),
    "weather after a late order": turns(
        "My order NW-48213 is late",
        "Sorry about that! It should arrive tomorrow.",
        "what's the weather like tomorrow in Paris?",
    ),
}


@pytest.fixture(scope="module")
def real_proxy(real_gate: Gatekeeper) -> Iterator[tuple[LoopbackServer, RecordingUpstream]]:
    """A proxy with the real default gate (shop catalog) in front of its own upstream."""
    with RecordingUpstream() as own_upstream:
        settings = proxy_settings(real_gate, own_upstream.base_url)
        with LoopbackServer(create_app(settings, gate=real_gate)) as server:
            yield server, own_upstream


@pytest.mark.parametrize("name", list(ADMITTED_CHATS))
def test_real_gate_admits_in_domain_follow_ups(
    real_proxy: tuple[LoopbackServer, RecordingUpstream], name: str
) -> None:
    """Short in-domain follow-ups (order number, yes, e-mail, name) reach the LLM."""
    server, own_upstream = real_proxy
    own_upstream.reset()
    conversation = ADMITTED_CHATS[name]
    raw = chat(server, conversation)
    assert raw.headers["x-gatekeeper-route"] == "llm"
    assert raw.parse().choices[0].message.content == f"echo: {conversation[-1]['content']}"
    assert own_upstream.calls[0]["messages"] == conversation


@pytest.mark.parametrize("name", list(REFUSED_CHATS))
def test_real_gate_refuses_off_topic_turns_mid_chat(
    real_proxy: tuple[LoopbackServer, RecordingUpstream], name: str
) -> None:
    """A clearly off-topic turn in an in-domain chat is refused, streamed or not."""
    server, own_upstream = real_proxy
    own_upstream.reset()
    conversation = REFUSED_CHATS[name]
    assert chat(server, conversation).parse().choices[0].message.content.startswith(SHOP_REFUSAL)
    stream = client_for(server).chat.completions.create(
        model="m", messages=conversation, stream=True
    )
    assert stream_text(stream).startswith(SHOP_REFUSAL)
    assert own_upstream.calls == []


def test_real_gate_answers_thanks_with_its_canned_reply(
    real_proxy: tuple[LoopbackServer, RecordingUpstream],
) -> None:
    """'thanks!' after an answer is a canned intent: answered without the LLM."""
    server, own_upstream = real_proxy
    own_upstream.reset()
    raw = chat(server, turns("where is my order?", "It's out for delivery today.", "thanks!"))
    assert (raw.headers["x-gatekeeper-route"], raw.headers["x-gatekeeper-intent"]) == (
        "canned",
        "thanks",
    )
    assert own_upstream.calls == []
