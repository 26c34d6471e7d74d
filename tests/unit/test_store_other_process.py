"""A sync by another process (``gatekeeper index`` beside a live proxy) never breaks a reader
of the embedded store, and the reader follows it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gatekeeper.decision import Route
from gatekeeper.testing import make_gate

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
