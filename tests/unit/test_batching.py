"""Micro-batching: concurrent decisions share forward passes; one bad message fails alone."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.batching import DecisionBatcher
from gatekeeper.decision import Route
from gatekeeper.errors import EmptyMessageError
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import HashingEmbedder


async def test_concurrent_decisions_share_batches(tiny_gate: Gatekeeper) -> None:
    """Twenty concurrent requests take fewer forward passes than requests, same answers."""
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    batcher = DecisionBatcher(tiny_gate, on_error="raise")
    texts = ["where is my order", "tell me a joke"] * 10
    before = embedder.calls
    decisions = await asyncio.gather(*(batcher.decide(t) for t in texts))
    assert embedder.calls - before < len(texts)
    assert [d.route for d in decisions] == [Route.LLM, Route.OFF_TOPIC] * 10


async def test_one_bad_message_fails_alone(tiny_gate: Gatekeeper) -> None:
    """An empty message in a batch raises for its caller only."""
    batcher = DecisionBatcher(tiny_gate, on_error="raise")
    results = await asyncio.gather(
        batcher.decide("where is my order"),
        batcher.decide("   "),
        batcher.decide("tell me a joke"),
        return_exceptions=True,
    )
    assert isinstance(results[1], EmptyMessageError)
    assert [getattr(r, "route", None) for r in (results[0], results[2])] == [
        Route.LLM,
        Route.OFF_TOPIC,
    ]


async def test_single_message_is_its_own_batch(tiny_gate: Gatekeeper) -> None:
    """At low load a request is decided at once, alone."""
    batcher = DecisionBatcher(tiny_gate, on_error="raise")
    assert (await batcher.decide("where is my order")).route is Route.LLM
    with pytest.raises(EmptyMessageError):
        await batcher.decide("")
