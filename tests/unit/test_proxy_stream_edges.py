"""Edges of forwarded streams that the stream fuzz tests (``tests/fuzz``) found: odd upstream
answers the proxy reads while relaying them, and where a stream's end is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gatekeeper.gate import Gatekeeper
from tests.unit.test_proxy_app import (
    FakeUpstream,
    gate,  # noqa: F401  (the module's gate fixture)
    serving,
    sse_answer,
)


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def client(
    gate: Gatekeeper,  # noqa: F811
    upstream: FakeUpstream,
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(gate, upstream) as proxied:
        yield proxied


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"/v1/{path}", content=json.dumps(body), headers={"content-type": "application/json"}
    )


def completed_stream(response: Any) -> bytes:
    """A Responses stream whose ``response.completed`` carries ``response``."""
    event = {"type": "response.completed", "response": response}
    return f"event: response.completed\ndata: {json.dumps(event)}\n\n".encode()


ODD_OUTPUT = {"id": "resp_up_1", "output": [{"type": "message", "content": 1}]}


async def test_an_odd_completed_response_is_relayed_whole(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An upstream's response.completed whose message content is no list is relayed whole."""
    body = completed_stream(ODD_OUTPUT)
    upstream.handler = sse_answer(body)
    answer = await post(client, "responses", {"input": "where is my order", "stream": True})
    assert answer.status_code == 200 and answer.content == body


async def test_an_odd_response_is_relayed(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An upstream's response whose message content is no list is relayed, not a 500."""
    upstream.handler = lambda request: httpx.Response(200, json=ODD_OUTPUT)
    answer = await post(client, "responses", {"input": "where is my order"})
    assert answer.status_code == 200 and answer.json() == ODD_OUTPUT
