"""The embedded store's folders on disk: a dropped build's segment folder goes with it, and
folders that earlier versions' drops left behind are swept (real embedded Chroma)."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from gatekeeper.builds import POINTER_KEY, PREVIOUS_KEY
from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.segment_folders import LEAK_AGE, data_dir
from gatekeeper.settings import StoreSettings
from gatekeeper.store import ExemplarStore, open_client
from gatekeeper.testing import HashingEmbedder, tiny_catalog


def _store(tmp_path: Path) -> ExemplarStore:
    """An embedded store as the gate makes one (copy on write)."""
    settings = StoreSettings(top_k=3)
    return ExemplarStore.from_settings(open_client(settings, tmp_path), "shop-test", settings)


def _folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


def _vector_segments(root: Path, collection_ids: set[str]) -> set[str]:
    """The vector segments (each an HNSW folder) of the collections ``collection_ids``."""
    marks = ",".join("?" * len(collection_ids))
    query = f"SELECT id FROM segments WHERE scope = 'VECTOR' AND collection IN ({marks})"
    with closing(sqlite3.connect(root / "chroma.sqlite3")) as db:
        return {row[0] for row in db.execute(query, sorted(collection_ids))}


def _catalog(version: int) -> Catalog:
    raw = tiny_catalog().model_dump(mode="json")
    extra = [f"sing me song number {n}" for n in range(version)]
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], *extra]
    return parse_catalog(raw)


def _age(path: Path, seconds: float) -> None:
    """Date ``path`` and everything in it ``seconds`` back."""
    then = time.time() - seconds
    for item in [*path.iterdir(), path]:
        os.utime(item, (then, then))


@pytest.mark.parametrize("how", ["rebuild", "changed"])
def test_repeated_index_runs_leave_only_the_live_builds_folders(tmp_path: Path, how: str) -> None:
    """Six index runs that each make a build leave exactly the folders of the active and the
    previous build (each run used to leave one more), and both builds still answer."""
    store, embedder = _store(tmp_path), HashingEmbedder()
    for version in range(6):
        catalog = tiny_catalog() if how == "rebuild" else _catalog(version)
        store.sync(catalog, embedder, rebuild=how == "rebuild")
    client, root = store._client, tmp_path / "chroma"
    pointer = client.get_collection(store.name, embedding_function=None).metadata
    live = [
        client.get_collection(pointer[k], embedding_function=None)
        for k in (POINTER_KEY, PREVIOUS_KEY)
    ]
    assert _folders(root) == _vector_segments(root, {str(build.id) for build in live})
    assert len(_folders(root)) == 2
    query = np.asarray(embedder.embed(["where is my order"]), dtype=np.float32)
    assert store.query(query)[0][0].text == "where is my order"
    for build in live:
        hit = build.query(query_embeddings=query, n_results=1, include=["metadatas"])
        assert hit["metadatas"][0][0]["text"] == "where is my order"


def _leak(client: Any, name: str, embedder: HashingEmbedder) -> str:
    """A folder left the way earlier versions left one: a build filled, then deleted."""
    root = data_dir(client)
    assert root is not None
    before = _folders(root)
    build = client.create_collection(name, embedding_function=None)
    build.add(ids=["a", "b"], embeddings=embedder.embed(["x", "y"]), metadatas=[{"t": "x"}] * 2)
    client.delete_collection(name)
    (folder,) = _folders(root) - before
    return str(folder)


def test_a_sync_sweeps_old_folders_no_segment_names_and_nothing_else(tmp_path: Path) -> None:
    """A sync removes (and logs) HNSW folders no segment names that are older than LEAK_AGE; a
    young one, a folder with other files, a folder not named by a UUID and the live builds'
    folders stay."""
    store, embedder = _store(tmp_path), HashingEmbedder()
    store.sync(tiny_catalog(), embedder)
    root = tmp_path / "chroma"
    old = [_leak(store._client, f"earlier-{n}", embedder) for n in range(2)]
    young = _leak(store._client, "earlier-young", embedder)
    for name in old:
        _age(root / name, LEAK_AGE + 60)
    other = root / str(uuid.uuid4())
    other.mkdir()
    (other / "header.bin").write_bytes(b"x")
    (other / "notes.txt").write_text("mine")
    backup = root / "backup"
    backup.mkdir()
    (backup / "header.bin").write_bytes(b"x")
    for path in (other, backup):
        _age(path, LEAK_AGE + 60)
    live = _folders(root) - {*old, young, other.name, backup.name}
    assert len(live) == 1
    with capture_logs() as logs:
        store.sync(tiny_catalog(), embedder)  # nothing to change: only the sweep
    assert _folders(root) == {*live, young, other.name, backup.name}
    swept = [e for e in logs if e["event"] == "index.leaked_segment_folders_removed"]
    assert [e["folders"] for e in swept] == [sorted(old)]
    assert store.query(embedder.embed(["track my order"]))[0][0].text == "track my order"
