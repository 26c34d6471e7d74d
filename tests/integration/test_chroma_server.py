"""The store against a real Chroma server (`chroma run` on loopback)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from gatekeeper.decision import Route
from gatekeeper.errors import StoreError
from gatekeeper.segment_folders import LEAK_AGE, data_dir
from gatekeeper.testing import make_gate
from tests.integration._processes import chroma_server

pytestmark = pytest.mark.integration


def test_index_and_check_through_a_chroma_server(tmp_path: Path) -> None:
    """With store.host set, the gate indexes into and queries a Chroma server."""
    with chroma_server(tmp_path / "chroma") as port:
        gate = make_gate(tmp_path / "unused", store={"host": "127.0.0.1", "port": port})
        report = gate.index()
        assert report.added == len(gate.catalog.exemplars())
        assert gate.check("where is my order").route is Route.LLM
        replica = make_gate(tmp_path / "unused2", store={"host": "127.0.0.1", "port": port})
        assert replica.check("tell me a joke").route is Route.OFF_TOPIC
        assert replica.store.info() == gate.store.info()


def test_chroma_going_away_is_a_store_error(tmp_path: Path) -> None:
    """If the server stops, checks raise StoreError, or follow the fail policy."""
    with chroma_server(tmp_path / "chroma") as port:
        gate = make_gate(
            tmp_path / "unused",
            store={"host": "127.0.0.1", "port": port},
            gate={"threshold": 0.35, "on_error": "fail_closed"},
        )
        gate.index()
    with pytest.raises(StoreError):
        gate.check("where is my order", on_error="raise")
    decision = gate.check("where is my order")
    assert decision.route is Route.OFF_TOPIC and decision.gate_error


def test_a_gate_that_has_searched_rides_out_chroma_going_away(tmp_path: Path) -> None:
    """A gate whose exemplars are in memory (the default search for a small catalog) keeps
    deciding from that copy while the Chroma server is down, with no gate error."""
    with chroma_server(tmp_path / "chroma") as port:
        gate = make_gate(
            tmp_path / "unused",
            store={"host": "127.0.0.1", "port": port, "search": "memory"},
            gate={"threshold": 0.35, "on_error": "fail_closed"},
        )
        gate.index()
        assert gate.check("track my order").route is Route.LLM  # loads the copy in memory
    gate.store.pointer_ttl = 0.0  # every query asks Chroma for the pointer first
    decision = gate.check("where is my order please", on_error="raise")
    assert decision.route is Route.LLM and decision.gate_error is None
    assert gate.check("tell me a joke", on_error="raise").route is Route.OFF_TOPIC


def test_builds_dropped_through_a_server_leave_its_folders_alone(tmp_path: Path) -> None:
    """With store.host set, rebuilds (each dropping a build) and syncs remove nothing under the
    server's path, not even an old folder that looks leaked: the server owns its disk."""
    path = tmp_path / "chroma"
    with chroma_server(path) as port:
        gate = make_gate(tmp_path / "unused", store={"host": "127.0.0.1", "port": port})
        gate.index()
        decoy = path / str(uuid.uuid4())
        decoy.mkdir()
        (decoy / "header.bin").write_bytes(b"x")
        then = time.time() - 2 * LEAK_AGE
        for item in (decoy / "header.bin", decoy):
            os.utime(item, (then, then))
        for _ in range(3):
            gate.index(rebuild=True)
        gate.index()
        assert data_dir(gate.store._client) is None
        assert decoy.is_dir() and (decoy / "header.bin").read_bytes() == b"x"
        assert gate.check("where is my order").route is Route.LLM
        assert not (tmp_path / "unused" / "chroma").exists()
