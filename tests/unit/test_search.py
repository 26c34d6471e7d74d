"""In-memory nearest-exemplar search: the same neighbours as Chroma's query, reloaded when the
build changes, and the store's choice between the two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.catalog import parse_catalog
from gatekeeper.search import AUTO_MEMORY_FLOATS, ExemplarMatrix, use_memory
from gatekeeper.settings import StoreSettings
from gatekeeper.store import ExemplarStore, open_client
from gatekeeper.testing import HashingEmbedder, tiny_catalog
from gatekeeper.types import Neighbour

QUERIES = ["where is my order", "my parcel is late", "tell me a joke", "hello", "refund please"]


def _store(tmp_path: Path, search: str, *, pointer_ttl: float = 2.0) -> ExemplarStore:
    client = open_client(StoreSettings(), tmp_path)
    return ExemplarStore(client, "shop-test", top_k=6, search=search, pointer_ttl=pointer_ttl)


def test_memory_search_finds_what_chroma_finds(tmp_path: Path) -> None:
    """For every query the in-memory search returns Chroma's neighbours with the same
    similarities, in the same order (within float error; ties may break either way)."""
    embedder = HashingEmbedder()
    chroma = _store(tmp_path, "chroma")
    chroma.sync(tiny_catalog(), embedder)
    memory = _store(tmp_path, "memory")
    vectors = embedder.embed(QUERIES)
    for expected, got in zip(chroma.query(vectors), memory.query(vectors), strict=True):
        assert [n.similarity for n in got] == pytest.approx(
            [n.similarity for n in expected], abs=1e-5
        )
        cut = expected[-1].similarity + 1e-4  # ties at the k-th place may break either way

        def above(found: list[Neighbour], cut: float = cut) -> set[tuple[str, str, str]]:
            return {(n.id, n.intent, n.text) for n in found if n.similarity > cut}

        assert above(got) == above(expected)


def test_a_sync_elsewhere_reaches_the_matrix(tmp_path: Path) -> None:
    """A reader's matrix follows an incremental sync made through another store object (another
    process, in production) once its pointer check is due."""
    embedder = HashingEmbedder()
    writer, reader = _store(tmp_path, "memory"), _store(tmp_path, "memory", pointer_ttl=0.0)
    writer.sync(tiny_catalog(), embedder)
    probe = embedder.embed(["sing me a lullaby tonight"])
    assert all(n.text != "sing me a lullaby tonight" for n in reader.query(probe)[0])
    raw = tiny_catalog().model_dump(mode="json")
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], "sing me a lullaby tonight"]
    writer.sync(parse_catalog(raw), embedder)
    nearest = reader.query(probe)[0][0]
    assert (nearest.text, nearest.intent) == ("sing me a lullaby tonight", "off_topic")
    assert nearest.similarity == pytest.approx(1.0, abs=1e-5)


def test_auto_keeps_small_builds_in_memory_and_large_ones_in_chroma() -> None:
    """auto chooses memory up to AUTO_MEMORY_FLOATS and Chroma above; the explicit modes win."""
    assert use_memory("auto", 10_000, 384)
    assert not use_memory("auto", AUTO_MEMORY_FLOATS // 3072 + 1, 3072)
    assert use_memory("memory", 10**7, 3072)
    assert not use_memory("chroma", 10, 8)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    k=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_nearest_is_the_exact_top_k_in_order(rows: int, k: int, seed: int) -> None:
    """nearest() returns min(k, rows) exemplars, the most similar first, equal to a full sort."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(rows, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"e{i}" for i in range(rows)]
    matrix = ExemplarMatrix(("b", "h", rows), ids, ids, ["x"] * rows, vectors)
    query = rng.normal(size=(1, 8)).astype(np.float32)
    found = matrix.nearest(query, k)[0]
    full = sorted(zip((query @ vectors.T)[0], ids, strict=True), key=lambda p: -p[0])
    assert len(found) == min(k, rows)
    assert [n.similarity for n in found] == pytest.approx([float(s) for s, _ in full[:k]])
