"""The memory the remembered Responses conversations hold, measured as the objects in memory
(not the process's RSS): within ``server.response_threads_bytes`` whatever the items' shape."""

from __future__ import annotations

import gc
import json
import sys
import types
from typing import Any

import httpx

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.threads import ResponseThreads
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import running_app

BUDGET = 1024 * 1024
#: What an empty ResponseThreads and each held answer's bookkeeping take beyond the budget
#: (the lock, the dicts, the record and key of each answer): far below one answer's items.
SLACK = 64 * 1024


def _memory(root: object) -> int:
    """The bytes of every object reachable from ``root`` (``sys.getsizeof`` over the garbage
    collector's referents, each object once; classes, modules and functions left out)."""
    skipped = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    stack: list[Any] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skipped):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _output(call: int) -> dict[str, Any]:
    """A tool output of 4,000 empty objects: 12 KB of JSON, 290 KB as parsed dicts."""
    return {"type": "function_call_output", "call_id": f"c{call}", "output": [{}] * 4000}


async def test_items_remembered_after_a_refusal_are_held_within_the_budget(
    gate: Gatekeeper,
) -> None:
    """Tool outputs of many empty objects, remembered after each refusal for the upstream, hold
    no more memory than server.response_threads_bytes (counted as their JSON, they were held
    as parsed objects 20 times larger); continuing a refusal sends them as the client did."""
    upstream = FakeUpstream()
    items = [_output(call) for call in range(15)]
    body = {"model": "m", "input": [*items, {"role": "user", "content": "tell me a joke"}]}
    async with running_app(gate, upstream, response_threads_bytes=BUDGET) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            for _ in range(8):
                refused = await client.post("/v1/responses", json=body)
                assert refused.headers["x-gatekeeper-route"] == "off_topic"
            threads: ResponseThreads = app.state.proxy.threads
            assert threads.get(refused.json()["id"]) is not None
            assert threads.bytes <= BUDGET
            assert _memory(threads) <= BUDGET + SLACK
            order = {"role": "user", "content": "where is my order"}
            then = {"model": "m", "input": [order], "previous_response_id": refused.json()["id"]}
            assert (await client.post("/v1/responses", json=then)).status_code == 200
    assert json.loads(upstream.requests[-1].content) == {"model": "m", "input": [*items, order]}
