"""Rebuilds under load: readers in other stores (processes, replicas) never fail because a
rebuild flipped the pointer and dropped the build they were reading."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.decision import Route
from gatekeeper.errors import StoreError
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import make_gate

REBUILDS = 20
READERS = 3
MESSAGES = ["where is my order", "tell me a joke", "i want a refund", "write a poem"]


def test_rebuild_under_load_never_fails_a_reader(tmp_path: Path) -> None:
    """20 rebuilds while threads query through another store: no error of any kind, no
    fail-open, every decision right, and no more than two builds left behind."""
    writer: Gatekeeper = make_gate(tmp_path)
    writer.index()
    reader: Gatekeeper = make_gate(tmp_path)  # its own store: caches the build it reads
    reader.ready()
    failures: Counter[str] = Counter()
    fail_opens = 0
    decided = 0
    done = threading.Event()

    def read() -> None:
        nonlocal fail_opens, decided
        while not done.is_set():
            try:
                decisions = reader.check_many(MESSAGES, on_error="raise")
            except Exception as exc:  # counted, asserted below
                failures[f"{type(exc).__name__}: {exc}"] += 1
                continue
            decided += len(decisions)
            fail_opens += sum(d.gate_error is not None for d in decisions)
            assert decisions[0].route is Route.LLM
            assert decisions[1].route is Route.OFF_TOPIC

    threads = [threading.Thread(target=read) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(REBUILDS):
            writer.index(rebuild=True)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures.most_common(5)
    assert fail_opens == 0
    assert decided > 0
    assert len(_builds(writer)) <= 2


def _builds(gate: Gatekeeper) -> list[str]:
    return sorted(
        name
        for c in gate.store._client.list_collections()
        if (name := c if isinstance(c, str) else c.name).startswith(f"{gate.store.name}--")
    )


def test_a_rebuild_keeps_the_previous_build_until_the_next(tmp_path: Path) -> None:
    """Rebuild 1 keeps the build it replaced (readers may hold it); rebuild 2 drops it."""
    writer: Gatekeeper = make_gate(tmp_path)
    writer.index()
    first = _builds(writer)
    writer.index(rebuild=True)
    second = _builds(writer)
    assert len(second) == 2 and first[0] in second
    writer.index(rebuild=True)
    third = _builds(writer)
    assert len(third) == 2 and first[0] not in third and second[1] in third


def test_readers_follow_the_pointer_within_its_ttl(tmp_path: Path) -> None:
    """A reader re-reads the pointer every pointer_ttl seconds, so it does not keep serving the
    previous build just because that build still exists."""
    writer: Gatekeeper = make_gate(tmp_path)
    writer.index()
    reader: Gatekeeper = make_gate(tmp_path)
    reader.store.pointer_ttl = 0.0
    reader.check("where is my order")
    held = reader.store._active.name
    writer.index(rebuild=True)
    reader.check("where is my order")
    assert reader.store._active.name != held
    assert reader.store._active.name == writer.store.info().collection  # type: ignore[union-attr]


class _DroppedBuild:
    """A build whose rows lost their metadata (dropped while it was being read)."""

    name = "shop--dropped"
    metadata = None

    def get(self, **_: Any) -> dict[str, Any]:
        return {"ids": ["a"], "documents": ["x"], "metadatas": [None], "embeddings": [[0.0] * 8]}


@pytest.mark.parametrize("search", ["chroma", "memory"])
def test_malformed_rows_are_a_store_error(tmp_path: Path, monkeypatch: Any, search: str) -> None:
    """Rows without metadata (a build dropped mid-read) are a StoreError, never a TypeError,
    whether Chroma or the in-memory matrix searches."""
    gate: Gatekeeper = make_gate(tmp_path)
    gate.index()
    gate.store.search = search
    if search == "chroma":
        malformed = {
            "ids": [["a"]],
            "documents": [["x"]],
            "metadatas": [[None]],
            "distances": [[0.1]],
        }
        monkeypatch.setattr(gate.store, "_query", lambda *args: malformed)
    else:
        monkeypatch.setattr(gate.store, "_active_collection", lambda **_: _DroppedBuild())
    with pytest.raises(StoreError, match="malformed"):
        gate.check("where is my order", on_error="raise")
    decision = gate.check("where is my order", on_error="fail_open")
    assert decision.gate_error == "StoreError"
