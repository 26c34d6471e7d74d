"""The exemplar store on Chroma.

Embedded ``PersistentClient`` under ``data_dir`` by default; ``HttpClient`` to a Chroma server
when ``store.host`` is set. Vectors are always passed in: Chroma never embeds.

One catalog, one store: a gate serving catalog file ``C`` with embedding model ``M`` uses the
store ``N = <store.collection>-<C's file stem>-<hash of C's absolute path and M>``
(:func:`collection_name`), so indexing one catalog never touches another's exemplars, and
``index``, ``check``, ``serve``, ``eval`` and ``demo`` agree on the store of a catalog.

Layout in Chroma, for a store named ``N``:

* ``N`` holds no vectors; its metadata points at the active build (``gatekeeper_active``).
* ``N--<build>`` holds the exemplar vectors of one build, cosine space, with metadata recording
  the embedding model, its dimension and the catalog hash.

Sync is incremental (content-hash ids: add new, update changed, delete removed): on a Chroma
server, in the active build; embedded, into a fresh build with the unchanged vectors copied
(another process's embedded client cannot read rows added to a build it holds). A rebuild, or
that copy, fills a fresh build and then flips the pointer, so a reader sees either the old
build or the new one, never a half-built collection.

Readers in other processes (replicas, ``index --rebuild`` beside a live proxy) hold the build
they opened, so a rebuild keeps the build it replaced as ``gatekeeper_previous`` and the *next*
rebuild drops it; a build no pointer names (an ``index`` killed while filling it) is dropped by
a later sync once no other process can still be filling it (:mod:`gatekeeper.builds`); embedded,
a dropped build's folder on disk goes with it (:mod:`gatekeeper.segment_folders`). Readers
re-read the pointer every ``pointer_ttl`` seconds and, on an error reading a build the pointer
no longer names, follow it and retry: quick rebuilds fail no query. A row without metadata (a
build dropped mid-read) is a StoreError, never a TypeError. A search in memory rides out an
unreachable Chroma on its copy of the build (:meth:`serving_copy`), and so an index gone from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from gatekeeper.build_copy import BuildCopy
from gatekeeper.builds import POINTER_KEY, PREVIOUS_KEY, drop_orphans, new_build_name
from gatekeeper.catalog import Catalog, Exemplar
from gatekeeper.chroma_client import collection_name, guard, open_client
from gatekeeper.embedding import Embedder, Vectors
from gatekeeper.errors import (
    IndexMismatchError,
    IndexMissingError,
    StoreError,
    StoreUnavailableError,
)
from gatekeeper.layout import IndexInfo, build_metadata, plan_sync, query_neighbours, row_metadata
from gatekeeper.search import (
    PAGE,
    PCA_CANDIDATES,
    PCA_DIMENSIONS,
    ExemplarMatrix,
    search_path,
    shortlist,
)
from gatekeeper.segment_folders import drop_build, sweep
from gatekeeper.settings import StoreSettings
from gatekeeper.types import Neighbour

POINTER_TTL = 2.0
_WRITE_BATCH = 1000
_ATTEMPTS = 3

Progress = Callable[[int], None]


@dataclass(frozen=True)
class SyncReport:
    """What a sync changed."""

    collection: str
    added: int
    updated: int
    deleted: int
    unchanged: int
    rebuilt: bool
    seconds: float


class ExemplarStore:
    """Exemplar vectors in Chroma, read through a pointer so rebuilds are atomic."""

    def __init__(
        self,
        client: Any,
        name: str,
        top_k: int = 10,
        *,
        pointer_ttl: float = POINTER_TTL,
        search: str = "auto",
        pca_dimensions: int = PCA_DIMENSIONS,
        pca_candidates: int = PCA_CANDIDATES,
        copy_on_write: bool = False,
    ) -> None:
        self._client = client
        self.copy_on_write = copy_on_write
        self.name = name
        self.top_k = top_k
        self.pointer_ttl = pointer_ttl
        self.search = search
        self.pca_dimensions = pca_dimensions
        self.pca_candidates = pca_candidates
        self._active: Any = None
        self._count = 0
        self._checked = 0.0
        self._copy = BuildCopy(self._guard)

    @classmethod
    def from_settings(cls, client: Any, name: str, settings: StoreSettings) -> ExemplarStore:
        """The store ``name`` on ``client``, searched as ``settings`` say (top_k, search and
        the pca search's dimensions and candidates)."""
        return cls(
            client,
            name,
            settings.top_k,
            search=settings.search,
            pca_dimensions=settings.pca_dimensions,
            pca_candidates=settings.pca_candidates,
            copy_on_write=not settings.host,
        )

    # -- reading -------------------------------------------------------------------------

    def indexed_catalog_hash(self) -> str | None:
        """The catalog hash of the build queries read: the copy in memory when they search one
        (a new build is served once loaded), else the build last opened. No Chroma call."""
        copy = self.serving_copy()
        meta = {"catalog_hash": copy.key[1]} if copy else getattr(self._active, "metadata", None)
        value = (meta or {}).get("catalog_hash")
        return str(value) if value and value != "None" else None

    def info(self) -> IndexInfo | None:
        """What the active build holds, or None when nothing is built yet."""
        collection = self._active_collection(refresh=True)
        if collection is None:
            return None
        meta = collection.metadata or {}
        return IndexInfo(
            collection=collection.name,
            model=str(meta.get("model", "")),
            dimension=int(meta.get("dimension", 0)),
            catalog_hash=str(meta.get("catalog_hash", "")),
            count=int(self._guard(collection.count)),
        )

    def check_compatible(self, embedder: Embedder) -> IndexInfo:
        """The active build's info; raise if there is none or it was built with another model."""
        info = self.info()
        if info is None:
            raise IndexMissingError.for_collection(self.name)
        if info.model != embedder.identity or info.dimension != embedder.dimension:
            raise IndexMismatchError(
                f"collection {self.name!r} was built with embedding model {info.model!r} "
                f"({info.dimension}-d), but the gate is configured with {embedder.identity!r} "
                f"({embedder.dimension}-d): run "
                "`gatekeeper index --rebuild` to re-embed the catalog with the configured model"
            )
        return info

    def query(self, vectors: Vectors, k: int | None = None) -> list[list[Neighbour]]:
        """The ``k`` nearest exemplars of each vector, most similar first.

        A failure reading a build that another process has meanwhile replaced (and maybe
        dropped) is retried on the pointer's new target; any other failure is a StoreError.
        """
        if len(vectors) == 0:
            return []
        from chromadb.errors import NotFoundError

        failure: Exception | None = None
        failed_on = ""
        for _ in range(_ATTEMPTS):
            try:
                collection = self._active_collection(refresh=failure is not None)
            except StoreUnavailableError:
                if (copy := self.serving_copy()) is None:
                    raise
                return self._nearest_in(copy, vectors, k)
            if collection is None:  # gone from Chroma (a lost volume): ridden out on a copy
                if (copy := self.serving_copy()) is None:
                    raise IndexMissingError(f"the index of {self.name!r} was dropped") from failure
                self._copy.index_missing(self.name)
                return self._nearest_in(copy, vectors, k)
            if failure is not None and collection.name == failed_on:
                break  # the pointer did not move: a real failure, not the rebuild race
            path = self._path(vectors)
            try:
                if path == "chroma":
                    n = min(k or self.top_k, max(1, self._count))
                    return query_neighbours(self._query(collection, vectors, n))
                pca = self.pca_dimensions if path == "pca" else 0
                copy = self._copy.of(collection, self._count, pca, wait=False)
                return self._nearest_in(copy, vectors, k)
            except StoreUnavailableError:
                raise
            except (StoreError, NotFoundError) as exc:
                failure, failed_on = exc, collection.name
        if isinstance(failure, StoreError):
            raise failure
        raise IndexMissingError(f"the index of {self.name!r} was dropped") from failure

    def _path(self, vectors: Vectors) -> str:
        return search_path(self.search, self._count, np.shape(vectors)[-1], self.pca_dimensions)

    def _nearest_in(
        self, matrix: ExemplarMatrix, vectors: Vectors, k: int | None
    ) -> list[list[Neighbour]]:
        n = min(k or self.top_k, max(1, self._count))
        return matrix.nearest(vectors, n, candidates=shortlist(matrix, n, self.pca_candidates))

    def serving_copy(self) -> ExemplarMatrix | None:
        """The in-memory copy of the build that queries read, also while Chroma is unreachable
        (none for a ``chroma`` search, or before any read)."""
        matrix = self._copy.matrix
        if matrix is None or self._path(matrix.vectors) == "chroma":
            return None
        return matrix

    def copy_behind(self) -> ExemplarMatrix | None:
        """The in-memory copy queries read when it is not of the build last read (its reload
        pending, or failing: :attr:`reload_failing`); None when it is, or there is none."""
        return self._copy.behind(self._active, self._count) if self.serving_copy() else None

    @property
    def reload_failing(self) -> bool:
        """Whether the copy's last reload failed (logged: ``store.reload_failed``)."""
        return self._copy.reload_failing

    @property
    def holds_copy(self) -> bool:
        """Whether a copy is held in memory (a ``memory``/``pca`` search, or :meth:`exemplars`)."""
        return self._copy.matrix is not None

    def exemplars(self) -> ExemplarMatrix:
        """Every exemplar of the active build with its vector (the in-memory copy the
        ``memory`` search uses, loaded if it was not)."""
        collection = self._active_collection(refresh=True)
        if collection is None:
            raise IndexMissingError.for_collection(self.name)
        return self._copy.of(collection, self._count)

    def _query(self, collection: Any, vectors: Vectors, n: int) -> Any:
        from chromadb.errors import NotFoundError

        return self._guard(
            lambda: collection.query(
                query_embeddings=np.asarray(vectors, dtype=np.float32),
                n_results=n,
                include=["documents", "metadatas", "distances"],
            ),
            passthrough=(NotFoundError,),
        )

    # -- writing -------------------------------------------------------------------------

    def sync(
        self,
        catalog: Catalog,
        embedder: Embedder,
        *,
        rebuild: bool = False,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> SyncReport:
        """Make the index match ``catalog``: incrementally, or as an atomic rebuild; a copy in
        memory is current when it returns (another's sync: :mod:`gatekeeper.build_copy`). Old
        orphan builds are dropped (:mod:`gatekeeper.builds`), and embedded, the folders of
        dropped builds removed (:mod:`gatekeeper.segment_folders`)."""
        report = self._sync(catalog, embedder, rebuild, progress, on_total)
        drop_orphans(self._client, self.name, report.collection, self._drop)
        sweep(self._client)  # folders an earlier version's drops left (embedded)
        if self.holds_copy:
            self._copy.of(self._active, self._count)
        return report

    def _sync(
        self,
        catalog: Catalog,
        embedder: Embedder,
        rebuild: bool,
        progress: Progress | None,
        on_total: Callable[[int], None] | None,
    ) -> SyncReport:
        started = time.perf_counter()
        exemplars = catalog.exemplars()
        active = self._active_collection(refresh=True)
        if active is not None and not rebuild:
            meta = active.metadata or {}
            if meta.get("model") != embedder.identity:
                raise IndexMismatchError(
                    f"collection {self.name!r} was built with {meta.get('model')!r}, not "
                    f"{embedder.identity!r}: use `gatekeeper index --rebuild`"
                )
            if self.copy_on_write:
                return self._sync_by_copy(active, exemplars, embedder, catalog, progress, on_total)
            counts = self._sync_incremental(active, exemplars, embedder, progress, on_total)
            self._write_meta(active, embedder, catalog)
            self._count = int(self._guard(active.count))
            return SyncReport(active.name, *counts, False, time.perf_counter() - started)
        fresh = self._build(exemplars, embedder, catalog, progress, on_total)
        self._switch_to(fresh, len(exemplars))
        return SyncReport(fresh.name, len(exemplars), 0, 0, 0, True, time.perf_counter() - started)

    def _switch_to(self, fresh: Any, count: int) -> None:
        """Point readers at the build ``fresh`` (holding ``count`` rows)."""
        replaced, before = self._point_at(fresh.name)
        # Readers elsewhere may still hold the build just replaced: it stays, as the pointer's
        # previous build, until the next rebuild; the one it replaced goes now.
        if before and before not in (fresh.name, replaced):
            self._drop(before)
        self._active = fresh
        self._count = count

    def _sync_by_copy(
        self,
        active: Any,
        exemplars: Sequence[Exemplar],
        embedder: Embedder,
        catalog: Catalog,
        progress: Progress | None,
        on_total: Callable[[int], None] | None,
    ) -> SyncReport:
        """An incremental sync into a fresh build (unchanged vectors copied), then the pointer
        flipped: embedded, a serving process cannot read rows another process adds to the
        build it holds (every query fails: "Error finding id"), but follows the pointer."""
        started = time.perf_counter()
        have = self._rows_of(active)
        sync = plan_sync({i: meta for i, (meta, _) in have.items()}, exemplars)
        new, changed, removed = sync.new, sync.changed, sync.removed
        same = {i: have[i][1] for i in sync.unchanged}
        if not (new or changed or removed):  # only the catalog's other text (replies) moved
            self._write_meta(active, embedder, catalog)
            self._count = len(same)
            return SyncReport(active.name, 0, 0, 0, len(same), False, time.perf_counter() - started)
        fresh = self._build(exemplars, embedder, catalog, progress, on_total, known=same)
        self._switch_to(fresh, len(exemplars))
        elapsed = time.perf_counter() - started
        counts = (len(new), len(changed), len(removed), len(same))
        return SyncReport(fresh.name, *counts, False, elapsed)

    def _rows_of(self, collection: Any) -> dict[str, tuple[Any, Any]]:
        """Every row of ``collection``: id → (metadata, vector), read in pages."""
        rows: dict[str, tuple[Any, Any]] = {}
        while True:
            include = ["metadatas", "embeddings"]
            page = self._guard(
                partial(collection.get, include=include, limit=PAGE, offset=len(rows))
            )
            if not page["ids"]:
                return rows
            pairs = zip(page["metadatas"], page["embeddings"], strict=True)
            rows.update(zip(page["ids"], pairs, strict=True))

    def _sync_incremental(
        self,
        collection: Any,
        exemplars: Sequence[Exemplar],
        embedder: Embedder,
        progress: Progress | None,
        on_total: Callable[[int], None] | None,
    ) -> tuple[int, int, int, int]:
        existing = self._guard(lambda: collection.get(include=["metadatas"]))
        have = dict(zip(existing["ids"], existing["metadatas"], strict=True))
        sync = plan_sync(have, exemplars)
        new, changed, removed = sync.new, sync.changed, sync.removed
        if on_total is not None:
            on_total(len(new) + len(changed))
        self._upsert(collection, new + changed, embedder, progress)
        for start in range(0, len(removed), _WRITE_BATCH):
            batch = removed[start : start + _WRITE_BATCH]
            self._guard(partial(collection.delete, ids=batch))
        return len(new), len(changed), len(removed), len(sync.unchanged)

    def _build(
        self,
        exemplars: Sequence[Exemplar],
        embedder: Embedder,
        catalog: Catalog,
        progress: Progress | None,
        on_total: Callable[[int], None] | None,
        known: dict[str, Any] | None = None,
    ) -> Any:
        """A fresh build of ``exemplars`` (the vectors of ``known`` ids copied, not embedded)."""
        known = known or {}
        build_name = new_build_name(self.name)
        collection = self._guard(
            lambda: self._client.create_collection(
                build_name,
                embedding_function=None,
                metadata=build_metadata(embedder, catalog),
                configuration={"hnsw": {"space": "cosine"}},
            )
        )
        if on_total is not None:
            on_total(sum(e.id not in known for e in exemplars))
        try:
            self._upsert(collection, exemplars, embedder, progress, known)
        except BaseException:
            self._drop(build_name)
            raise
        return collection

    def _upsert(
        self,
        collection: Any,
        exemplars: Sequence[Exemplar],
        embedder: Embedder,
        progress: Progress | None,
        known: dict[str, Any] | None = None,
    ) -> None:
        known = known or {}
        for start in range(0, len(exemplars), _WRITE_BATCH):
            batch = exemplars[start : start + _WRITE_BATCH]
            todo = [e for e in batch if e.id not in known]
            fresh: dict[str, Any] = {}
            if todo:
                embedded = embedder.embed([e.text for e in todo], progress=progress)
                fresh = dict(zip((e.id for e in todo), embedded, strict=True))
            vectors = np.asarray(
                [known[e.id] if e.id in known else fresh[e.id] for e in batch], dtype=np.float32
            )
            self._guard(
                partial(
                    collection.upsert,
                    ids=[e.id for e in batch],
                    embeddings=vectors,
                    metadatas=[row_metadata(e) for e in batch],
                )
            )

    def _write_meta(self, collection: Any, embedder: Embedder, catalog: Catalog) -> None:
        self._guard(lambda: collection.modify(metadata=build_metadata(embedder, catalog)))

    def _pointer(self) -> Any:
        return self._guard(
            lambda: self._client.get_or_create_collection(self.name, embedding_function=None)
        )

    def _point_at(self, build_name: str) -> tuple[str | None, str | None]:
        """Point at ``build_name``, remembering the build it replaces as the previous one;
        return the replaced build and the previous build before it (read just before the flip,
        so that concurrent rebuilds chain up rather than drop each other's builds)."""
        pointer = self._pointer()
        meta = pointer.metadata or {}
        replaced, before = meta.get(POINTER_KEY), meta.get(PREVIOUS_KEY)
        new_meta = {POINTER_KEY: build_name}
        if replaced:
            new_meta[PREVIOUS_KEY] = replaced
        self._guard(lambda: pointer.modify(metadata=new_meta))
        return replaced, before

    def _pointer_target(self) -> str | None:
        name = (self._pointer().metadata or {}).get(POINTER_KEY)
        self._checked = time.monotonic()
        return str(name) if name else None

    def _active_collection(self, *, refresh: bool = False) -> Any:
        """The pointer's target: the cached build, unless ``refresh`` or the pointer is due for
        a re-read (every ``pointer_ttl`` seconds, when the build is opened again too, so that a
        sync by another process, which changes its metadata and count, is seen); a build
        dropped between reading the pointer and opening it is followed to the pointer's new
        target."""
        cached = self._active
        due = refresh or time.monotonic() - self._checked >= self.pointer_ttl
        if cached is not None and not due:
            return cached
        from chromadb.errors import NotFoundError

        failure: StoreError | None = None
        for _ in range(_ATTEMPTS):
            active_name = self._pointer_target()
            if not active_name:
                self._active = None
                return None
            try:
                collection = self._guard(
                    partial(self._client.get_collection, active_name, embedding_function=None),
                    passthrough=(NotFoundError,),
                )
                count = int(self._guard(collection.count))
            except NotFoundError:
                continue  # dropped by a newer rebuild after we read the pointer: read it again
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                failure = exc
                continue
            self._active, self._count = collection, count
            return collection
        self._active = None
        if failure is not None:
            raise failure
        return None

    def _drop(self, name: str) -> bool:
        return drop_build(self._client, name)  # with its folders, embedded

    def drop_all(self) -> None:
        """Delete the pointer and every build of this store."""
        for collection in self._guard(self._client.list_collections):
            name = collection if isinstance(collection, str) else collection.name
            if name == self.name or name.startswith(f"{self.name}--"):
                self._drop(name)
        self._active = None

    _guard = staticmethod(guard)  # a Chroma call whose failures become StoreErrors


__all__ = ["ExemplarStore", "IndexInfo", "SyncReport", "collection_name", "open_client"]
