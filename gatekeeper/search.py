"""Nearest exemplars in memory: the active build's vectors as one matrix.

A Chroma query costs about 2 ms of a decision (its HNSW search plus reading each neighbour's
document and metadata back from SQLite), a third of the default model's forward pass. A catalog
of a few thousand exemplars is a few megabytes of vectors, so the store keeps the active build
in memory as one matrix and answers with one matrix product: exact nearest neighbours (HNSW is
approximate) in microseconds. Chroma stays the index and the source of truth; the matrix is a
read-through copy of one build, reloaded when the build changes (another pointer target, or a
sync that changed its catalog hash or count).

``store.search`` picks the path: ``memory``, ``chroma``, or ``auto`` (memory while the matrix
stays under :data:`AUTO_MEMORY_FLOATS` floats, Chroma above).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.errors import StoreError
from gatekeeper.types import Neighbour

#: ``auto`` keeps a build in memory up to this many floats (256 MiB of float32: e.g. 170k
#: exemplars of 384 dimensions, or 21k of 3,072).
AUTO_MEMORY_FLOATS = 64 * 1024 * 1024

#: Rows read from Chroma per page when a build is loaded.
PAGE = 5000

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

    def nearest(self, queries: npt.ArrayLike, k: int) -> list[list[Neighbour]]:
        """The ``k`` most similar exemplars of each query (cosine; the rows and the queries are
        unit vectors), most similar first."""
        if len(self) == 0:
            return [[] for _ in range(len(np.asarray(queries)))]
        with self._one_blas_thread():
            similarities = np.asarray(queries, dtype=np.float32) @ self.vectors.T
        k = min(k, len(self))
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        found = []
        for row, candidates in zip(similarities, top, strict=True):
            ranked = candidates[np.argsort(-row[candidates], kind="stable")]
            found.append(
                [
                    Neighbour(
                        id=self.ids[i],
                        text=self.texts[i],
                        intent=self.intents[i],
                        similarity=float(row[i]),
                    )
                    for i in ranked
                ]
            )
        return found

    def _one_blas_thread(self) -> AbstractContextManager[Any]:
        """OpenBLAS keeps its threads spinning for a while after a product: on a machine whose
        cores the model's forward passes use, that halved the gate's batch throughput
        (check_many 268/s vs 490/s). The product is small; one thread does it in ~0.2 ms."""
        return self.blas.limit(limits=1, user_api="blas") if self.blas else nullcontext()


def use_memory(mode: str, count: int, dimension: int) -> bool:
    """Whether ``store.search`` = ``mode`` keeps a build of ``count`` vectors in memory."""
    if mode == "memory":
        return True
    if mode == "chroma":
        return False
    return count * max(1, dimension) <= AUTO_MEMORY_FLOATS


def _rows(
    page: Any,
) -> tuple[list[str], list[str], list[str], npt.NDArray[np.float32]]:
    """A page of ``collection.get`` as ids, texts, intents and vectors; a row without
    metadata or vector (a build dropped mid-read) is a StoreError."""
    try:
        ids = [str(i) for i in page["ids"]]
        texts = [doc or "" for doc in page["documents"]]
        intents = [str(meta["intent"]) for meta in page["metadatas"]]
        embeddings: Sequence[Any] = page["embeddings"]
        vectors = np.asarray(embeddings, dtype=np.float32) if len(ids) else np.zeros((0, 0))
    except (TypeError, KeyError, ValueError) as exc:
        raise StoreError(f"Chroma returned a malformed build: {exc!r}") from exc
    if len(ids) and (vectors.ndim != 2 or len(vectors) != len(ids)):
        raise StoreError("Chroma returned a malformed build: vectors do not match the rows")
    return ids, texts, intents, vectors.astype(np.float32, copy=False)


__all__ = ["AUTO_MEMORY_FLOATS", "ExemplarMatrix", "use_memory"]
