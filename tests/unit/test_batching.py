"""Micro-batching: concurrent decisions share forward passes; one bad message fails alone."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gatekeeper.batching import DecisionBatcher
from gatekeeper.decision import Decision, Route
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


async def test_cancelled_leader_does_not_strand_the_batch(tiny_gate: Gatekeeper) -> None:
    """If the caller running a batch is cancelled, the others in it still get answers."""
    batcher = DecisionBatcher(tiny_gate, on_error="raise")
    first = asyncio.create_task(batcher.decide("where is my order"))
    leader = asyncio.create_task(batcher.decide("where is my order"))
    followers = [asyncio.create_task(batcher.decide("tell me a joke")) for _ in range(5)]
    await first  # meanwhile the others queued; the leader now takes all of them in one batch
    for _ in range(3):
        await asyncio.sleep(0)
    leader.cancel()
    decisions = await asyncio.wait_for(asyncio.gather(*followers), timeout=30)
    assert all(d.route is Route.OFF_TOPIC for d in decisions)


class _CountingGate:
    """Wraps a gate; counts how many ``check_many`` calls are in flight at once (in the
    batcher's threads) and which threads made them."""

    def __init__(self, gate: Gatekeeper) -> None:
        self.gate = gate
        self.in_flight = 0
        self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def check_many(self, messages: list[str], *, on_error: str) -> list[Decision]:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.05)  # the forward pass
            return self.gate.check_many(messages, on_error=on_error)  # type: ignore[arg-type]
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_workers_bound_the_batches_in_flight(tiny_gate: Gatekeeper, workers: int) -> None:
    """With ``workers`` = N, up to N batches are decided at once, never more, and every
    caller gets its own answer."""
    counting = _CountingGate(tiny_gate)
    batcher = DecisionBatcher(counting, on_error="raise", max_batch=2, workers=workers)  # type: ignore[arg-type]
    texts = ["where is my order", "tell me a joke"] * 6
    decisions = await asyncio.gather(*(batcher.decide(t) for t in texts))
    batcher.close()
    assert counting.most == workers
    assert [d.route for d in decisions] == [Route.LLM, Route.OFF_TOPIC] * 6
    # Forward passes run on the batcher's own threads, never more of them than workers.
    assert len(counting.threads) <= workers
    assert all(name.startswith("gatekeeper-decide") for name in counting.threads)
