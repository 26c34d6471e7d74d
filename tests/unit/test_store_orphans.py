"""Orphan builds (a build left half-filled by a killed `index`) are dropped once they are old
enough that no other process can still be filling them (embedded Chroma)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatekeeper.builds import ORPHAN_AGE, built_at, new_build_name, orphans
from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.settings import StoreSettings
from gatekeeper.store import ExemplarStore, open_client
from gatekeeper.testing import HashingEmbedder, tiny_catalog


def _names(store: ExemplarStore) -> set[str]:
    return {c if isinstance(c, str) else c.name for c in store._client.list_collections()}


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - seconds_ago))


def _changed_catalog() -> Catalog:
    raw = tiny_catalog().model_dump(mode="json")
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], "sing me a song"]
    return parse_catalog(raw)


@pytest.mark.parametrize("how", ["unchanged", "changed", "rebuild"])
def test_a_sync_drops_old_orphan_builds_and_keeps_fresh_ones(tmp_path: Path, how: str) -> None:
    """Any sync drops and logs an unnamed build made days ago; a minute-old one and others stay."""
    store = ExemplarStore(open_client(StoreSettings(), tmp_path), "shop-test", top_k=5)
    embedder = HashingEmbedder()
    store.sync(tiny_catalog(), embedder)
    store.sync(tiny_catalog(), embedder, rebuild=True)  # the first build is now the previous
    old = f"{store.name}--{_stamp(3 * 86400)}-807808837"
    fresh = f"{store.name}--{_stamp(60)}-000000001"
    others = {f"{store.name}-other--{_stamp(3 * 86400)}-000000002", f"{store.name}--notes"}
    for name in (old, fresh, *others):
        half = store._client.create_collection(name, embedding_function=None)
        half.add(ids=["a"], embeddings=[[0.5] * embedder.dimension], metadatas=[{"text": "x"}])
    kept = _names(store) - {old}
    with capture_logs() as logs:
        if how == "rebuild":
            report = store.sync(tiny_catalog(), embedder, rebuild=True)
        else:
            catalog = tiny_catalog() if how == "unchanged" else _changed_catalog()
            report = store.sync(catalog, embedder)
    names = _names(store)
    assert old not in names and {fresh, *others, report.collection} <= names
    assert names - {report.collection} <= kept  # a flip drops the build before the previous
    dropped = [e for e in logs if e["event"] == "index.orphan_builds_dropped"]
    assert [e["builds"] for e in dropped] == [[old]]
    info = store.info()
    assert info is not None and info.collection == report.collection
    assert info.count == report.added + report.unchanged


def test_a_build_is_an_orphan_only_past_orphan_age_and_only_of_its_store() -> None:
    """A build's name dates it (UTC); past ORPHAN_AGE, unkept and of this store, it is an orphan."""
    now = time.time()
    young = new_build_name("s", int((now - ORPHAN_AGE + 60) * 10**9))
    old = new_build_name("s", int((now - ORPHAN_AGE - 60) * 10**9))
    kept = new_build_name("s", int((now - 2 * ORPHAN_AGE) * 10**9))
    other = new_build_name("s-x", int((now - 2 * ORPHAN_AGE) * 10**9))
    assert built_at("s", old) == pytest.approx(now - ORPHAN_AGE - 60, abs=1e-3)
    names = [young, old, kept, other, "s--notes", "s", "s--20261399000000-000000000"]
    assert list(orphans("s", names, {kept}, now, ORPHAN_AGE)) == [old]
