"""An index that disappears from Chroma (a lost volume, a wrong path) while the gate holds a copy of
it in memory is ridden out on that copy, as an unreachable Chroma is; a gate that never had a copy
still fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatekeeper.errors import IndexMissingError
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import make_gate
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import serving

ORDER = "where is my order"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gatekeeper]:
    built = make_gate(tmp_path)
    built.index()
    yield built
    built.close()


def test_decisions_ride_out_an_index_gone_from_chroma_on_the_copy(gate: Gatekeeper) -> None:
    """Once the gate has searched its copy, an index dropped from Chroma does not fail its
    decisions: they come from the copy, and store.index_missing is logged once, naming
    `gatekeeper index`."""
    before = gate.check(ORDER)
    assert gate.store.serving_copy() is not None
    gate.store.drop_all()  # the collection gone, as with a lost volume
    with capture_logs() as logs:
        after = [gate.check(ORDER), gate.check("tell me a joke"), gate.check(ORDER)]
    assert after[0].route is before.route and after[0].intent == before.intent
    assert all(decision.gate_error is None for decision in after)
    [missing] = [entry for entry in logs if entry["event"] == "store.index_missing"]
    assert missing["log_level"] == "warning" and "gatekeeper index" in missing["hint"]


def test_a_gate_without_a_copy_still_fails_on_a_missing_index(gate: Gatekeeper) -> None:
    """A gate that never searched (no copy in memory) still raises IndexMissingError."""
    gate.ready()
    gate.store.drop_all()
    assert gate.store.serving_copy() is None
    with pytest.raises(IndexMissingError):
        gate.check(ORDER, on_error="raise")


async def test_readyz_is_degraded_index_missing_while_the_copy_answers(gate: Gatekeeper) -> None:
    """/readyz answers 200 degraded with reason index_missing (naming the copy served) while
    the index is gone and a copy answers."""
    async with serving(gate, FakeUpstream()) as client:
        gate.check(ORDER)
        gate.store.drop_all()
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded" and body["reason"] == "index_missing"
    assert body["exemplars"] > 0
