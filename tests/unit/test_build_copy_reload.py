"""A copy of the build in memory that fails to reload is said once (then every few seconds),
retried, reported by /readyz as the copy served ("degraded"), and its recovery logged (real
embedded Chroma)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.gate import Gatekeeper
from gatekeeper.search import ExemplarMatrix
from gatekeeper.testing import make_gate, tiny_catalog
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ORDER, serving

#: An older gatekeeper's `index` in another process: the two new rows written in place, into
#: the build the serving process holds (which an embedded client cannot read back).
IN_PLACE = """
import sys
from pathlib import Path
from gatekeeper.catalog import parse_catalog
from gatekeeper.testing import make_gate, tiny_catalog

raw = tiny_catalog().model_dump(mode="json")
raw["intents"][0]["exemplars"] += ["where has my parcel got to", "parcel tracking number"]
gate = make_gate(Path(sys.argv[1]), catalog=parse_catalog(raw, source="edited"))
gate.store.copy_on_write = False
report = gate.index()
print(report.collection, report.added)
"""


def _edited() -> Catalog:
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["exemplars"] += ["where has my parcel got to", "parcel tracking number"]
    return parse_catalog(raw, source="edited")


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def _decide(proxied: httpx.AsyncClient) -> None:
    answer = await proxied.post("/v1/chat/completions", json={"model": "m", "messages": ORDER})
    assert answer.status_code == 200


async def _decide_until(proxied: httpx.AsyncClient, done: Any, seconds: float = 20.0) -> None:
    """Send decisions until ``done()`` (a background load finished), for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline
        await _decide(proxied)
        await asyncio.sleep(0.02)


async def test_a_reload_that_keeps_failing_is_logged_once_and_readyz_says_degraded(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """An older process's in-place index makes every reload fail: twenty decisions later there
    is one `store.reload_failed` (there was none), /readyz answers 200 "degraded" naming the
    11-exemplar copy it serves and the store's 13 (it said ready with 13); once a rebuild moves
    the pointer, the copy loads, `store.reload_recovered` is logged and /readyz is ready."""
    gate: Gatekeeper = make_gate(tmp_path, store={"search": "memory"})
    gate.index()
    gate.store.pointer_ttl = 0.05
    async with serving(gate, upstream) as proxied:
        await _decide(proxied)
        served = gate.store.info()
        assert served is not None and served.count == 11
        written = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", IN_PLACE, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert written.stdout.split() == [served.collection, "2"]
        await asyncio.sleep(0.1)  # the pointer is due for a re-read
        with capture_logs() as logs:
            for _ in range(20):
                await _decide(proxied)
            await _decide_until(proxied, lambda: gate.store.reload_failing)
            for _ in range(20):
                await _decide(proxied)
            ready = (await proxied.get("/readyz")).json()
        failed = _events(logs, "store.reload_failed")
        assert len(failed) == 1, failed
        assert failed[0]["serving_exemplars"] == 11 and failed[0]["exemplars"] == 13
        assert "Error finding id" in failed[0]["error"]
        assert ready["status"] == "degraded" and ready["reason"] == "reload_failed"
        assert (ready["collection"], ready["exemplars"]) == (served.collection, 11)
        assert ready["indexed"] == {"collection": served.collection, "exemplars": 13}
        with capture_logs() as logs:
            rebuilder = make_gate(tmp_path, catalog=_edited())
            rebuilt = await asyncio.to_thread(rebuilder.index, rebuild=True)
            await asyncio.sleep(0.1)
            await _decide_until(proxied, lambda: not gate.store.reload_failing)
            ready = (await proxied.get("/readyz")).json()
        recovered = _events(logs, "store.reload_recovered")
        assert [(e["collection"], e["exemplars"]) for e in recovered] == [(rebuilt.collection, 13)]
        assert ready["status"] == "ready" and "indexed" not in ready
        assert (ready["collection"], ready["exemplars"]) == (rebuilt.collection, 13)


@pytest.fixture
def flaky_loads(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Background loads of a build's copy fail (as Chroma does: "Error finding id") while the
    event is set; the list records each background attempt's build."""
    broken, attempts = threading.Event(), []
    load = ExemplarMatrix.load

    def flaky(collection: Any, key: Any) -> ExemplarMatrix:
        if threading.current_thread().name == "gatekeeper-build-copy":
            attempts.append(key[0])
            if broken.is_set():
                raise RuntimeError("Error executing plan: Internal error: Error finding id")
        return load(collection, key)

    monkeypatch.setattr(ExemplarMatrix, "load", flaky)
    return broken, attempts


def test_a_failed_reload_is_retried_after_the_retry_interval_not_by_every_query(
    tmp_path: Path, flaky_loads: tuple[threading.Event, list[str]]
) -> None:
    """While a build fails to load, queries go on from the copy before and retry the load at
    most once per retry interval (each query started one before); when it loads, the copy
    and the gate's catalog move to it and the recovery is logged once."""
    broken, attempts = flaky_loads
    gate = make_gate(tmp_path, store={"search": "memory"})
    gate.index()
    gate.store.pointer_ttl = 0.0
    gate.store._copy._retry_seconds = 0.5
    assert gate.check("where is my order").route.value == "llm"
    broken.set()
    new = make_gate(tmp_path, catalog=_edited()).index()
    with capture_logs() as logs:
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            gate.check("where is my order", on_error="raise")
            time.sleep(0.01)
        assert gate.store.reload_failing and len(gate.store.serving_copy() or []) == 11
        assert 2 <= len(attempts) <= 4, attempts
        broken.clear()
        deadline = time.monotonic() + 10
        while gate.store.reload_failing:
            assert time.monotonic() < deadline
            gate.check("where is my order", on_error="raise")
            time.sleep(0.05)
    assert set(attempts) == {new.collection}
    assert [e["event"] for e in logs if e["event"].startswith("store.reload")] == [
        "store.reload_failed",
        "store.reload_recovered",
    ]
    assert _events(logs, "store.reload_recovered")[0]["failures"] == len(attempts) - 1
    copy = gate.store.serving_copy()
    assert copy is not None and "parcel tracking number" in copy.texts
    assert gate.check("parcel tracking number").intent == "order_status"


def test_a_build_that_reads_back_short_is_not_served(
    tmp_path: Path, held_loads: threading.Event
) -> None:
    """A build whose rows are gone by the time its copy loads (a Chroma server's get that races
    the build's drop answers no rows, not NotFound) is a failed reload, not an empty copy that
    refused every message as off-topic with no gate error."""
    gate = make_gate(tmp_path, store={"search": "memory"})
    gate.index()
    gate.store.pointer_ttl = 0.0
    assert gate.check("where is my order", on_error="raise").route.value == "llm"
    new = make_gate(tmp_path, catalog=_edited()).index(rebuild=True)
    with capture_logs() as logs:
        assert gate.check("where is my order", on_error="raise").route.value == "llm"  # held
        build = gate.store._client.get_collection(new.collection, embedding_function=None)
        build.delete(ids=build.get()["ids"])  # what the server's racing get answers
        held_loads.set()
        deadline = time.monotonic() + 10
        while not gate.store.reload_failing and gate.store.copy_behind() is not None:
            assert time.monotonic() < deadline  # until the load is done, either way
            time.sleep(0.01)
        for text in ("where is my order", "i want a refund"):
            assert gate.check(text, on_error="raise").route.value == "llm"
    copy = gate.store.serving_copy()
    assert copy is not None and len(copy) == 11
    (failed,) = _events(logs, "store.reload_failed")
    assert "0 of its 13 rows" in failed["error"]


def test_a_build_read_with_no_rows_is_never_served(tmp_path: Path) -> None:
    """A build whose rows are all gone, its count read after they went (0), is a failed reload
    too: the copy before keeps answering, instead of an empty copy refusing every message."""
    from gatekeeper.build_copy import BuildCopy
    from gatekeeper.errors import StoreError

    gate = make_gate(tmp_path, store={"search": "memory"})
    report = gate.index()
    build = gate.store._client.get_collection(report.collection, embedding_function=None)
    copy = BuildCopy(lambda call, passthrough=(): call())
    served = copy.of(build, build.count())
    build.delete(ids=build.get()["ids"])
    with pytest.raises(StoreError, match="read back 0 of its 0 rows"):
        copy.of(build, build.count())
    assert copy.matrix is served and len(served) == 11
