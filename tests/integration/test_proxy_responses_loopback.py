"""The proxy as a drop-in on loopback (uvicorn, real sockets): the official ``openai`` client's
``responses.create`` against a proxy in front of a :class:`RecordingUpstream`, refused and
admitted, streamed and not; and other ``/v1/`` routes passed through."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gatekeeper.testing import LoopbackServer, RecordingUpstream
from tests.support.loopback import UPSTREAM_KEY, StartProxy, client_for
from tests.support.proxy import CLIENT_KEY, OFF_TOPIC_REPLY

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(start_proxy: StartProxy) -> LoopbackServer:
    """A proxy with the tiny gate, asking for the inbound key."""
    return start_proxy(api_keys=(CLIENT_KEY,))


def test_refused_response_and_stream_parse_in_the_openai_client(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    client = client_for(proxy)
    raw = client.responses.with_raw_response.create(model="shop-llm", input="tell me a joke")
    assert raw.headers["x-gatekeeper-route"] == "off_topic"
    assert raw.parse().output_text == OFF_TOPIC_REPLY

    with client.responses.stream(model="shop-llm", input="tell me a joke") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == OFF_TOPIC_REPLY
    assert final.output_text == OFF_TOPIC_REPLY

    events = list(client.responses.create(model="shop-llm", input="tell me a joke", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert upstream.calls == []


def test_admitted_response_reaches_upstream_and_comes_back(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    client = client_for(proxy)
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "where is my order"}]}
    ]
    raw = client.responses.with_raw_response.create(
        model="shop-llm", instructions="You are the shop's assistant.", input=items
    )
    assert raw.headers["x-gatekeeper-route"] == "llm"
    assert raw.parse().output_text == "echo: where is my order"

    stream = client.responses.create(model="shop-llm", input="where is my order", stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: where is my order"
    assert events[-1].response.output_text == text
    assert [c["input"] for c in upstream.calls] == [items, "where is my order"]
    assert {h["authorization"] for h in upstream.headers} == {f"Bearer {UPSTREAM_KEY}"}
    metrics = httpx.get(f"{proxy.url}/metrics", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert 'gatekeeper_upstream_errors_total{kind="stream_truncated"} 0.0' in metrics.text


def test_passthrough_on_loopback(proxy: LoopbackServer, upstream: RecordingUpstream) -> None:
    """GET /v1/models/{id}: not a route of the proxy's own, so passed through (the recording
    upstream has no such path: its 404 comes back as-is); without a key, 401."""
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    assert httpx.get(f"{proxy.url}/v1/models/echo-model?x=1").status_code == 401
    response = httpx.get(f"{proxy.url}/v1/models/echo-model?x=1", headers=headers)
    assert response.status_code == 404
    assert "x-gatekeeper-route" not in response.headers
    models = client_for(proxy).models.list()
    assert [m.id for m in models.data] == ["echo-model"]


def test_a_passthrough_body_cut_mid_way_is_cut_for_the_client(
    start_proxy: StartProxy,
) -> None:
    """An upstream answer (not SSE) that breaks after its status: the client's answer is cut
    off too (a protocol error on its side), never passed off as a complete, shorter body."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def body() -> Any:
        yield json.dumps({"data": "x" * 1000}).encode()[:100]
        raise RuntimeError("upstream died mid-body")

    async def files(request: Any) -> StreamingResponse:
        return StreamingResponse(body(), media_type="application/json")

    broken = LoopbackServer(Starlette(routes=[Route("/v1/files", files)]))
    with broken:
        proxy = start_proxy(base_url=f"{broken.url}/v1")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{proxy.url}/v1/files").read()
        metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'gatekeeper_upstream_errors_total{kind="body_interrupted"} 1.0' in metrics


def test_a_streamed_refusal_given_back_by_reference_keeps_the_refused_turn_from_the_upstream(
    proxy: LoopbackServer, upstream: RecordingUpstream
) -> None:
    """The openai client streams a refusal, then sends the chat with that refusal as an
    item_reference to its output message: the upstream gets neither the refused request nor
    the reference (it would fail to resolve the proxy's id), only the admitted turn."""
    client = client_for(proxy)
    with client.responses.stream(model="shop-llm", input="tell me a joke") as stream:
        refusal_id = stream.get_final_response().output[0].id
    items: Any = [
        {"role": "user", "content": "tell me a joke"},
        {"type": "item_reference", "id": refusal_id},
        {"role": "user", "content": "where is my order"},
    ]
    answer = client.responses.create(model="shop-llm", input=items)
    assert answer.output_text == "echo: where is my order"
    assert [c["input"] for c in upstream.calls] == [items[-1:]]
