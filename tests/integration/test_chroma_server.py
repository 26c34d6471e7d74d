"""The store against a real Chroma server (`chroma run` on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.decision import Route
from gatekeeper.errors import StoreError
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
