"""Paths a user names: why one cannot be read as a file, or written, asked before long work so
that the problem shows before the work, not after it (a read-only mount, a file where a
directory should be, a directory where a file should be)."""

from __future__ import annotations

import os
from pathlib import Path


def why_not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("does not exist", "is a directory, not a file"),
    or None."""
    if path.is_dir():
        return "is a directory, not a file"
    return None if path.is_file() else "does not exist"


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


__all__ = ["why_not_a_file", "why_unwritable"]
