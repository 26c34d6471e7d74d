"""Row files (JSONL, CSV) as read by catalogs and labelled datasets.

Each reader returns ``(row number, row)`` pairs and raises the caller's error class with a
message that names the file (as ``"<what> <path>"``) and, where it applies, the row.

A key given twice in one object (JSON) or mapping (YAML) is an error, never "the last one
wins": a second ``exemplars:`` block added to an intent would otherwise drop the first one's
exemplars without a word.

Files are taken as people save them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped,
CSV header names are matched without regard to case or surrounding white space (``Text,Intent``
is ``text,intent``), the delimiter is whichever of ``,`` ``;`` and tab the header uses, and
quoted fields may hold delimiters and newlines. A CSV row number is the spreadsheet's (the
header is row 1); a JSONL row number is the line number. Blank lines are left out; a row of
empty cells (``,,``) is kept, for the caller to count as an empty row.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from gatekeeper.errors import GatekeeperError
from gatekeeper.paths import why_not_a_file

Row = tuple[int, dict[str, Any]]
DELIMITERS = (",", ";", "\t")
#: Problems an error lists one by one (the rest are counted).
LISTED_PROBLEMS = 10
#: The most characters of a file's content an error or warning quotes.
QUOTED_CHARS = 200


def shown(value: Any, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)`` for a message, a text in it cut to ``limit`` characters with "…" (a
    header or a line of a file can be megabytes long), or the repr itself cut so."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 1] + "…")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listed(problems: Sequence[str], limit: int = LISTED_PROBLEMS) -> str:
    """The first ``limit`` of ``problems``, one an indented line, then how many more."""
    lines = "\n".join(f"  {problem}" for problem in problems[:limit])
    more = len(problems) - limit
    return lines + (f"\n  ... and {more} more" if more > 0 else "")


def near_key(key: str, known: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The one of ``known`` that ``key`` (case aside) looks like a misspelling of, if any."""
    close = difflib.get_close_matches(str(key).casefold(), known, n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_keys(keys: Iterable[str], known: Sequence[str], cutoff: float = 0.6) -> str:
    """Unknown keys (or CSV columns), quoted, each with a did-you-mean when one is close."""
    named = []
    for key in keys:
        meant = near_key(key, known, cutoff)
        named.append(shown(key) + (f" (did you mean {meant!r}?)" if meant else ""))
    return ", ".join(named)


def misspelt_column(
    header: Sequence[str], wanted: Sequence[str], known: Sequence[str], cutoff: float = 0.6
) -> tuple[str, str] | None:
    """The first column of ``header`` that is none of ``known`` but looks like a misspelling
    of one of ``wanted`` (:func:`near_key`), with the one it looks like."""
    for key in header:
        meant = near_key(key, wanted, cutoff) if key and key not in known else None
        if meant:
            return key, meant
    return None


def rename_columns(renames: Sequence[tuple[str, str]]) -> str:
    """``" (rename the column 'texto' to 'text' and 'intnet' to 'intent')"``, or nothing."""
    named = [f"{key!r} to {to!r}" for key, to in renames]
    return f" (rename the column {' and '.join(named)})" if named else ""


def class_id(value: Any) -> bool:
    """A benchmark's class id where a name belongs: a number, or a CSV cell of digits."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number or (isinstance(value, str) and value.strip().isdigit())


def map_class_ids(to: str) -> str:
    """How to fix a class id written where a name belongs: map the ids ``to`` names."""
    return f"a class id: map the benchmark's ids to {to}"


def read_text(path: Path, error: type[GatekeeperError], what: str) -> str:
    """The file's UTF-8 text, without a leading byte-order mark; a file in another encoding
    is an error naming the line and how to save it, and so is a path that is no regular file
    (a FIFO would block, ``/dev/zero`` never ends)."""
    if problem := why_not_a_file(path):
        raise error(f"{what} {path} {problem}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}{_not_utf8(data, exc, path.suffix.lower())}") from exc


def _not_utf8(data: bytes, exc: UnicodeDecodeError, suffix: str) -> str:
    excel = " (in Excel: 'CSV UTF-8 (Comma delimited)')" if suffix == ".csv" else ""
    save = f"save it as UTF-8{excel}"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f": the file is UTF-16 text, not UTF-8; {save}"
    line = data.count(b"\n", 0, exc.start) + 1
    return f", line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); {save}"


class DuplicateKeyError(ValueError):
    """A JSON object that gives one key twice."""


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for ``json.loads`` that refuses a key given twice
    (:class:`DuplicateKeyError`)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"the key {key[:50]!r} is given twice in one object")
            seen.add(key)
    return obj


def loads_json(text: str) -> Any:
    """``json.loads``, refusing a key given twice in one object (:class:`DuplicateKeyError`)."""
    return json.loads(text, object_pairs_hook=unique_pairs)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives one key twice (PyYAML keeps the
    last). Keys brought in by a merge (``<<: *base``) may still be overridden."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {shown(key)} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_MERGE = "tag:yaml.org,2002:merge"


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load``, refusing a key given twice in one mapping (a ``yaml.YAMLError``)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error as ``", line L, column C: not valid YAML: <problem>"`` (PyYAML's own
    text names ``"<unicode string>"`` instead of the file)."""
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def read_jsonl(
    path: Path,
    error: type[GatekeeperError],
    what: str,
    on_bad_line: Callable[[int, str], None] | None = None,
) -> list[Row]:
    """One JSON object per non-blank line. A line that is not one raises ``error``, or with
    ``on_bad_line`` is left out and passed to it as ``(line number, problem)``."""
    rows: list[Row] = []
    for number, line in enumerate(read_text(path, error, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, _json_object(line, f"{what} {path}, line {number}", error)))
        except GatekeeperError as exc:
            if on_bad_line is None:
                raise
            on_bad_line(number, str(exc))
    return rows


def _json_object(line: str, where: str, error: type[GatekeeperError]) -> dict[str, Any]:
    try:
        row = loads_json(line)
    except DuplicateKeyError as exc:
        raise error(f"{where}: {exc} (which one is meant?)") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise error(f"{where}: expected a JSON object")
    return row


def sniff_delimiter(text: str) -> str:
    """The delimiter the header line uses: the most frequent of ``,`` ``;`` and tab outside
    quotes (``,`` when there is none)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def header_key(name: str | None) -> str:
    """A header cell as matched: case and surrounding white space do not count."""
    return (name or "").strip().casefold()


def read_csv(
    path: Path,
    error: type[GatekeeperError],
    what: str,
    check_header: Callable[[list[str]], str | None],
    on_bad_row: Callable[[int, str], None] | None = None,
    on_delimiter: Callable[[str], None] | None = None,
) -> list[Row]:
    """CSV rows keyed by the (normalised) header; ``check_header`` returns a problem with the
    header, or None.

    A row with more cells than the header is malformed, empty extra cells included (unless
    every cell is empty): an
    unquoted comma in a text (``my brakes squeak, can you look at them,repairs,``) would
    otherwise shift the rest of the row one column right and make up an intent. (Spreadsheets
    pad the header row as they pad the others, so their exports never do this.) Such rows are
    left out and passed to ``on_bad_row`` as ``(row number, problem)``; without it, one
    ``error`` names them all. ``on_delimiter``, if given, is told the delimiter the header
    uses."""
    text = read_text(path, error, what)
    delimiter = sniff_delimiter(text)
    if on_delimiter is not None:
        on_delimiter(delimiter)
    try:
        with field_limit(len(text)):
            records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise error(f"{what} {path}: not valid CSV: {exc}") from exc
    rows: list[Row] = []
    overflow: list[tuple[int, str]] = []  # rows with more cells than the header
    header: list[str] | None = None
    for number, cells in enumerate(records, start=1):
        if header is None:
            if not any(cell.strip() for cell in cells):
                continue
            header = [header_key(cell) for cell in cells]
            named = [key for key in header if key]
            twice = sorted({key for key in named if named.count(key) > 1})
            if twice:
                raise error(
                    f"{what} {path}: the header names the column {shown(twice[0])} twice "
                    "(which one is meant?)"
                )
            problem = check_header(header)
            if problem:
                raise error(f"{what} {path}: {problem} (header: {shown(header)})")
            continue
        if len(cells) <= 1 and not "".join(cells).strip():  # a blank line
            continue
        if len(cells) > len(header) and any(cell.strip() for cell in cells):
            overflow.append((number, too_many_cells(cells, len(header), delimiter)))
            continue
        row = {key: value for key, value in zip(header, cells, strict=False) if key}
        rows.append((number, row))
    if header is None:
        raise error(f"{what} {path}: the file is empty (expected a header row)")
    if overflow and on_bad_row is None:
        raise error(f"{what} {path}:\n" + listed([f"row {n} {p}" for n, p in overflow]))
    if on_bad_row is not None:
        for number, problem in overflow:
            on_bad_row(number, problem)
    return rows


#: The largest field limit the csv module takes everywhere (a C ``long`` on Windows).
_MOST_FIELD_LIMIT = 2**31 - 1


@contextmanager
def field_limit(chars: int) -> Iterator[None]:
    """Let the csv module read a field of up to ``chars`` characters while in the block.

    Its default limit (131,072) refuses a whole file over one long cell, with no row number
    and nothing ``--skip-invalid`` could skip; with the limit raised to the file's length, a
    long cell is read and the callers' checks of each row (a dataset message over
    ``gate.max_message_chars``) name its row, as for the same JSONL line. The limit is
    process-wide, so it is put back after; a thread reading another CSV file meanwhile may
    see either limit."""
    before = csv.field_size_limit()
    csv.field_size_limit(min(max(before, chars), _MOST_FIELD_LIMIT))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def too_many_cells(cells: list[str], width: int, delimiter: str) -> str:
    """Why a row with more cells than the header is refused, and how to fix it."""
    name = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    return (
        f"has {len(cells)} cells but the header has {width} "
        f"({shown(delimiter.join(cells), 80)}): put a text that holds "
        f'a {name} in double quotes ("my brakes squeak, can you look at them"), or delete '
        "the cells past the header's last column"
    )
