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

A reload that fails leaves the copy before answering, so it is said, and tried again. An
operator saw why (an older gatekeeper's ``index`` wrote rows in place into the build a newer
proxy held, which an embedded Chroma client cannot read back: "Error finding id"): the proxy
served its old 15-exemplar copy for minutes, with no log line, while ``/readyz`` reported the
store's 20. Now the first failed reload logs ``store.reload_failed`` (a warning: decisions go
on, from the copy before), repeats at most every 10 s with how many failed since, and the load
that works again logs ``store.reload_recovered`` (:class:`~gatekeeper.outage.Outage`, the rule
of ``gate.failed``). A copy that replaces another logs ``store.build_switched`` (info: the
build's collection and exemplars, and those it replaces) the moment queries move to the new
build (``/readyz`` used to move from ``reload_pending`` to it with no line). A failed
background reload of a build is tried again by a query (or the proxy's refresh) once
:data:`RETRY_SECONDS` have passed; another build is loaded at once.
:meth:`BuildCopy.behind` says when the copy served is not the build a store last read
(``/readyz`` answers ``degraded`` then). A load that reads back another number of rows than
the build held is a failed one too: a Chroma server's ``get`` that races the build's drop
answers no rows rather than NotFound (16 of 450 such reads on loopback), and that empty copy
refused every message as off-topic, with no gate error, until the next build loaded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gatekeeper.errors import StoreError
from gatekeeper.logging import get_logger
from gatekeeper.outage import Outage
from gatekeeper.search import BuildKey, ExemplarMatrix

#: The store's guard around a Chroma call: failures become StoreErrors, but for the
#: ``passthrough`` exceptions (chromadb's NotFoundError: a build dropped meanwhile).
Guard = Callable[..., Any]

#: Seconds before a background reload of a build that failed is tried again.
RETRY_SECONDS = 5.0


def build_key(collection: Any, count: int) -> BuildKey:
    """What identifies the contents of ``collection`` (a build holding ``count`` rows)."""
    return (collection.name, str((collection.metadata or {}).get("catalog_hash")), count)


class BuildCopy:
    """The copy in memory of the build last read (``matrix``), read through ``guard``."""

    def __init__(
        self,
        guard: Guard,
        *,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.matrix: ExemplarMatrix | None = None
        self._guard = guard
        self._lock = threading.Lock()  # one load at a time
        self._loading: BuildKey | None = None  # the build a background thread is loading
        self._flag = threading.Lock()
        self._retry_seconds, self._clock = retry_seconds, clock
        self._failed: tuple[BuildKey, float] | None = None  # the last reload that failed, when
        self._missing_said = False  # store.index_missing logged since a build was last read
        self._log = get_logger()
        self._reloads = Outage(
            self._log,
            clock=clock,
            failed="store.reload_failed",
            recovered="store.reload_recovered",
            level="warning",
        )

    @property
    def reload_failing(self) -> bool:
        """Whether the last reload of the copy failed (the copy before answers meanwhile)."""
        return self._reloads.going_on

    def behind(self, collection: Any, count: int) -> ExemplarMatrix | None:
        """The copy, when it is not of ``collection`` holding ``count`` rows (a reload under
        way or failing), else None."""
        matrix = self.matrix
        if matrix is None or collection is None or matrix.key == build_key(collection, count):
            return None
        return matrix

    def of(self, collection: Any, count: int, pca: int = 0, *, wait: bool = True) -> ExemplarMatrix:
        """The copy of ``collection`` (holding ``count`` rows), loaded again when the build's
        name, catalog hash or count has changed; with a coarse index on ``pca`` principal
        directions when ``pca`` is set. Without ``wait``, a copy of another build answers
        while this one loads in the background (see the module's docstring)."""
        key = build_key(collection, count)
        matrix, self._missing_said = self.matrix, False
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

    def index_missing(self, store: str) -> None:
        """The store's index is gone from Chroma (its pointer names no build: a lost volume, a
        wrong path) while this copy answers: said once (``store.index_missing``, a warning)
        until a build is read again."""
        with self._flag:  # decision workers find it missing at once: one says so
            if self._missing_said or self.matrix is None:
                return
            self._missing_said = True
        self._log.warning(
            "store.index_missing",
            collection=store,
            serving=self.matrix.key[0],
            serving_exemplars=len(self.matrix),
            hint="decisions come from the copy in memory; run `gatekeeper index` with this "
            "server's settings to build the index again",
        )

    def _load(self, collection: Any, key: BuildKey) -> ExemplarMatrix:
        from chromadb.errors import NotFoundError

        served = self.matrix
        load = partial(ExemplarMatrix.load, collection, key)
        try:
            matrix: ExemplarMatrix = self._guard(load, passthrough=(NotFoundError,))
            # a Chroma server's get racing a drop answers no rows; and a build read with no
            # rows at all (its count read after the rows went) is never a catalog's: served,
            # it refused every message with no gate error
            if len(matrix) != key[2] or not len(matrix):
                raise StoreError(
                    f"build {key[0]!r} read back {len(matrix)} of its {key[2]} rows "
                    "(dropped or rewritten while it was read)"
                )
        except StoreError as exc:  # NotFoundError: the build was dropped, a newer one follows
            if served is not None:
                self._reload_failed(exc, served, key)
            raise
        self._failed = None
        self._reloads.succeeded(collection=key[0], exemplars=len(matrix))
        if served is not None:  # queries move to another build (a rebuild, or a sync)
            self._log.info(
                "store.build_switched",
                collection=key[0],
                exemplars=len(matrix),
                was=served.key[0],
                was_exemplars=len(served),
            )
        return matrix

    def _reload_failed(self, exc: StoreError, served: ExemplarMatrix, key: BuildKey) -> None:
        self._failed = (key, self._clock())
        self._reloads.failed(
            exc,
            collection=key[0],
            exemplars=key[2],
            serving=served.key[0],
            serving_exemplars=len(served),
            retry_seconds=self._retry_seconds,
        )

    def _load_behind(self, collection: Any, count: int, pca: int, key: BuildKey) -> None:
        with self._flag:
            if self._loading is not None:
                return  # one background load at a time; a newer build is loaded after it
            failed = self._failed
            if failed and failed[0] == key and self._clock() - failed[1] < self._retry_seconds:
                return  # this build failed to load a moment ago: not yet again
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
            pass  # logged by _load; the copy before keeps answering, a later query retries
        finally:
            with self._flag:
                self._loading = None


__all__ = ["BuildCopy"]
