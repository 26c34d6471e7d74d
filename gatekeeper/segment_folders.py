"""The folders an embedded Chroma keeps vectors in, removed with the builds they belong to.

An embedded Chroma (``PersistentClient``, under ``<data_dir>/chroma``) keeps each collection's
HNSW index in a folder named by the collection's vector segment id, ``<segment uuid>/``
(``header.bin``, ``data_level0.bin``, ``length.bin``, ``link_lists.bin``). chromadb 1.x's
``delete_collection`` removes the collection and its segments from its SQLite catalog
(``chroma.sqlite3``, "sysdb") but leaves that folder on disk (seen with chromadb 1.5.9; upstream
issues chroma-core/chroma#5259 and #5520, open: a maintainer there says removing the files is
left to a garbage collector that a local Chroma does not run; the fix proposed upstream,
#7218, was unmerged when this was written).
Every ``index`` that changes something fills a new build and drops the one before the previous
(:mod:`gatekeeper.store`), so each left a dead folder: a 2,498-exemplar catalog rebuilt 7 times
grew ``data/chroma`` from 6.5 MB to 31 MB, 7 folders of 3.4 MB for 2 live builds.

:func:`drop_build` therefore removes a dropped build's folders, and :func:`sweep` those that
earlier versions left behind. What it relies on, and why:

* Which folders are a build's: its segment ids. Chroma's API does not expose a collection's
  segments (the Rust bindings behind ``PersistentClient`` have no ``get_segments``), so they are
  read from the sysdb's ``segments`` table (``id``, ``collection``), read-only, for the
  collection id Chroma's API gives, *before* the collection is deleted.
* A folder is removed only when it is a real folder named by a UUID right under the data dir
  and, after the delete, no segment in the sysdb names it any more.
* Embedded only: the client's settings must say it is Chroma's persistent Rust-bindings client
  (what ``PersistentClient`` makes). A Chroma server owns its disk, and with ``store.host`` set
  gatekeeper never touches a folder.
* The sweep removes a folder only if, besides the above, no collection id names it either, it
  holds nothing but HNSW files, and nothing in it was written for :data:`LEAK_AGE`. A live
  segment is in the sysdb before its folder exists (Chroma records a collection's segments
  when it creates the collection: a new, empty one has its segment rows and no folder; the
  folder comes with the first vectors), and the age keeps a folder that another process is
  writing out of reach whatever the order.

Any failure (a sysdb another Chroma version laid out otherwise, a file still open on Windows)
leaves folders on disk and is logged; it never fails the drop or the sync.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from gatekeeper.logging import get_logger

#: The persistent client's API implementation (chromadb 1.x), set by ``PersistentClient``.
EMBEDDED_API = "chromadb.api.rust.RustBindingsAPI"
#: The files of an HNSW segment's folder (chromadb 1.x; ``index_metadata.pickle``: 0.4-0.6).
HNSW_FILES = frozenset(
    {"header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle"}
)
#: How long nothing may have been written in a folder no segment names before :func:`sweep`
#: takes it for a leaked one (seconds).
LEAK_AGE = 3600.0


def data_dir(client: Any) -> Path | None:
    """The folder an embedded Chroma ``client`` keeps its data in; None for a Chroma server
    (or any client that is not Chroma's persistent one)."""
    try:
        settings = client.get_settings()
    except Exception:  # not a chromadb client: nothing of ours to clean
        return None
    if settings.chroma_api_impl != EMBEDDED_API or not settings.is_persistent:
        return None
    return Path(settings.persist_directory) if settings.persist_directory else None


def _ids(root: Path, query: str, *args: str) -> set[str]:
    """The first column of ``query`` on the sysdb of the data dir ``root``, read-only."""
    uri = f"file:{root / 'chroma.sqlite3'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as db:
        return {str(row[0]) for row in db.execute(query, args)}


def _segments_of(root: Path, collection_id: str) -> set[str]:
    return _ids(root, "SELECT id FROM segments WHERE collection = ?", collection_id)


def _named(root: Path) -> set[str]:
    """Every segment id and collection id in the sysdb of ``root``."""
    return _ids(root, "SELECT id FROM segments UNION SELECT id FROM collections")


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _folder(root: Path, name: str) -> Path | None:
    path = root / name
    if _is_uuid(name) and path.is_dir() and not path.is_symlink():
        return path
    return None


def _remove(folders: Iterable[Path]) -> list[Path]:
    """Remove ``folders``; the ones removed (a failure is logged, the folder stays)."""
    removed = []
    for path in folders:
        try:
            shutil.rmtree(path)
        except OSError as exc:
            get_logger().warning("index.segment_folder_kept", folder=str(path), error=repr(exc))
            continue
        removed.append(path)
    return removed


def drop_build(client: Any, name: str) -> bool:
    """Delete the collection ``name`` from Chroma ``client`` (say whether it could) and, on an
    embedded Chroma, the folders of its segments (see the module's docstring)."""
    root = data_dir(client)
    segments: set[str] = set()
    if root is not None:
        try:
            segments = _segments_of(
                root, str(client.get_collection(name, embedding_function=None).id)
            )
        except Exception:  # no such build, or no sysdb we can read: delete it all the same
            segments = set()
    try:
        client.delete_collection(name)
    except Exception:  # an old build that cannot be dropped is garbage, not a failure
        return False
    if root is not None and segments:
        try:
            gone = segments - _named(root)
        except sqlite3.Error as exc:
            get_logger().warning("index.segment_folders_kept", build=name, error=repr(exc))
            return True
        _remove(path for s in sorted(gone) if (path := _folder(root, s)) is not None)
    return True


def _leaked(path: Path, now: float, age: float) -> int | None:
    """The size of ``path`` when it looks like a leaked HNSW folder (only HNSW files, none
    written for ``age`` seconds), else None."""
    entries = list(path.iterdir())
    if any(e.name not in HNSW_FILES or not e.is_file() or e.is_symlink() for e in entries):
        return None
    stats = [path.lstat(), *(e.lstat() for e in entries)]
    if now - max(s.st_mtime for s in stats) <= age:
        return None
    return sum(s.st_size for s in stats[1:])


def sweep(client: Any, *, age: float = LEAK_AGE, now: float | None = None) -> list[str]:
    """On an embedded Chroma ``client``, remove the segment folders no segment or collection
    names and nothing wrote for ``age`` seconds (left by ``delete_collection`` before
    :func:`drop_build` removed them); log and return their names."""
    root = data_dir(client)
    if root is None or not root.is_dir():
        return []
    now = time.time() if now is None else now
    try:
        listed = [p for e in root.iterdir() if (p := _folder(root, e.name)) is not None]
        named = _named(root) if listed else set()  # read after listing the folders
        sizes = {p: _leaked(p, now, age) for p in listed if p.name not in named}
    except (OSError, sqlite3.Error) as exc:
        get_logger().warning("index.segment_folders_unchecked", error=repr(exc))
        return []
    removed = _remove(sorted(p for p, size in sizes.items() if size is not None))
    if removed:
        get_logger().info(
            "index.leaked_segment_folders_removed",
            folders=[p.name for p in removed],
            megabytes=round(sum(sizes[p] or 0 for p in removed) / 1e6, 1),
        )
    return [p.name for p in removed]


__all__ = ["LEAK_AGE", "data_dir", "drop_build", "sweep"]
