"""Labelled datasets: the customer messages an eval judges, each with the answer it should get.

A dataset is a JSONL or CSV file of rows with ``text``, ``label`` (``in_domain`` | ``off_topic``)
and an optional ``intent``. A multi-turn row carries ``messages`` (OpenAI chat format; in CSV, a
JSON string) instead of ``text``: the last user message is judged, earlier user turns are its
context, and ``intent`` is the judged turn's; its optional ``labels`` (in CSV, also a JSON
string) gives one label per customer turn, oldest first, and ``intents`` (beside ``labels``)
one intent or null per turn. An intent ``unsupported:<name>`` marks an in-domain question of an
intent the catalog lacks (on-topic for the business, so it should still reach the LLM).

Rows with neither a text nor messages (blank lines of a spreadsheet, a benchmark's few empty
texts) are skipped and counted in :attr:`Dataset.skipped`, never fatal, and so is a chat's
customer turn with neither text nor attachments (the live gate leaves it out of the chat); but
a row whose only values are under unknown keys (its text under ``utterance``) is malformed.
Every other problem is a :class:`~gatekeeper.errors.DatasetError` naming the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gatekeeper._rows import (
    Row,
    listed,
    misspelt_column,
    near_key,
    read_csv,
    read_jsonl,
    rename_columns,
)
from gatekeeper.catalog_review import exemplar_key
from gatekeeper.errors import DatasetError
from gatekeeper.eval.dataset_rows import (
    KEYS,
    NEAR,
    Example,
    Label,
    empty_row,
    example_row,
    keys_named,
    located,
    parse_rows,
    stray_values,
)
from gatekeeper.paths import why_not_a_file
from gatekeeper.types import nfc

# Example and example_row live with the row parser; importers find them here too.
__all__ = ["Dataset", "Example", "example_row", "load_dataset", "load_datasets", "write_jsonl"]


@dataclass(frozen=True)
class Dataset:
    """The examples of one or more dataset files, in file order."""

    examples: tuple[Example, ...]
    sources: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # why each skipped row was skipped (empty, or ``skip_invalid``)
    warnings: tuple[str, ...] = ()  # e.g. a key that looks like a misspelt known one

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def name(self) -> str:
        return " + ".join(Path(s).name for s in self.sources)


def load_dataset(
    path: Path | str, *, skip_invalid: bool = False, max_chars: int | None = None
) -> Dataset:
    """Load one labelled dataset (JSONL or CSV); raise :class:`DatasetError` on any problem.

    An empty row (no text, no messages) is always left out and recorded in
    :attr:`Dataset.skipped`; a row without them but with values under unknown keys (the text
    under ``utterance``) is malformed, not empty. With ``skip_invalid``, a malformed row is
    left out and its problem recorded there too, instead of raising (a JSONL line that is not
    a JSON object included); file-level problems still raise. With ``max_chars``
    (``gate.max_message_chars``), a row whose judged message is longer is malformed too: the
    gate would refuse to judge it. Problems and skipped rows are listed in file order."""
    path = Path(path)
    if problem := why_not_a_file(path):
        raise DatasetError(f"dataset {path} {problem}")
    problems: list[tuple[int, str]] = []  # malformed rows: all reported at once, or skipped
    warnings: list[str] = []
    rows = _read_rows(path, problems, warnings)
    examples: list[Example] = []
    empty: list[tuple[int, str]] = []
    keys: set[str] = set()
    for line, row in rows:
        keys.update(row)
        where = f"dataset {located(str(path), line)}"
        if stray := stray_values(row, where):
            problems.append((line, stray))
        elif empty_row(row):
            empty.append((line, f"{where}: empty row (no text), skipped"))
        else:
            try:
                parsed, empty_turns = parse_rows(row, source=str(path), line=line)
                examples += _within(parsed, max_chars)
            except DatasetError as exc:
                problems.append((line, str(exc)))
            else:
                empty += [(line, turn) for turn in empty_turns]
    malformed = [p for _, p in sorted(problems, key=lambda item: item[0])]
    if malformed and not skip_invalid:
        raise DatasetError(_all_problems(path, malformed))
    skipped = [p for _, p in sorted(empty + problems, key=lambda item: item[0])]
    warnings += _misspelt_keys(keys, path)
    if not examples:
        raise DatasetError(_no_rows(path, skipped, warnings))
    return Dataset(
        examples=tuple(examples),
        sources=(str(path),),
        skipped=tuple(skipped),
        warnings=(*warnings, *_repeats(examples, path)),
    )


def _read_rows(path: Path, problems: list[tuple[int, str]], warnings: list[str]) -> list[Row]:
    """The rows of a JSONL or CSV dataset; lines that are not rows go to ``problems``, and a
    ``.csv`` file that is tab-separated (read as such) to ``warnings``."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return read_jsonl(path, DatasetError, "dataset", lambda n, p: problems.append((n, p)))
    if suffix != ".csv":
        raise DatasetError(
            f"dataset {path}: unknown format {suffix!r} (use .jsonl or .csv){_format_hint(suffix)}"
        )

    def delimiter(used: str) -> None:
        if used == "\t":
            warnings.append(
                f"dataset {path}: read as tab-separated (its header has tabs, not commas); "
                "fine if meant, but a .csv file is usually comma-separated"
            )

    return read_csv(
        path,
        DatasetError,
        "dataset",
        _check_dataset_header,
        lambda n, p: problems.append((n, f"dataset {located(str(path), n)} {p}")),
        delimiter,
    )


def _no_rows(path: Path, skipped: list[str], warnings: list[str]) -> str:
    """Why a dataset has no rows: with every row skipped, the first reason and the keys that
    look misspelt (the likely cause: the text or label under another key)."""
    if not skipped:
        return f"dataset {path} has no rows"
    rows = "the only row was" if len(skipped) == 1 else f"all {len(skipped)} rows were"
    hints = "".join(f"\n  {w}" for w in warnings)
    return f"dataset {path} has no rows left: {rows} skipped, e.g.\n  {skipped[0]}{hints}"


_FORMAT_HINTS = {
    ".tsv": "; a tab-separated file: save it as CSV (comma-separated, with a header row)",
    ".txt": "; a text file has no labels: write rows of text and label as .jsonl or .csv",
    ".json": (
        '; a JSON file: write one row object per line ({"text": ..., "label": ...}) as .jsonl'
    ),
}


def _format_hint(suffix: str) -> str:
    return _FORMAT_HINTS.get(suffix, "")


def _all_problems(path: Path, problems: list[str]) -> str:
    """One error for every malformed row, so a file is fixed in one pass, not one row a run."""
    if len(problems) == 1:
        return problems[0]
    return (
        f"dataset {path}: {len(problems)} malformed rows (fix them, or leave them out with "
        f"--skip-invalid):\n{listed(problems)}"
    )


def _misspelt_keys(keys: set[str], path: Path) -> tuple[str, ...]:
    """A warning for each unknown key close to a known one (``lable``, ``intnet``): its values
    are ignored, and a misspelt ``intent`` loses the row's intent without a word. Other extra
    keys (ids, sources, notes) are fine."""
    return tuple(
        f"dataset {path}: ignored key {keys_named([key])}"
        for key in sorted(k for k in keys if isinstance(k, str) and k not in KEYS)
        if near_key(key, KEYS, NEAR)
    )


def _repeats(examples: list[Example], path: Path) -> list[str]:
    """Warnings for rows that repeat an earlier one (each copy is counted, so a row pasted
    twice weighs twice), and for a message labelled both ways (one label is wrong), compared
    as the catalog compares exemplars: case and surrounding white space aside."""
    first: dict[str, Example] = {}
    labelled: dict[tuple[str, Label], Example] = {}  # the first row of each message and label
    repeated: list[tuple[Example, Example]] = []
    conflicting: list[tuple[Example, Example]] = []
    for example in examples:
        if example.turn is not None:  # chats share their opening turns: not a repeat
            continue
        seen = first.setdefault(_message_key(example), example)
        if seen is not example and seen.label == example.label:
            repeated.append((example, seen))
        key = _meaning_key(example)
        other = labelled.get((key, "off_topic" if example.in_domain else "in_domain"))
        if other is not None:
            conflicting.append((example, other))
        labelled.setdefault((key, example.label), example)
    warnings = []
    if repeated:
        again, seen = repeated[0]
        warnings.append(
            f"dataset {path}: {_rows(len(repeated), 'repeats', 'repeat')} an earlier one (e.g. "
            f"{_line(again)} repeats {_line(seen)}); each copy is counted"
        )
    if conflicting:
        again, seen = conflicting[0]
        warnings.append(
            f"dataset {path}: {_rows(len(conflicting), 'is', 'are')} labelled both ways (e.g. "
            f"{_line(again)} {again.label}, {_line(seen)} {seen.label}): one label is wrong"
        )
    return warnings


def _rows(n: int, one: str, many: str) -> str:
    return f"1 row {one}" if n == 1 else f"{n} rows {many}"


def _message_key(example: Example) -> str:
    """A message as compared for repeats: surrounding white space and the normal form aside."""
    if isinstance(example.message, str):
        return nfc(example.message.strip())
    chat = [dict(m) for m in example.message]
    return nfc(json.dumps(chat, ensure_ascii=False, sort_keys=True))


def _meaning_key(example: Example) -> str:
    """A message as compared for labels both ways (:func:`exemplar_key` for a text)."""
    if isinstance(example.message, str):
        return exemplar_key(example.message)
    return _message_key(example)


def _line(example: Example) -> str:
    return f"{'row' if example.source.lower().endswith('.csv') else 'line'} {example.line}"


def _within(examples: list[Example], max_chars: int | None) -> list[Example]:
    for example in examples:
        if max_chars is not None and len(example.text) > max_chars:
            raise DatasetError(
                f"dataset {example.where}: the message has {len(example.text)} characters; "
                f"the gate's limit is {max_chars} (gate.max_message_chars)"
            )
    return examples


def load_datasets(
    paths: Iterable[Path | str], *, skip_invalid: bool = False, max_chars: int | None = None
) -> Dataset:
    """Load several dataset files as one, keeping each example's source (the path as given).
    One file given twice (or by two paths to it) is an error: its rows would count twice."""
    files = [Path(p) for p in paths]
    if not files:
        raise DatasetError("no dataset given")
    _check_distinct(files)
    loaded = [load_dataset(f, skip_invalid=skip_invalid, max_chars=max_chars) for f in files]
    return Dataset(
        examples=tuple(e for d in loaded for e in d.examples),
        sources=tuple(s for d in loaded for s in d.sources),
        skipped=tuple(s for d in loaded for s in d.skipped),
        warnings=tuple(w for d in loaded for w in d.warnings),
    )


def _check_distinct(paths: list[Path]) -> None:
    """Raise :class:`DatasetError` when two of ``paths`` are one file (the same path, another
    spelling of it, a link to it); a path that cannot be read is left to :func:`load_dataset`."""
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        first = seen.setdefault((stat.st_dev, stat.st_ino), path)
        if first is not path:
            spelt = "" if str(first) == str(path) else f" (as {first} and as {path})"
            raise DatasetError(
                f"dataset {first} is given twice{spelt}: its rows would be counted twice; "
                "give each dataset once"
            )


def _check_dataset_header(header: list[str]) -> str | None:
    """The problem of a CSV header without ``label`` or a message column, with the column to
    rename when one is spelt close to the missing name (``lable``, ``txet``)."""
    wanted: list[tuple[str, ...]] = []
    if not {"text", "messages"} & set(header):
        wanted.append(("text", "messages"))
    if "label" not in header:
        wanted.append(("label",))
    if not wanted:
        return None
    renames = [m for names in wanted if (m := misspelt_column(header, names, KEYS, NEAR))]
    return (
        f"the CSV header needs 'label' and 'text' (or 'messages') columns{rename_columns(renames)}"
    )


def write_jsonl(examples: Iterable[Example], path: Path) -> int:
    """Write ``examples`` as a JSONL dataset; return how many rows were written."""
    lines = [json.dumps(example_row(e), ensure_ascii=False) for e in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
