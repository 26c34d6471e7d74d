"""In-memory nearest-exemplar search: the same neighbours as Chroma's query, reloaded when the
build changes; the coarse PCA search re-ranked exactly; and the store's choice between them."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.catalog import parse_catalog
from gatekeeper.coarse import CoarseIndex
from gatekeeper.search import (
    AUTO_MEMORY_FLOATS,
    AUTO_PCA_FLOATS,
    AUTO_PCA_MAX_FLOATS,
    PCA_CANDIDATES,
    PCA_DIMENSIONS,
    ExemplarMatrix,
    search_path,
)
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


def _loaded(store: ExemplarStore, probe: Any, text: str) -> Neighbour:
    """The nearest neighbour of ``probe`` once the reader's copy holds ``text``."""
    for _ in range(500):
        nearest = store.query(probe)[0][0]
        if nearest.text == text:
            return nearest
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never reached the copy in memory")


def test_a_sync_elsewhere_reaches_the_matrix(tmp_path: Path) -> None:
    """A reader's matrix follows an incremental sync made through another store object (another
    process, in production) once its pointer check is due and the new copy is loaded."""
    embedder = HashingEmbedder()
    writer, reader = _store(tmp_path, "memory"), _store(tmp_path, "memory", pointer_ttl=0.0)
    writer.sync(tiny_catalog(), embedder)
    probe = embedder.embed(["sing me a lullaby tonight"])
    assert all(n.text != "sing me a lullaby tonight" for n in reader.query(probe)[0])
    raw = tiny_catalog().model_dump(mode="json")
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], "sing me a lullaby tonight"]
    writer.sync(parse_catalog(raw), embedder)
    nearest = _loaded(reader, probe, "sing me a lullaby tonight")
    assert nearest.intent == "off_topic"
    assert nearest.similarity == pytest.approx(1.0, abs=1e-5)


def test_a_changed_build_loads_behind_the_copy_before(
    tmp_path: Path, held_loads: threading.Event
) -> None:
    """When the build changes, queries do not wait for the new copy to load: the copy before
    answers until it is in memory, then the new one does; the writer's own copy is current as
    soon as its sync returns."""
    embedder = HashingEmbedder()
    writer, reader = _store(tmp_path, "memory"), _store(tmp_path, "memory", pointer_ttl=0.0)
    writer.sync(tiny_catalog(), embedder)
    probe = embedder.embed(["sing me a lullaby tonight"])
    reader.query(probe)  # the reader holds a copy of the first build
    raw = tiny_catalog().model_dump(mode="json")
    raw["off_topic"]["exemplars"] = [*raw["off_topic"]["exemplars"], "sing me a lullaby tonight"]
    writer.sync(parse_catalog(raw), embedder)
    assert writer.query(probe)[0][0].text == "sing me a lullaby tonight"  # its own sync
    started = time.monotonic()
    before = reader.query(probe)[0]  # the new copy is still loading: it answers at once
    assert time.monotonic() - started < 5
    assert all(n.text != "sing me a lullaby tonight" for n in before)
    held_loads.set()
    assert _loaded(reader, probe, "sing me a lullaby tonight").intent == "off_topic"


def test_auto_keeps_small_builds_in_memory_and_large_ones_in_chroma() -> None:
    """auto chooses memory up to AUTO_MEMORY_FLOATS and Chroma above for low dimensions; the
    explicit modes win."""
    assert search_path("auto", 10_000, 384) == "memory"
    assert search_path("auto", AUTO_MEMORY_FLOATS // 384 + 1, 384) == "chroma"
    assert search_path("memory", 10**7, 3072) == "memory"
    assert search_path("chroma", 10**6, 3072) == "chroma"
    assert search_path("chroma", 10, 8) == "chroma"


def test_auto_picks_pca_only_for_large_high_dimensional_builds() -> None:
    """auto chooses pca between AUTO_PCA_FLOATS and AUTO_PCA_MAX_FLOATS floats from 4x
    pca_dimensions dimensions (100k of 3,072), exact memory for small or low-dimensional builds
    (20k of 384); pca asked for on vectors no longer than pca_dimensions is the exact search."""
    assert search_path("auto", 100_000, 3072) == "pca"
    assert search_path("auto", AUTO_PCA_MAX_FLOATS // 3072, 3072) == "pca"
    assert search_path("auto", AUTO_PCA_MAX_FLOATS // 3072 + 1, 3072) == "chroma"
    assert search_path("auto", AUTO_PCA_FLOATS // 1024, 1024) == "pca"
    assert search_path("auto", AUTO_PCA_FLOATS // 1024 - 1, 1024) == "memory"
    assert search_path("auto", 100_000, 1023) == "chroma"
    assert search_path("auto", 100_000, 1023, pca_dimensions=128) == "pca"
    assert search_path("auto", 20_000, 384) == "memory"
    assert search_path("auto", 2_000, 3072) == "memory"
    assert search_path("pca", 10, 3072) == "pca"
    assert search_path("pca", 10, 256, pca_dimensions=256) == "memory"


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


def _matrix(vectors: np.ndarray, pca: int = 0) -> ExemplarMatrix:
    ids = [f"e{i}" for i in range(len(vectors))]
    matrix = ExemplarMatrix(("b", "h", len(ids)), ids, ids, ["x"] * len(ids), vectors)
    return matrix.with_coarse(pca) if pca else matrix


def _low_rank(rng: np.random.Generator, rows: int, dimension: int, rank: int) -> np.ndarray:
    """Unit vectors near a ``rank``-dimensional subspace: structure PCA keeps."""
    basis = np.linalg.qr(rng.normal(size=(dimension, rank)))[0]
    vectors = rng.normal(size=(rows, rank)) @ basis.T + 1e-3 * rng.normal(size=(rows, dimension))
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return unit


def _key(found: list[Neighbour]) -> tuple[set[str], list[float]]:
    return {n.id for n in found}, [n.similarity for n in found]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(60, 300),
    k=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_coarse_search_finds_the_exact_top_k_where_pca_keeps_the_structure(
    rows: int, k: int, seed: int
) -> None:
    """On low-rank data with noise, the coarse search (8 of 64 dimensions, a shortlist of 40)
    returns the exact search's top k with the exact similarities, most similar first."""
    rng = np.random.default_rng(seed)
    vectors = _low_rank(rng, rows, 64, 6)
    queries = rng.normal(size=(5, 64)).astype(np.float32)  # anywhere: only the rows' noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)  # escapes the reduced space
    queries = np.vstack([queries, vectors[:3]])
    exact, coarse = _matrix(vectors), _matrix(vectors, pca=8)
    assert coarse.coarse is not None and coarse.coarse.dimensions == 8
    for want, got in zip(
        exact.nearest(queries, k), coarse.nearest(queries, k, candidates=40), strict=True
    ):
        assert len(got) == k
        assert _key(got)[0] == _key(want)[0]
        assert _key(got)[1] == pytest.approx(_key(want)[1], abs=1e-5)
        assert all(a.similarity >= b.similarity for a, b in itertools.pairwise(got))


def test_coarse_search_with_k_above_the_catalog_returns_every_row_in_order() -> None:
    """k larger than the catalog returns every exemplar once, most similar first, as the exact
    search does."""
    rng = np.random.default_rng(1)
    vectors = _low_rank(rng, 30, 32, 4)
    coarse = _matrix(vectors, pca=4)
    got = coarse.nearest(vectors[:2], 50, candidates=10)
    want = _matrix(vectors).nearest(vectors[:2], 50)
    assert [len(g) for g in got] == [30, 30]
    assert [_key(g)[0] for g in got] == [_key(w)[0] for w in want]
    assert all(sorted(_key(g)[1], reverse=True) == _key(g)[1] for g in got)


def test_coarse_search_of_an_empty_catalog_finds_nothing() -> None:
    """An empty build has no coarse index and answers every query with no neighbours."""
    empty = _matrix(np.zeros((0, 16), np.float32), pca=4)
    assert empty.coarse is None and empty.pca == 4
    assert empty.nearest(np.ones((2, 16), np.float32), 5, candidates=10) == [[], []]
    assert CoarseIndex.fit(np.zeros((0, 16), np.float32), 4) is None


def test_coarse_index_is_deterministic() -> None:
    """Fitting the same build twice gives the same directions, the same reduced rows and the
    same neighbours (the sample and the random probe are seeded)."""
    vectors = _low_rank(np.random.default_rng(2), 500, 48, 10)
    one, two = CoarseIndex.fit(vectors, 6), CoarseIndex.fit(vectors, 6)
    assert one is not None and two is not None
    assert np.array_equal(one.components, two.components)
    assert np.array_equal(one.reduced, two.reduced)
    first, second = _matrix(vectors, pca=6), _matrix(vectors, pca=6)
    assert first.nearest(vectors[:4], 7, candidates=20) == second.nearest(
        vectors[:4], 7, candidates=20
    )


def test_coarse_directions_are_the_principal_ones() -> None:
    """The fitted directions are orthonormal and span the data's principal subspace."""
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(40, 3)))[0]
    vectors = (rng.normal(size=(400, 3)) * [5.0, 3.0, 2.0] @ basis.T).astype(np.float32)
    coarse = CoarseIndex.fit(vectors + 1e-3 * rng.normal(size=(400, 40)).astype(np.float32), 3)
    assert coarse is not None
    assert coarse.components @ coarse.components.T == pytest.approx(np.eye(3), abs=1e-4)
    overlap = np.linalg.svd(coarse.components @ basis, compute_uv=False)
    assert overlap == pytest.approx(np.ones(3), abs=1e-3)


def test_pca_reducing_nothing_leaves_the_exact_search() -> None:
    """Asking for as many directions as the vectors have gives no coarse index; the search is
    then exact."""
    vectors = _low_rank(np.random.default_rng(4), 50, 16, 4)
    matrix = _matrix(vectors, pca=16)
    assert matrix.coarse is None
    assert matrix.nearest(vectors[:1], 3, candidates=5) == _matrix(vectors).nearest(vectors[:1], 3)


def test_a_failed_fit_leaves_the_search_exact(monkeypatch: Any) -> None:
    """An SVD that does not converge gives no coarse index, not an error: the search is exact."""

    def diverge(*_: Any, **__: Any) -> None:
        raise np.linalg.LinAlgError("SVD did not converge")

    vectors = _low_rank(np.random.default_rng(5), 50, 16, 4)
    monkeypatch.setattr(np.linalg, "svd", diverge)
    matrix = _matrix(vectors, pca=4)
    assert matrix.coarse is None and matrix.pca == 4
    assert matrix.nearest(vectors[:1], 3, candidates=5) == _matrix(vectors).nearest(vectors[:1], 3)


def test_the_store_searches_on_pca_when_configured(tmp_path: Path, monkeypatch: Any) -> None:
    """store.search=pca (from StoreSettings) loads the build with a coarse index, answers through
    its shortlist, and finds what the exact search finds; switching to memory keeps the matrix,
    switching back fits nothing again."""
    embedder = HashingEmbedder()
    memory = _store(tmp_path, "memory")
    memory.sync(tiny_catalog(), embedder)
    settings_ = StoreSettings(search="pca", pca_dimensions=16, pca_candidates=1, top_k=6)
    store = ExemplarStore.from_settings(
        open_client(StoreSettings(), tmp_path), "shop-test", settings_
    )
    assert (store.search, store.pca_dimensions, store.pca_candidates) == ("pca", 16, 1)
    shortlists: list[int] = []
    shortlist = CoarseIndex.shortlist

    def spy(self: CoarseIndex, queries: np.ndarray, count: int) -> np.ndarray:
        shortlists.append(count)
        return shortlist(self, queries, count)

    monkeypatch.setattr(CoarseIndex, "shortlist", spy)
    vectors = embedder.embed(QUERIES)
    for k in (1, 6):  # a shortlist of 10 (10 per neighbour) of 11 exemplars; then all of them
        for want, got in zip(memory.query(vectors, k), store.query(vectors, k), strict=True):
            assert _key(got)[0] == _key(want)[0]
            assert _key(got)[1] == pytest.approx(_key(want)[1], abs=1e-5)
    assert shortlists == [10]
    matrix = store._copy.matrix
    assert matrix is not None and matrix.coarse is not None and matrix.pca == 16
    store.search = "memory"
    store.query(vectors)
    store.search = "pca"
    store.query(vectors)
    assert store._copy.matrix is matrix


def test_pca_defaults_agree_with_the_settings() -> None:
    """The store's pca defaults are the settings' (settings.py does not import numpy)."""
    defaults = StoreSettings()
    assert (defaults.pca_dimensions, defaults.pca_candidates) == (PCA_DIMENSIONS, PCA_CANDIDATES)
