"""A sync by another process (``gatekeeper index`` beside a live proxy) never breaks a reader
of the embedded store, and the reader follows it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from gatekeeper.decision import Route
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.testing import HashingEmbedder, make_gate

WRITER = """
import sys
from pathlib import Path
from gatekeeper.catalog import parse_catalog
from gatekeeper.testing import make_gate, tiny_catalog

raw = tiny_catalog().model_dump(mode="json")
raw["intents"][0]["exemplars"].append("where has my parcel got to")
report = make_gate(Path(sys.argv[1]), catalog=parse_catalog(raw, source="edited")).index()
print(report.added, report.unchanged)
"""


def test_an_incremental_sync_by_another_process_is_followed_not_fatal(tmp_path: Path) -> None:
    """A reader holding the embedded store keeps deciding after another process adds an
    exemplar (it failed every query with "Error finding id" until restart), and sees the new
    exemplar once the pointer is re-read."""
    reader = make_gate(tmp_path)
    reader.index()
    reader.store.pointer_ttl = 0.05
    messages = ["where is my order", "tell me a joke"]
    assert [d.route for d in reader.check_many(messages, on_error="raise")] == [
        Route.LLM,
        Route.OFF_TOPIC,
    ]
    written = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert written.stdout.split() == ["1", "11"]
    time.sleep(0.1)
    for _ in range(3):
        decisions = reader.check_many(messages, on_error="raise")
        assert [d.route for d in decisions] == [Route.LLM, Route.OFF_TOPIC]
    assert "where has my parcel got to" in reader.store.exemplars().texts


CATALOG = """
intents:
  - name: order_status
    exemplars: [where is my order, track my order, order status please]
  - name: refund_request
    exemplars: [i want a refund, refund my money, how do refunds work]
off_topic:
  reply: {reply}
  exemplars: [tell me a joke, what is the weather today, write a poem]
"""
ENGRAVING = """  - name: engraving
    exemplars: [can you engrave my initials, engrave a name on the watch, engraving options]
"""


def _serving(catalog: Path) -> Gatekeeper:
    settings = Settings(
        data_dir=catalog.parent,
        catalog=catalog,
        gate={"threshold": 0.35, "rule": "contrast", "allow_uncalibrated": True},
    )
    return Gatekeeper.from_settings(settings, embedder=HashingEmbedder())


def _replica_then_edit_elsewhere(tmp_path: Path) -> Gatekeeper:
    """A replica serving a catalog file (it refuses with "old refusal"), after another gate
    indexed that file edited: a new intent (engraving) and "new refusal"."""
    catalog = tmp_path / "shop.yaml"
    catalog.write_text(CATALOG.format(reply="old refusal"), encoding="utf-8")
    replica = _serving(catalog)
    replica.index()
    replica.store.pointer_ttl = 0.05
    assert replica.check("tell me a joke").reply == "old refusal"
    edited = CATALOG.format(reply="new refusal").replace("off_topic:", ENGRAVING + "off_topic:")
    catalog.write_text(edited, encoding="utf-8")
    _serving(catalog).index()
    time.sleep(0.1)  # the replica's pointer check is due
    return replica


def _routes_engraving(replica: Gatekeeper) -> bool:
    """Whether ``replica`` routes to the new intent within 5 s (the new build loads first)."""
    for _ in range(500):
        if replica.check("can you engrave my initials").intent == "engraving":
            return True
        time.sleep(0.01)
    return False


def test_a_replica_serves_the_catalog_that_was_indexed_elsewhere(tmp_path: Path) -> None:
    """A gate serving a catalog file follows `index` run elsewhere on that file: a new intent
    is routed to (it was dropped as unknown), and the new refusal is sent (the old one was)."""
    replica = _replica_then_edit_elsewhere(tmp_path)
    assert _routes_engraving(replica)  # the first decision after the pointer moved loads it
    assert replica.check("tell me a joke").reply == "new refusal"


def test_the_catalog_moves_with_the_copy_in_memory(
    tmp_path: Path, held_loads: threading.Event
) -> None:
    """While a build indexed elsewhere loads behind the copy before, the replica keeps the
    catalog of the copy it answers from (the old refusal); both move together once loaded."""
    replica = _replica_then_edit_elsewhere(tmp_path)
    for _ in range(3):  # the new build is loading: the copy before and its catalog answer
        assert replica.check("tell me a joke").reply == "old refusal"
    held_loads.set()
    assert _routes_engraving(replica)
    assert replica.check("tell me a joke").reply == "new refusal"
