"""Paths a user names: why one cannot be read as a file, or written, asked before long work so
that the problem shows before the work, not after it (a read-only mount, a file where a
directory should be, a directory where a file should be); files read with a size cap, and
files written whole by a rename, which replaces a symbolic link rather than write through it."""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from pathlib import Path

from gatekeeper.errors import InputError


def why_not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("does not exist", "is a directory, not a file",
    "is not a regular file" for a device, FIFO or socket, which a read would never finish or
    never stop), or None."""
    if path.is_dir():
        return "is a directory, not a file"
    if path.is_file():
        return None
    if path.exists():
        return "is not a regular file (a device, FIFO or socket)"
    return "is a symbolic link to nothing" if path.is_symlink() else "does not exist"


def why_unwritable(path: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` (a directory if ``want_dir``, else a file) cannot be written, or None."""

    if path.exists():
        if want_dir and not path.is_dir():
            return "it exists and is not a directory"
        if not want_dir and path.is_dir():
            return "it is a directory"
        return None if os.access(path, os.W_OK) else "permission denied"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def read_capped(path: Path, limit: int, what: str, *, setting: str = "") -> bytes:
    """The bytes of the regular file ``path``; :class:`InputError` naming ``what`` (and the
    ``setting`` that sets ``limit``) if it is no regular file (``/dev/zero`` never ends) or
    holds more than ``limit`` bytes."""
    if problem := why_not_a_file(path):
        raise InputError(f"{what} {path} {problem}")
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        named = f" ({setting})" if setting else ""
        raise InputError(f"{what} {path} holds more than {limit:,} bytes{named}")
    return data


def write_atomically(target: Path, data: bytes, mode: int | None = None) -> None:
    """``data`` in ``target``, whole or not at all: a temporary file beside it renamed over it,
    so a symbolic link at ``target`` is replaced, never written through. The file gets
    ``mode``; by default an existing regular file keeps its own, and a new one gets what the
    umask allows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = _regular_mode(target) if mode is None else mode
    handle, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(part, _umask_mode() if kept is None else kept)  # mkstemp's is 0600
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def _regular_mode(path: Path) -> int | None:
    """The permission bits of ``path`` if it is a regular file (not a link to one), or None."""
    try:
        status = path.lstat()
    except OSError:
        return None
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else None


def _umask_mode() -> int:
    """The mode a new file gets from ``open``: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


__all__ = ["read_capped", "why_not_a_file", "why_unwritable", "write_atomically"]


def option(name: str, path: object) -> str:
    """``" --name PATH"`` for a command printed as advice, the path quoted for the shell when it
    needs it (a settings file under "My Shop/" was advised unquoted, and the pasted command
    named two arguments)."""
    return f" --{name} {shlex.quote(str(path))}"
