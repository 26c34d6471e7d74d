"""A coarse search on PCA-reduced vectors: the shortlist an exact re-rank then orders.

For a large catalog of high-dimensional vectors (100k exemplars of 3,072 dimensions, as
text-embedding-3-large gives) the exact product reads the whole matrix for every query: 1.2 GB,
about 36 ms on one core. Most of the variance that separates exemplars lives in a few hundred
directions, so :class:`CoarseIndex` keeps every exemplar projected on the top principal
directions of the build (128 floats a row instead of 3,072), scores the queries there, and hands
the best ``count`` rows to :meth:`gatekeeper.search.ExemplarMatrix.nearest`, which re-ranks them
with the full vectors: the similarities returned are exact; only a true neighbour that the
shortlist missed can be lost. ``eval/benchmark_search.py`` measures that recall and the speed.

The principal directions come from a randomized SVD (Halko, Martinsson & Tropp 2011: a random
range finder with power iterations) of at most :data:`PCA_SAMPLE` centred rows, seeded, so a
build always gets the same index. Scores are uncentred: for one query, centring shifts every
exemplar's reduced score by the same amount, so the ranking is the same without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: At most this many rows (a seeded sample) are used to find the principal directions.
PCA_SAMPLE = 20_000

#: Extra directions drawn by the range finder, and its power iterations.
_OVERSAMPLE = 16
_POWER_ITERATIONS = 3


@dataclass(frozen=True)
class CoarseIndex:
    """A build's vectors projected on its top principal directions."""

    #: (r, d): orthonormal rows, the principal directions.
    components: npt.NDArray[np.float32]
    #: (n, r): each exemplar's coordinates on them.
    reduced: npt.NDArray[np.float32]

    @classmethod
    def fit(
        cls, vectors: npt.NDArray[np.float32], dimensions: int, *, seed: int = 0
    ) -> CoarseIndex | None:
        """The index of ``vectors`` (n, d) on its top ``dimensions`` principal directions, or
        None when that reduces nothing (``dimensions`` >= d, or no rows)."""
        count, dimension = vectors.shape
        rank = min(dimensions, count)
        if rank < 1 or rank >= dimension:
            return None
        rng = np.random.default_rng(seed)
        if count > PCA_SAMPLE:
            sample = vectors[np.sort(rng.choice(count, PCA_SAMPLE, replace=False))]
        else:
            sample = vectors
        centred = sample - sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        components = _principal_directions(centred, rank, rng)
        reduced = np.ascontiguousarray(vectors @ components.T, dtype=np.float32)
        return cls(components, reduced)

    @property
    def dimensions(self) -> int:
        """The reduced dimension r."""
        return int(self.components.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the index."""
        return int(self.components.nbytes + self.reduced.nbytes)

    def shortlist(self, queries: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.intp]:
        """(m, count): for each query the rows of the ``count`` best reduced scores, in row
        order (``count`` <= n)."""
        scores = (queries @ self.components.T) @ self.reduced.T
        if count >= scores.shape[1]:
            return np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        rows = np.argpartition(-scores, count - 1, axis=1)[:, :count]
        return np.sort(rows, axis=1)


def _principal_directions(
    centred: npt.NDArray[np.float32], rank: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """(rank, d): the top right singular vectors of ``centred`` (m, d), by a randomized SVD."""
    rows, dimension = centred.shape
    width = min(rank + _OVERSAMPLE, rows, dimension)
    probe = rng.standard_normal((dimension, width)).astype(np.float32)
    basis = np.linalg.qr(centred @ probe)[0]
    for _ in range(_POWER_ITERATIONS):
        basis = np.linalg.qr(centred.T @ basis)[0]
        basis = np.linalg.qr(centred @ basis)[0]
    directions = np.linalg.svd(basis.T @ centred, full_matrices=False)[2]
    return np.ascontiguousarray(directions[:rank], dtype=np.float32)


__all__ = ["PCA_SAMPLE", "CoarseIndex"]
