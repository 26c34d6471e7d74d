"""Opening Chroma (at once, or on first use: :class:`LazyClient`), the name of a catalog's
store in it, and its failures as StoreErrors (:func:`guard`)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gatekeeper.errors import StoreError, StoreUnavailableError
from gatekeeper.settings import StoreSettings


def collection_name(base: str, catalog: Path | str, model: str) -> str:
    """The store of catalog file ``catalog`` embedded with ``model`` (an embedder identity):
    ``base`` (``store.collection``), the catalog's file stem, and a short hash of its absolute
    path and the model. A valid Chroma name (3-512 of ``[a-zA-Z0-9._-]``)."""
    path = Path(catalog).expanduser().resolve()
    stem = re.sub(r"[^a-zA-Z0-9_-]+", "-", path.stem).strip("-_")[:40] or "catalog"
    digest = hashlib.sha256(f"{path}\x1f{model}".encode()).hexdigest()[:10]
    return f"{base}-{stem}-{digest}"


def open_client(settings: StoreSettings, data_dir: Path) -> Any:
    """A Chroma client: a server when ``settings.host`` is set, else embedded under data_dir."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.host:
            return chromadb.HttpClient(
                host=settings.host, port=settings.port, ssl=settings.ssl, settings=chroma_settings
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        # Absolute: Chroma shares one open database per path *string* in a process, so a
        # relative data dir ('.gatekeeper') opened again after a chdir reused the database of
        # the directory it first named (deleted since, in a test: "no such table").
        folder = data_dir.expanduser().resolve() / "chroma"
        return chromadb.PersistentClient(path=str(folder), settings=chroma_settings)
    except (ValueError, OSError, RuntimeError) as exc:
        where = f"Chroma server {settings.host}:{settings.port}" if settings.host else f"{data_dir}"
        why = str(exc) or _silent(exc, server=bool(settings.host))  # a timeout can say nothing
        raise StoreUnavailableError(f"cannot open the exemplar store at {where}: {why}") from exc


def _silent(exc: BaseException, *, server: bool) -> str:
    """What to say of an open that failed with no message: its exception's name, and for a
    server what usually causes it (a host that drops the connection attempt gives no error)."""
    if not server:
        return type(exc).__name__
    return f"{type(exc).__name__} with no message: is the server running, at that host and port?"


#: How long a failed open is remembered before the next use tries again.
RETRY_SECONDS = 5.0


def open_lazily(
    settings: StoreSettings, data_dir: Path, *, retry_seconds: float = RETRY_SECONDS
) -> LazyClient:
    """:func:`open_client` on first use (see :class:`LazyClient`)."""
    return LazyClient(partial(open_client, settings, data_dir), retry_seconds=retry_seconds)


class LazyClient:
    """A Chroma client opened on first use, so that the proxy can start while a Chroma server
    is down. A failed open is retried by the next use, at most once every ``retry_seconds``
    (until then it fails at once with the same StoreUnavailableError), so requests that find
    Chroma down neither pile up on connect attempts nor hammer the server."""

    def __init__(self, opener: Callable[[], Any], *, retry_seconds: float) -> None:
        self._opener = opener
        self._retry_seconds = retry_seconds
        self._client: Any = None
        self._failure: StoreError | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            now = time.monotonic()
            if self._failure is not None and now - self._failed_at < self._retry_seconds:
                raise self._failure
            try:
                self._client = self._opener()
            except StoreError as exc:
                self._failure, self._failed_at = exc, now
                raise
            self._failure = None
            return self._client

    def close(self) -> None:
        """Release the client opened (an embedded Chroma's files, a server's HTTP pool); the
        next use opens it again."""
        with self._lock:
            client, self._client = self._client, None
        close = getattr(client, "close", None)  # chromadb < 1.5 has no close(): nothing to do
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)


def is_connection_error(exc: BaseException) -> bool:
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError | ConnectionError):
            return True
        if "Could not connect" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def guard(call: Callable[[], Any], passthrough: tuple[type[BaseException], ...] = ()) -> Any:
    """Run a Chroma call; turn its failures into StoreErrors (StoreUnavailableError when Chroma
    cannot be reached), but for the ``passthrough`` exceptions."""
    try:
        return call()
    except passthrough:
        raise
    except StoreError:
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise StoreUnavailableError(f"Chroma is unreachable: {exc}") from exc
        raise StoreError(f"Chroma failed: {type(exc).__name__}: {exc}") from exc
