"""A catalog given as rows (CSV or JSONL) of ``text,intent``, as the catalog mapping YAML gives.

Optional ``reply``, ``description`` and ``threshold`` columns carry what the YAML form says per
intent; the intent ``off_topic`` marks an off-topic exemplar (its row's ``reply`` is the
refusal). :func:`rows_to_raw` returns the mapping with the problems (fatal) and warnings (not)
found on the way; :mod:`gatekeeper.catalog` validates it. Intent names and texts are taken in
NFC (:func:`~gatekeeper.types.nfc`), so rows of one intent pasted from different places group
as one intent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gatekeeper._rows import (
    Row,
    class_id,
    map_class_ids,
    misspelt_column,
    near_key,
    rename_columns,
    shown,
    unknown_keys,
)
from gatekeeper.catalog_review import lookalike, looks_like_off_topic
from gatekeeper.types import OFF_TOPIC, nfc

_COLUMNS = ("text", "intent", "reply", "description", "threshold")
_PROPERTIES = ("reply", "description", "threshold")


def check_catalog_header(header: list[str]) -> str | None:
    """The problem of a CSV header without ``text`` or ``intent``, with the column to rename:
    one spelt close to the missing name (``Texto``, ``intnet``), or a benchmark's ``label``."""
    missing = {"text", "intent"} - set(header)
    if not missing:
        return None
    renames: list[tuple[str, str]] = []
    for name in (n for n in ("text", "intent") if n in missing):
        free = [k for k in header if k not in {key for key, _ in renames}]
        rename = misspelt_column(free, (name,), _COLUMNS)
        alias = next((k for k in free if k in _INTENT_ALIASES), None)
        if rename is None and name == "intent" and alias is not None:
            rename = (alias, name)
        if rename is not None:
            renames.append(rename)
    return (
        f"the CSV header needs 'text' and 'intent' columns; missing {sorted(missing)}"
        f"{rename_columns(renames)}"
    )


def _cell(value: Any) -> Any:
    """A cell's value: text stripped, blank text as None."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def rows_to_raw(
    rows: list[Row], path: Path, *, decimal_comma: bool = False
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Rows of ``text,intent[,reply,description,threshold]`` as a catalog mapping, with the
    problems (fatal) and warnings (not) found on the way.

    With ``decimal_comma`` (a CSV file separated by ``;`` or tab, as Excel saves one in a
    locale that writes ``0,85``), a threshold written with one decimal comma is that number;
    elsewhere such a threshold is a problem that says to use a dot.

    An intent's reply, description and threshold may sit on any of its rows (on several, they
    must agree); the ``off_topic`` rows' reply is the refusal. A row with a property and no
    text only sets the property; a row with neither is empty and skipped; a row with no text
    but a value under an unknown column (its exemplar under ``utterance``) is a problem."""
    problems: list[str] = []
    empty: list[int] = []
    repeated: list[str] = []
    lookalikes: dict[str, list[int]] = {}
    unknown: set[str] = set()
    misspelt: dict[str, list[int]] = {}
    entries: dict[str, dict[str, Any]] = {}
    off_topic: dict[str, Any] = {"exemplars": []}
    given: dict[tuple[str, str], tuple[Any, int]] = {}
    first_row: dict[tuple[str, str], int] = {}
    column = "column" if path.suffix.lower() == ".csv" else "key"
    for number, row in rows:
        unknown.update(k for k in row if k not in _COLUMNS)
        text, intent = _cell(row.get("text")), _cell(row.get("intent"))
        props = {k: _cell(row.get(k)) for k in _PROPERTIES if _cell(row.get(k)) is not None}
        stray = [k for k in row if k not in _COLUMNS and _cell(row[k]) is not None]
        if text is None and stray:  # e.g. the text under 'utterance', a reply under 'Repyl'
            problems.append(_stray_problem(number, stray, column, intent is None))
            continue
        for key in stray:  # beside a text: e.g. a reply under 'replly'
            if near_key(key, _COLUMNS):
                misspelt.setdefault(key, []).append(number)
        if intent is None:
            if text is None and not props:
                empty.append(number)
            else:
                hint = f"; the row has the unknown {column} {_unknown_keys(stray)}" if stray else ""
                problems.append(f"row {number}: 'intent' is empty{hint}{_intent_as(row, stray)}")
            continue
        if not isinstance(intent, str) or (text is not None and not isinstance(text, str)):
            problems.append(f"row {number}: 'text' and 'intent' must be text")
            continue
        intent, text = nfc(intent), nfc(text) if text is not None else None
        if looks_like_off_topic(intent):
            lookalikes.setdefault(intent, []).append(number)
            continue
        target = (
            off_topic
            if intent == OFF_TOPIC
            else entries.setdefault(intent, {"name": intent, "exemplars": []})
        )
        for key, value in props.items():
            if key == "threshold":
                value = _threshold(value, decimal_comma)
            problem = _set_property(target, intent, key, value, number, given)
            if problem:
                problems.append(problem)
        if text is None:
            if not props:
                empty.append(number)
            continue
        seen = first_row.setdefault((intent, text), number)
        if seen != number:
            repeated.append(f"row {number} repeats row {seen}")
            continue
        target["exemplars"].append(text)
    for key, numbers in misspelt.items():
        problems.append(_misspelt_problem(key, numbers, column))
        unknown.discard(key)
    for name, numbers in lookalikes.items():
        problems.append(
            f"{_rows_label(numbers)}: "
            + lookalike(name, "write the intent of off-topic exemplars as 'off_topic'")
        )
    warnings = []
    if empty:
        count = "1 empty row" if len(empty) == 1 else f"{len(empty)} empty rows"
        warnings.append(f"skipped {count} (no text): {_rows_label(empty)}")
    if repeated:
        count = "1 row repeats" if len(repeated) == 1 else f"{len(repeated)} rows repeat"
        warnings.append(
            f"{count} an earlier row verbatim (kept once): "
            + ", ".join(repeated[:10])
            + (" …" if len(repeated) > 10 else "")
        )
    if unknown:
        named = _unknown_keys(sorted(unknown))
        warnings.append(f"ignored unknown {column}s {named}; known: {', '.join(_COLUMNS)}")
    raw = {
        "domain": f"intents from {path.name}",
        "intents": list(entries.values()),
        "off_topic": off_topic,
    }
    return raw, problems, warnings


def _stray_problem(number: int, stray: list[str], column: str, no_intent: bool) -> str:
    """The problem of row ``number``, which has no text but values under the unknown
    ``stray`` columns (keys): its exemplar (or reply) would be lost without a word."""
    one = len(stray) == 1
    values = f"a value under the unknown {column}" if one else f"values under the unknown {column}s"
    intent = " and its intent under 'intent'" if no_intent else ""
    return (
        f"row {number}: no 'text', but {values} {_unknown_keys(stray)}: "
        f"an exemplar's text goes under 'text'{intent}"
    )


def _misspelt_problem(key: str, numbers: list[int], column: str) -> str:
    """The problem of a value under ``key``, a misspelling of a known column: a reply under
    ``replly`` would be dropped and its intent sent to the LLM instead of answered."""
    return (
        f"{_rows_label(numbers)}: a value under the unknown {column} {_unknown_keys([key])}, "
        "which would be ignored: rename it"
    )


def _unknown_keys(keys: Iterable[str]) -> str:
    """Unknown columns (or JSONL keys), each with a did-you-mean when one is close."""
    return unknown_keys(keys, _COLUMNS)


#: Names a benchmark gives the column a catalog calls ``intent``.
_INTENT_ALIASES = ("label", "labels", "class", "category")


def _intent_as(row: dict[str, Any], stray: list[str]) -> str:
    """For a row without an intent: rename a ``label`` (``class``, ...) key to ``intent``,
    mapping class ids to intent names when that is what it holds."""
    alias = next((k for k in stray if str(k).strip().casefold() in _INTENT_ALIASES), None)
    if alias is None:
        return ""
    ids = class_id(row[alias])
    mapped = f"; {map_class_ids(_INTENT_NAMES)}" if ids else ""
    return f" (rename it to 'intent'{mapped})"


_INTENT_NAMES = "intent names and its out-of-scope id, if any, to 'off_topic'"


def _set_property(
    target: dict[str, Any],
    intent: str,
    key: str,
    value: Any,
    number: int,
    given: dict[tuple[str, str], tuple[Any, int]],
) -> str | None:
    """Set an intent's ``key`` from row ``number``; the problem, if any."""
    if intent == OFF_TOPIC and key != "reply":
        return f"row {number}: off_topic rows take a 'reply' (the refusal), not a {shown(key)}"
    if key == "threshold":
        try:
            value = float(value)
        except (TypeError, ValueError):
            return (
                f"row {number}: threshold {shown(value)} of intent {shown(intent)} is not a "
                f"number{use_a_dot(value)}"
            )
    if not isinstance(value, str | float | int) or isinstance(value, bool):
        return f"row {number}: {shown(key)} of intent {shown(intent)} must be text"
    earlier = given.get((intent, key))
    if earlier is not None and earlier[0] != value:
        return (
            f"row {number}: intent {shown(intent)} has {key} {shown(value)} here but "
            f"{shown(earlier[0])} "
            f"on row {earlier[1]}"
        )
    given.setdefault((intent, key), (value, number))
    target[key] = value
    return None


#: A number written with one decimal comma (``0,85``), as Excel writes it in Spain or Germany.
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


def _threshold(value: Any, decimal_comma: bool) -> Any:
    """A threshold cell; with ``decimal_comma``, ``0,85`` read as ``0.85`` (one comma with
    digits on both sides: in a file separated by ``;`` or tab that is the only reading)."""
    if decimal_comma and isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value):
        return value.replace(",", ".")
    return value


def use_a_dot(value: Any) -> str:
    """For a number written with a decimal comma where it is not read so (a comma-separated
    CSV, JSONL, YAML): ``" (use a dot: 0.85)"``; else nothing."""
    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value.strip()):
        return f" (use a dot: {value.strip().replace(',', '.')})"
    return ""


def _rows_label(numbers: list[int], limit: int = 10) -> str:
    numbered = ", ".join(str(n) for n in numbers[:limit])
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return f"row{'s' if len(numbers) > 1 else ''} {numbered}{more}"
