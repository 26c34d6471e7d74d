"""What ``gatekeeper tune`` writes: one directory per tuned artifact (a linear adapter, a
fine-tuned encoder), named after its catalog and content, with a ``manifest.json``, and
published whole or not at all (written into a hidden sibling, then renamed over the target).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from gatekeeper.errors import InputError
from gatekeeper.paths import why_unwritable

MANIFEST_FILE = "manifest.json"


def artifact_name(catalog_name: str, digest: str, kind: str = "") -> str:
    """``<catalog slug>[-<kind>]-<first 12 hex digits of digest>``: a directory name."""
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", catalog_name).strip("-_")[:40] or "catalog"
    return "-".join(part for part in (slug, kind, digest[:12]) if part)


#: A scratch directory left by a process that is gone is removed once it is this old (seconds):
#: the age keeps a write in progress on another host (a shared directory) safe.
STALE_SCRATCH_AGE = 3600.0


def scratch_dir(parent: Path, label: str) -> Path:
    """A fresh hidden directory under ``parent`` to write an artifact into; :class:`InputError`
    when ``parent`` cannot take one. Those of the same ``label`` that a killed run left behind
    are removed first (see :func:`drop_stale_scratch`)."""
    parent = Path(parent).expanduser()
    drop_stale_scratch(parent, label)
    tmp = parent / f".{label}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:  # a read-only place, a file where a directory should be
        raise InputError(f"cannot write into {parent}: {exc.strerror or exc}") from exc
    return tmp


def drop_stale_scratch(parent: Path, label: str, age: float = STALE_SCRATCH_AGE) -> list[Path]:
    """Remove the ``label`` scratch directories under ``parent`` whose process is no longer
    running here and that were last changed more than ``age`` seconds ago (a run killed while
    writing); the removed ones. Never raises: a directory that cannot be read or removed is
    left alone."""
    removed = []
    with contextlib.suppress(OSError):
        for candidate in parent.glob(f".{glob.escape(label)}.partial-*"):
            if _stale(candidate, label, age):
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
    return removed


def _stale(candidate: Path, label: str, age: float) -> bool:
    """Whether ``candidate`` (``.<label>.partial-<pid>-<hex>``) is a dead process's, and old."""
    pid = candidate.name[len(label) + len("..partial-") :].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
        return False
    try:
        return candidate.is_dir() and time.time() - candidate.stat().st_mtime > age
    except OSError:
        return False


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def check_replaceable(target: Path) -> None:
    """:class:`InputError` unless ``target`` is free or an earlier artifact (a directory with a
    ``manifest.json``), and its directory can be written: publishing replaces it whole, so
    ``--out ~/models`` must never delete a directory of other files, and a read-only place is
    refused before the training, not after it."""
    target = Path(target).expanduser()
    if target.exists() and not (target.is_dir() and (target / MANIFEST_FILE).is_file()):
        raise InputError(
            f"--out {target} exists and is not an earlier tuned model (no {MANIFEST_FILE}): "
            "it would be replaced whole; name a new directory"
        )
    # a new target: where it would be made; an earlier one: beside it, where the new one is
    # written before the swap
    problem = why_unwritable(target.parent if target.exists() else target, want_dir=True)
    if problem:
        raise InputError(f"--out {target} cannot be written: {problem}")


def _as_umask_allows(directory: Path) -> None:
    """Give every file under ``directory`` the mode the umask allows: some writers (the
    encoder's ``model.safetensors``) create theirs owner-only, which replicas or an index job
    running as another user could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def publish(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing an older artifact there (renames
    only: an interrupted run leaves the old artifact or the new one, never half of one);
    anything else at ``target`` is refused (:func:`check_replaceable`)."""
    target = Path(target).expanduser()
    check_replaceable(target)
    _as_umask_allows(tmp)
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if os.path.lexists(target):
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        _remove(old)


def _remove(path: Path) -> None:
    """Remove ``path``, a directory or a symbolic link (to an earlier artifact: the link goes,
    not what it points to), if it is there; errors ignored."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
