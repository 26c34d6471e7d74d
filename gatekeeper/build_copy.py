"""The store's copy in memory of its active build, kept current as builds change.

A ``memory`` or ``pca`` search (:mod:`gatekeeper.search`) answers from a copy of the build the
store's pointer names. The first read of a build loads its copy, and every query waits for it:
there is nothing else to answer from. When the build then changes (a rebuild, or a sync by
another process), the copy of the build before keeps answering while the new one loads in a
background thread. Loading 15,000 exemplars of 384 dimensions from an embedded Chroma takes
about a second on this project's 2 cores, and every query behind the first one after a rebuild
used to wait 0.9-1.4 s for it (45-80 ms with this module; ``eval/benchmark_build_change.py``).
The copy before lives in memory, so the drop of its build does not matter. The store's catalog
hash is the copy's (:meth:`~gatekeeper.store.ExemplarStore.indexed_catalog_hash`), so a gate
moves to the new build's catalog with its exemplars, as soon as they are loaded. With
``wait=True`` (what :meth:`~gatekeeper.store.ExemplarStore.exemplars` and a sync of this
process ask) :meth:`BuildCopy.of` returns the current build.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from gatekeeper.errors import StoreError
from gatekeeper.search import BuildKey, ExemplarMatrix

#: The store's guard around a Chroma call: failures become StoreErrors, but for the
#: ``passthrough`` exceptions (chromadb's NotFoundError: a build dropped meanwhile).
Guard = Callable[..., Any]


class BuildCopy:
    """The copy in memory of the build last read (``matrix``), read through ``guard``."""

    def __init__(self, guard: Guard) -> None:
        self.matrix: ExemplarMatrix | None = None
        self._guard = guard
        self._lock = threading.Lock()  # one load at a time
        self._loading: BuildKey | None = None  # the build a background thread is loading
        self._flag = threading.Lock()

    def of(self, collection: Any, count: int, pca: int = 0, *, wait: bool = True) -> ExemplarMatrix:
        """The copy of ``collection`` (holding ``count`` rows), loaded again when the build's
        name, catalog hash or count has changed; with a coarse index on ``pca`` principal
        directions when ``pca`` is set. Without ``wait``, a copy of another build answers
        while this one loads in the background (see the module's docstring)."""
        key = (collection.name, str((collection.metadata or {}).get("catalog_hash")), count)
        matrix = self.matrix
        if matrix is not None and matrix.key == key and (not pca or matrix.pca == pca):
            return matrix
        if matrix is not None and matrix.key != key and not wait:
            self._load_behind(collection, count, pca, key)
            return matrix
        with self._lock:
            matrix = self.matrix
            if matrix is None or matrix.key != key:
                matrix = self._load(collection, key)
            if pca:
                matrix = matrix.with_coarse(pca)
            self.matrix = matrix
            return matrix

    def _load(self, collection: Any, key: BuildKey) -> ExemplarMatrix:
        from chromadb.errors import NotFoundError

        load = partial(ExemplarMatrix.load, collection, key)
        matrix: ExemplarMatrix = self._guard(load, passthrough=(NotFoundError,))
        return matrix

    def _load_behind(self, collection: Any, count: int, pca: int, key: BuildKey) -> None:
        with self._flag:
            if self._loading is not None:
                return  # one background load at a time; a newer build is loaded after it
            self._loading = key
        threading.Thread(
            target=self._load_quietly,
            args=(collection, count, pca),
            name="gatekeeper-build-copy",
            daemon=True,
        ).start()

    def _load_quietly(self, collection: Any, count: int, pca: int) -> None:
        from chromadb.errors import NotFoundError

        try:
            self.of(collection, count, pca)
        except (StoreError, NotFoundError):
            pass  # the copy before keeps answering; the next query tries again
        finally:
            with self._flag:
                self._loading = None


__all__ = ["BuildCopy"]
