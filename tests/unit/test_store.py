"""The Chroma store: incremental sync, model check, atomic rebuild (embedded Chroma)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.catalog import parse_catalog
from gatekeeper.errors import IndexMismatchError, IndexMissingError, StoreUnavailableError
from gatekeeper.settings import StoreSettings
from gatekeeper.store import ExemplarStore, open_client
from gatekeeper.testing import HashingEmbedder, tiny_catalog


def _store(tmp_path: Path, name: str = "shop-test") -> ExemplarStore:
    return ExemplarStore(open_client(StoreSettings(), tmp_path), name, top_k=5)


def test_first_sync_builds_and_records_model(tmp_path: Path) -> None:
    """A first sync builds the collection with the model, dimension and catalog hash."""
    store, embedder, catalog = _store(tmp_path), HashingEmbedder(), tiny_catalog()
    report = store.sync(catalog, embedder)
    info = store.check_compatible(embedder)
    assert report.rebuilt and report.added == len(catalog.exemplars())
    assert (info.model, info.dimension) == (embedder.identity, embedder.dimension)
    assert info.catalog_hash == catalog.content_hash()
    assert info.count == len(catalog.exemplars())


def test_incremental_sync_adds_and_deletes_only_the_difference(tmp_path: Path) -> None:
    """Changing one exemplar re-embeds only it: one added, one deleted, the rest unchanged."""
    store, embedder = _store(tmp_path), HashingEmbedder()
    store.sync(tiny_catalog(), embedder)
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["exemplars"] = ["where is my order", "track my order", "parcel status"]
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], "sing a song"]
    changed = parse_catalog(raw)
    calls_before = embedder.calls
    report = store.sync(changed, embedder)
    assert (report.added, report.deleted, report.rebuilt) == (2, 1, False)
    assert report.unchanged == len(changed.exemplars()) - 2
    assert embedder.calls == calls_before + 1
    assert store.info() is not None
    assert store.info().count == len(changed.exemplars())  # type: ignore[union-attr]


def test_other_model_is_refused(tmp_path: Path) -> None:
    """An index built with one model cannot be served or synced with another."""
    store = _store(tmp_path)
    store.sync(tiny_catalog(), HashingEmbedder(256))
    other = HashingEmbedder(128)
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        store.check_compatible(other)
    with pytest.raises(IndexMismatchError):
        store.sync(tiny_catalog(), other)
    report = store.sync(tiny_catalog(), other, rebuild=True)
    assert report.rebuilt and store.check_compatible(other).dimension == 128


def test_missing_index(tmp_path: Path) -> None:
    """Querying or checking before any build says to run `gatekeeper index`."""
    store = _store(tmp_path)
    with pytest.raises(IndexMissingError, match="gatekeeper index"):
        store.check_compatible(HashingEmbedder())


def test_rebuild_flips_pointer_for_other_readers(tmp_path: Path) -> None:
    """A reader holding the old build follows the pointer after another process rebuilds."""
    embedder = HashingEmbedder()
    writer = _store(tmp_path)
    writer.sync(tiny_catalog(), embedder)
    reader = ExemplarStore(open_client(StoreSettings(), tmp_path), "shop-test", top_k=3)
    vector = embedder.embed(["where is my order"])
    old_name = reader.check_compatible(embedder).collection
    assert reader.query(vector)[0][0].intent == "order_status"
    writer.sync(tiny_catalog(), embedder, rebuild=True)
    hits = reader.query(vector)[0]
    assert hits[0].intent == "order_status" and hits[0].similarity > 0.99
    assert reader.info().collection != old_name  # type: ignore[union-attr]


def test_failed_rebuild_keeps_the_old_index(tmp_path: Path) -> None:
    """If embedding fails mid-rebuild, readers keep the previous complete build."""

    class Broken(HashingEmbedder):
        def _encode(self, texts: list[str]) -> object:  # type: ignore[override]
            raise RuntimeError("model crashed")

    store = _store(tmp_path)
    store.sync(tiny_catalog(), HashingEmbedder())
    before = store.info()
    with pytest.raises(RuntimeError):
        store.sync(tiny_catalog(), Broken(), rebuild=True)
    assert store.info() == before


def test_unreachable_server() -> None:
    """A Chroma server that is not there is a StoreUnavailableError."""
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:9"):
        open_client(StoreSettings(host="127.0.0.1", port=9), Path("."))


SEARCH_PATHS = ["memory", "chroma"]


def _indexed(tmp_path: Path, search: str) -> tuple[ExemplarStore, HashingEmbedder, Any]:
    """A store on ``search``, the tiny catalog indexed into it, and its active build."""
    store = ExemplarStore(open_client(StoreSettings(), tmp_path), "shop-test", search=search)
    embedder = HashingEmbedder()
    store.sync(tiny_catalog(), embedder)
    return store, embedder, store._active_collection(refresh=True)


def _nearest(store: ExemplarStore, embedder: HashingEmbedder) -> tuple[str, str]:
    hit = store.query(embedder.embed(["where is my order"]))[0][0]
    return hit.text, hit.intent


@pytest.mark.parametrize("search", SEARCH_PATHS)
def test_an_in_memory_search_rides_out_a_chroma_blip(
    tmp_path: Path, search: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Chroma unreachable, a store searching its in-memory copy still answers from it
    (the same neighbours); a store that searches in Chroma raises StoreUnavailableError."""
    import httpx

    store, embedder, _ = _indexed(tmp_path, search)
    before = _nearest(store, embedder)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise httpx.ConnectError("Could not connect to a Chroma server")

    monkeypatch.setattr(store._client, "get_or_create_collection", unreachable)
    store.pointer_ttl = 0.0  # the pointer is due for a re-read: Chroma is asked
    if search == "memory":
        assert _nearest(store, embedder) == before
    else:
        with pytest.raises(StoreUnavailableError):
            _nearest(store, embedder)


@pytest.mark.parametrize("search", SEARCH_PATHS)
def test_a_build_keeps_each_text_in_its_metadata_not_as_a_chroma_document(
    tmp_path: Path, search: str
) -> None:
    """Rows carry the text in metadata (no document to full-text index); neighbours show it."""
    store, embedder, build = _indexed(tmp_path, search)
    rows = build.get(include=["documents", "metadatas"])
    assert set(rows["documents"]) == {None}
    texts = sorted(e.text for e in tiny_catalog().exemplars())
    assert sorted(m["text"] for m in rows["metadatas"]) == texts
    assert _nearest(store, embedder) == ("where is my order", "order_status")


@pytest.mark.parametrize("search", SEARCH_PATHS)
def test_a_build_from_before_keeps_its_documents_readable_and_in_sync(
    tmp_path: Path, search: str
) -> None:
    """A build whose texts are Chroma documents is read as before; a sync re-embeds nothing."""
    _, embedder, build = _indexed(tmp_path, search)
    rows = build.get(include=["embeddings", "metadatas"])
    build.delete(ids=rows["ids"])
    build.add(  # the layout of earlier versions: the text as the document
        ids=rows["ids"],
        embeddings=rows["embeddings"],
        documents=[m.pop("text") for m in rows["metadatas"]],
        metadatas=rows["metadatas"],
    )
    assert all("text" not in m for m in build.get(include=["metadatas"])["metadatas"])
    reader = ExemplarStore(open_client(StoreSettings(), tmp_path), "shop-test", search=search)
    assert _nearest(reader, embedder) == ("where is my order", "order_status")
    calls = embedder.calls
    report = reader.sync(tiny_catalog(), embedder)
    assert (report.added, report.deleted, report.rebuilt) == (0, 0, False)
    assert embedder.calls == calls


async def test_an_idle_proxy_loads_a_changed_build_before_its_next_request(
    tmp_path: Path,
) -> None:
    """keep_warm refreshes the gate: a build another gate indexed (a changed catalog) is loaded
    into the serving gate's in-memory copy with no request asking for it."""
    import asyncio
    from types import SimpleNamespace
    from typing import cast

    from gatekeeper.interfaces.proxy.state import Proxy, keep_warm
    from gatekeeper.testing import make_gate

    serving = make_gate(tmp_path, store={"search": "memory"})
    serving.index()
    serving.check("where is my order")  # the copy in memory
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["exemplars"] = [*raw["intents"][0]["exemplars"], "parcel tracking number"]
    make_gate(tmp_path, catalog=parse_catalog(raw), store={"search": "memory"}).index()

    def copied() -> list[str]:
        return serving.store._copy.matrix.texts  # type: ignore[union-attr]

    assert "parcel tracking number" not in copied()
    warming = asyncio.create_task(keep_warm(cast(Proxy, SimpleNamespace(gate=serving)), 0.01))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if "parcel tracking number" in copied():
            break
    warming.cancel()
    assert "parcel tracking number" in copied()


def test_an_open_that_fails_silently_names_its_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Chroma client that fails with an empty message (a connect timeout) is reported by the
    exception's name and what to check, not as "cannot open ... at host:port: " with nothing
    after it."""
    import chromadb

    def timeout(**_: object) -> None:
        raise TimeoutError()

    monkeypatch.setattr(chromadb, "HttpClient", timeout)
    hint = "TimeoutError with no message: is the server running, at that host and port?"
    with pytest.raises(StoreUnavailableError, match=rf"10\.0\.0\.9:8000: {re.escape(hint)}$"):
        open_client(StoreSettings(host="10.0.0.9", port=8000), tmp_path)
