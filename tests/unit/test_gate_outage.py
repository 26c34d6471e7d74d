"""An outage of the gate's model: what ends it (a call that reached the model, not a turn the turn
cache answered), and the proxy's readiness during it (it probes the model itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatekeeper.errors import EmbeddingError
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.testing import tiny_catalog
from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import BreakableEmbedder
from tests.support.proxy import serving

ORDER = "where is my order"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gatekeeper]:
    settings = Settings(
        data_dir=tmp_path,
        gate={"threshold": 0.35, "rule": "contrast", "allow_uncalibrated": True},
    )
    built = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=BreakableEmbedder())
    built.index()
    yield built
    built.close()


def break_model(gate: Gatekeeper, broken: bool = True) -> None:
    assert isinstance(gate.embedder, BreakableEmbedder)
    gate.embedder.failure = EmbeddingError("embeddings server down") if broken else None


def test_a_turn_from_the_turn_cache_does_not_end_a_model_outage(gate: Gatekeeper) -> None:
    """During a model outage, a decision whose turns all came from the turn cache logs no
    gate.recovered (the model was not called); the next one that reaches the model does."""
    gate.check(ORDER)  # its vector is now in the turn cache
    break_model(gate)
    with capture_logs() as logs:
        assert gate.check("tell me a joke").gate_error == "EmbeddingError"
        assert gate.check(ORDER).gate_error is None  # decided from the cached vector
        assert gate.check("a brand new question").gate_error == "EmbeddingError"
        break_model(gate, broken=False)
        gate.check(ORDER)  # the model is back, but this decision did not call it
        assert outage_events(logs) == ["gate.failed"]
        gate.check("yet another question")
    assert outage_events(logs) == ["gate.failed", "gate.recovered"]


def outage_events(logs: list[dict[str, object]]) -> list[object]:
    return [e["event"] for e in logs if e["event"] in ("gate.failed", "gate.recovered")]


def test_the_model_probe_follows_an_outage_of_the_model(gate: Gatekeeper) -> None:
    """probe_embedder does nothing for a working gate; during a model outage it raises while
    the model fails and ends the outage (gate.recovered) once it answers."""
    gate.probe_embedder()
    break_model(gate)
    gate.check("tell me a joke")
    with pytest.raises(EmbeddingError):
        gate.probe_embedder()
    break_model(gate, broken=False)
    with capture_logs() as logs:
        gate.probe_embedder()
    assert [e["event"] for e in logs] == ["gate.recovered"]


async def test_readyz_is_503_during_a_model_outage_and_recovers_without_traffic(
    gate: Gatekeeper,
) -> None:
    """Once decisions fail on the model (an embeddings server down after the gate worked),
    /readyz answers 503 not_ready with reason EmbeddingError; when the model is back, /readyz
    itself finds it (no request needed) and answers 200 ready."""
    async with serving(gate, FakeUpstream()) as client:
        assert (await client.get("/readyz")).json()["status"] == "ready"
        break_model(gate)
        gate.check("tell me a joke")  # a decision fails: the outage begins
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json() == {"status": "not_ready", "reason": "EmbeddingError"}
        break_model(gate, broken=False)
        up = await client.get("/readyz")
    assert up.status_code == 200 and up.json()["status"] == "ready"
