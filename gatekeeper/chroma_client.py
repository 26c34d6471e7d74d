"""Opening Chroma, and the name of a catalog's store in it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from gatekeeper.errors import StoreUnavailableError
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
        return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=chroma_settings)
    except (ValueError, OSError, RuntimeError) as exc:
        where = f"Chroma server {settings.host}:{settings.port}" if settings.host else f"{data_dir}"
        raise StoreUnavailableError(f"cannot open the exemplar store at {where}: {exc}") from exc


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
