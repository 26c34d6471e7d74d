"""How an exemplar is laid out in a Chroma row, and read back.

A row is the exemplar's content-hash id, its vector, and metadata: its routing (``intent``,
``kind``) and its ``text``. The text is not stored as a Chroma *document*: the gate never
searches Chroma by text, and a document's full-text index rows took about a third of Chroma's
share of indexing (eval/README.md, Indexing). Builds written by earlier versions hold the text
as the document; they are read the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatekeeper.catalog import Catalog, Exemplar
from gatekeeper.errors import StoreError
from gatekeeper.types import Neighbour

if TYPE_CHECKING:
    from gatekeeper.embedding import Embedder

#: The metadata key of an exemplar's text in a stored row.
TEXT_KEY = "text"


def row_metadata(exemplar: Exemplar) -> dict[str, Any]:
    """A stored row's metadata: the exemplar's routing and its text."""
    return {"intent": exemplar.intent, "kind": exemplar.kind, TEXT_KEY: exemplar.text}


def routing(metadata: Any) -> tuple[str, str]:
    """(intent, kind) of a stored row's metadata. The id hashes the text, so a stored row
    matches its exemplar when their routing does."""
    meta = metadata if isinstance(metadata, dict) else {}
    return str(meta.get("intent")), str(meta.get("kind"))


def exemplar_text(document: Any, metadata: Any) -> str:
    """An exemplar's text from a stored row: its metadata's ``text``, else the row's document
    (builds of earlier versions)."""
    text = metadata.get(TEXT_KEY) if isinstance(metadata, dict) else None
    return str(text) if text is not None else str(document or "")


def query_neighbours(result: Any) -> list[list[Neighbour]]:
    """Chroma's query result as neighbours; a malformed row (a build dropped while it was being
    read leaves rows without metadata) is a StoreError."""
    try:
        return [
            [
                Neighbour(
                    id=i,
                    text=exemplar_text(doc, meta),
                    intent=str(meta["intent"]),
                    similarity=1.0 - dist,
                )
                for i, doc, meta, dist in zip(ids, docs, metas, dists, strict=True)
            ]
            for ids, docs, metas, dists in zip(
                result["ids"],
                result["documents"],
                result["metadatas"],
                result["distances"],
                strict=True,
            )
        ]
    except (TypeError, KeyError, ValueError) as exc:
        raise StoreError(f"Chroma returned a malformed query result: {exc!r}") from exc


@dataclass(frozen=True)
class IndexInfo:
    """What the active build was made from (its metadata, :func:`build_metadata`)."""

    collection: str
    model: str
    dimension: int
    catalog_hash: str
    count: int


def build_metadata(embedder: Embedder, catalog: Catalog) -> dict[str, Any]:
    """A build's metadata: the model, its dimension and the catalog hash it was made from."""
    return {
        "model": embedder.identity,
        "dimension": embedder.dimension,
        "catalog_hash": catalog.content_hash(),
    }


@dataclass(frozen=True)
class SyncPlan:
    """What a sync must do to a build: the exemplars to add, those whose intent or kind
    changed, the ids to remove, and the ids that stay as they are."""

    new: list[Exemplar]
    changed: list[Exemplar]
    removed: list[str]
    unchanged: list[str]


def plan_sync(have: dict[str, Any], exemplars: Sequence[Exemplar]) -> SyncPlan:
    """:class:`SyncPlan` for a build whose rows have the metadata ``have`` (by id); ids are
    content hashes, so an id kept is a text kept."""
    wanted = {e.id: e for e in exemplars}
    moved = {i for i, e in wanted.items() if i in have and routing(have[i]) != (e.intent, e.kind)}
    return SyncPlan(
        new=[e for i, e in wanted.items() if i not in have],
        changed=[wanted[i] for i in wanted if i in moved],
        removed=[i for i in have if i not in wanted],
        unchanged=[i for i in wanted if i in have and i not in moved],
    )
