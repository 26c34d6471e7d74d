"""Row files (JSONL, CSV) as read by catalogs and labelled datasets.

Each reader returns ``(line number, row)`` pairs and raises the caller's error class with a
message that names the file (as ``"<what> <path>"``) and, where it applies, the line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatekeeper.errors import GatekeeperError

Row = tuple[int, dict[str, Any]]


def read_text(path: Path, error: type[GatekeeperError], what: str) -> str:
    """The file's UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read: {exc}") from exc


def read_jsonl(path: Path, error: type[GatekeeperError], what: str) -> list[Row]:
    """One JSON object per non-blank line."""
    rows: list[Row] = []
    for number, line in enumerate(read_text(path, error, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise error(f"{what} {path}, line {number}: not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise error(f"{what} {path}, line {number}: expected a JSON object")
        rows.append((number, row))
    return rows


def read_csv(
    path: Path,
    error: type[GatekeeperError],
    what: str,
    check_header: Callable[[list[str]], str | None],
) -> list[Row]:
    """CSV rows keyed by the header; ``check_header`` returns a problem with it, or None."""
    text = read_text(path, error, what)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        problem = check_header(header)
        if problem:
            raise error(f"{what} {path}: {problem} (header: {header})")
        return [(reader.line_num, dict(row)) for row in reader]
    except csv.Error as exc:
        raise error(f"{what} {path}: not valid CSV: {exc}") from exc
