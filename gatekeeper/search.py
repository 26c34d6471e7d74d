"""Nearest exemplars in memory: the active build's vectors as one matrix.

A Chroma query costs about 2 ms of a decision (its HNSW search plus reading each neighbour's
document and metadata back from SQLite), a third of the default model's forward pass. A catalog
of a few thousand exemplars is a few megabytes of vectors, so the store keeps the active build
in memory as one matrix and answers with one matrix product: exact nearest neighbours (HNSW is
approximate) in microseconds. Chroma stays the index and the source of truth; the matrix is a
read-through copy of one build, reloaded when the build changes (another pointer target, or a
sync that changed its catalog hash or count).

A large build of long vectors (100k exemplars of 3,072 dimensions: 1.2 GB) makes that product
slow, ~35 ms a query, so ``pca`` adds a coarse search on the build's top principal directions
(:mod:`gatekeeper.coarse`) whose shortlist is re-ranked with the full vectors, which stay in
memory: fetching only the shortlist's vectors from Chroma took 22 ms for 200 rows of 3,072, as
long as most of the product it replaces, and an embedded Chroma holds the vectors in this
process anyway once it has searched them (its HNSW index).

``store.search`` picks the path: ``memory``, ``pca``, ``chroma``, or ``auto`` (see
:func:`search_path`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gatekeeper.coarse import CoarseIndex
from gatekeeper.errors import StoreError
from gatekeeper.layout import exemplar_text
from gatekeeper.types import Neighbour

#: ``auto`` keeps a build in memory up to this many floats (256 MiB of float32: e.g. 170k
#: exemplars of 384 dimensions, or 21k of 3,072).
AUTO_MEMORY_FLOATS = 64 * 1024 * 1024

#: ``auto`` searches a build of this many floats to :data:`AUTO_PCA_MAX_FLOATS` (2 GiB of
#: float32: e.g. 5.5k to 170k exemplars of 3,072 dimensions) on its principal directions when
#: its dimension is high enough (see :func:`search_path`).
AUTO_PCA_FLOATS = 16 * 1024 * 1024
AUTO_PCA_MAX_FLOATS = 512 * 1024 * 1024

#: Defaults of ``store.pca_dimensions`` and ``store.pca_candidates``; the shortlist holds at
#: least :data:`SHORTLIST_PER_K` rows per neighbour asked for.
PCA_DIMENSIONS = 256
PCA_CANDIDATES = 200
SHORTLIST_PER_K = 10

#: Rows read from Chroma per page when a build is loaded. A page holds the GIL while Chroma
#: reads it: 5,000 rows stalled the queries beside a background load for 240-340 ms, 1,000
#: for 45-80 ms, and 15,000 rows load as fast (0.8 s vs 1.0-1.2 s;
#: ``eval/benchmark_build_change.py``).
PAGE = 1000

#: What identifies a build's contents: its name, its catalog hash and its row count.
BuildKey = tuple[str, str, int]


@dataclass(frozen=True)
class ExemplarMatrix:
    """One build's exemplars: ids, texts and intents beside their unit vectors (one row each)."""

    key: BuildKey
    ids: list[str]
    texts: list[str]
    intents: list[str]
    vectors: npt.NDArray[np.float32]
    #: threadpoolctl's controller: the product runs on one BLAS thread (see :meth:`nearest`).
    blas: Any = field(default=None, compare=False, repr=False)
    #: The coarse search on PCA-reduced vectors (``store.search`` pca), None when none was
    #: asked for or it would reduce nothing; ``pca`` is the dimension asked for (0: none).
    coarse: CoarseIndex | None = field(default=None, compare=False, repr=False)
    pca: int = 0

    @classmethod
    def load(cls, collection: Any, key: BuildKey) -> ExemplarMatrix:
        """Every row of ``collection`` (a Chroma collection), read in pages."""
        ids: list[str] = []
        texts: list[str] = []
        intents: list[str] = []
        blocks: list[npt.NDArray[np.float32]] = []
        offset = 0
        while True:
            page = collection.get(
                include=["embeddings", "documents", "metadatas"], limit=PAGE, offset=offset
            )
            rows = _rows(page)
            if not rows[0]:
                break
            ids += rows[0]
            texts += rows[1]
            intents += rows[2]
            blocks.append(rows[3])
            offset += len(rows[0])
        dimension = blocks[0].shape[1] if blocks else 0
        vectors = np.vstack(blocks) if blocks else np.zeros((0, dimension), np.float32)
        from threadpoolctl import ThreadpoolController

        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(key, ids, texts, intents, matrix, blas=ThreadpoolController())

    def __len__(self) -> int:
        return len(self.ids)

    def with_coarse(self, dimensions: int) -> ExemplarMatrix:
        """This matrix with a :class:`~gatekeeper.coarse.CoarseIndex` on ``dimensions``
        principal directions (itself when it was asked for that already).

        The fit and the projection run on one BLAS thread too, though they happen once per
        build: with the 2 cores busy, all threads took 59 s to fit 100k x 3,072 on 256
        directions, one thread 5.3 s (eval/README.md). A fit that fails (an SVD that does not
        converge) leaves the search exact."""
        if self.pca == dimensions:
            return self
        try:
            with self._one_blas_thread():
                coarse = CoarseIndex.fit(self.vectors, dimensions)
        except np.linalg.LinAlgError:
            coarse = None
        return replace(self, coarse=coarse, pca=dimensions)

    def nearest(
        self, queries: npt.ArrayLike, k: int, *, candidates: int = 0
    ) -> list[list[Neighbour]]:
        """The ``k`` most similar exemplars of each query (cosine; the rows and the queries are
        unit vectors), most similar first.

        With a coarse index and 0 < ``candidates`` < the rows, each query's ``candidates``
        (at least ``k``) best rows in the reduced space are re-ranked with the full vectors:
        exact similarities, but a neighbour outside the shortlist is missed. Otherwise the
        exact product with every row."""
        queries = np.asarray(queries, dtype=np.float32)
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        k = min(k, len(self))
        count = max(candidates, k)
        if self.coarse is not None and candidates > 0 and count < len(self):
            found = []
            with self._one_blas_thread():
                for query, rows in zip(queries, self.coarse.shortlist(queries, count), strict=True):
                    similarities = self.vectors[rows] @ query
                    best = np.argsort(-similarities, kind="stable")[:k]
                    found.append(self._neighbours(rows[best], similarities[best]))
            return found
        with self._one_blas_thread():
            similarities = queries @ self.vectors.T
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        found = []
        for row, rows in zip(similarities, top, strict=True):
            ranked = rows[np.argsort(-row[rows], kind="stable")]
            found.append(self._neighbours(ranked, row[ranked]))
        return found

    def _neighbours(
        self, rows: npt.NDArray[np.intp], similarities: npt.NDArray[np.float32]
    ) -> list[Neighbour]:
        return [
            Neighbour(
                id=self.ids[i], text=self.texts[i], intent=self.intents[i], similarity=float(s)
            )
            for i, s in zip(rows.tolist(), similarities.tolist(), strict=True)
        ]

    def _one_blas_thread(self) -> AbstractContextManager[Any]:
        """OpenBLAS keeps its threads spinning for a while after a product: on a machine whose
        cores the model's forward passes use, that halved the gate's batch throughput
        (check_many 268/s vs 490/s). The product is small; one thread does it in ~0.2 ms.
        The coarse search's products stay on one thread too: with the cores busy, all threads
        made it slower (100k x 3,072: 6.5-7.0 ms a query against 3.7-3.9 on one thread,
        ``eval/benchmark_search.py --all-threads``), and a free core is one the forward passes
        beside it would have used."""
        return self.blas.limit(limits=1, user_api="blas") if self.blas else nullcontext()


def shortlist(matrix: ExemplarMatrix, k: int, candidates: int = PCA_CANDIDATES) -> int:
    """How many rows a search of ``k`` neighbours re-ranks: with a coarse index, at least
    ``candidates`` and :data:`SHORTLIST_PER_K` per neighbour; 0 (every row, exactly) without."""
    return max(candidates, SHORTLIST_PER_K * k) if matrix.pca else 0


def search_path(
    mode: str, count: int, dimension: int, pca_dimensions: int = PCA_DIMENSIONS
) -> Literal["memory", "pca", "chroma"]:
    """How ``store.search`` = ``mode`` searches a build of ``count`` vectors of ``dimension``:
    the exact matrix product (``memory``), the coarse search re-ranked exactly (``pca``), or
    Chroma's HNSW query.

    ``pca`` asked for on vectors no longer than ``pca_dimensions`` is ``memory``: nothing to
    reduce. ``auto`` picks ``pca`` only where it won in ``eval/benchmark_search.py`` (2 shared
    cores, k=20, 256 directions, 200 candidates, medians of runs):

    * 100k exemplars of 3,072 dimensions: one query 3.7 ms instead of the exact 36 ms, a batch
      of 32 in 33 ms instead of 265, recall@20 0.999 and the exact top neighbour every time;
      Chroma's HNSW took 3.3 ms but found the exact top neighbour for 98.3% of the queries.
    * From :data:`AUTO_PCA_FLOATS` (5.5k x 3,072), where the exact product of one query passes
      ~2 ms (1.8 ms at 5k x 3,072; pca 0.3 ms, recall 1.0). Below, too little is saved.
    * From 4x ``pca_dimensions`` dimensions: at 384 (the default model) the reduced scan saves
      too little (100k x 384: 4.8 ms exact, 2.0 ms on 128 directions with 400 candidates)
      to give up exactness.
    * Up to :data:`AUTO_PCA_MAX_FLOATS` (170k x 3,072: 6 ms, 2.1 GB in memory): the scan grows
      with the catalog, Chroma's HNSW hardly does, and beyond that the copy passes 2 GiB.

    Otherwise ``auto`` keeps the exact matrix up to :data:`AUTO_MEMORY_FLOATS` and uses Chroma
    above."""
    floats = count * max(1, dimension)
    large = AUTO_PCA_FLOATS <= floats <= AUTO_PCA_MAX_FLOATS
    if mode == "pca" or (mode == "auto" and large and dimension >= 4 * pca_dimensions):
        return "pca" if pca_dimensions < dimension else "memory"
    if mode == "memory" or (mode == "auto" and floats <= AUTO_MEMORY_FLOATS):
        return "memory"
    return "chroma"


def _rows(
    page: Any,
) -> tuple[list[str], list[str], list[str], npt.NDArray[np.float32]]:
    """A page of ``collection.get`` as ids, texts, intents and vectors; a row without
    metadata or vector (a build dropped mid-read) is a StoreError."""
    try:
        ids = [str(i) for i in page["ids"]]
        texts = [
            exemplar_text(doc, meta)
            for doc, meta in zip(page["documents"], page["metadatas"], strict=True)
        ]
        intents = [str(meta["intent"]) for meta in page["metadatas"]]
        embeddings: Sequence[Any] = page["embeddings"]
        vectors = np.asarray(embeddings, dtype=np.float32) if len(ids) else np.zeros((0, 0))
    except (TypeError, KeyError, ValueError) as exc:
        raise StoreError(f"Chroma returned a malformed build: {exc!r}") from exc
    if len(ids) and (vectors.ndim != 2 or len(vectors) != len(ids)):
        raise StoreError("Chroma returned a malformed build: vectors do not match the rows")
    return ids, texts, intents, vectors.astype(np.float32, copy=False)


__all__ = [
    "AUTO_MEMORY_FLOATS",
    "AUTO_PCA_FLOATS",
    "AUTO_PCA_MAX_FLOATS",
    "PCA_CANDIDATES",
    "PCA_DIMENSIONS",
    "SHORTLIST_PER_K",
    "ExemplarMatrix",
    "search_path",
]
