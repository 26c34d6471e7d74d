"""Labelled datasets: the customer messages an eval judges, each with the answer it should get.

A dataset is a JSONL or CSV file of rows with ``text``, ``label`` (``in_domain`` | ``off_topic``)
and an optional ``intent``. A multi-turn row carries ``messages`` (OpenAI chat format; in CSV, a
JSON string) instead of ``text``: the last user message is judged, earlier user turns are its
context; its optional ``labels`` (in CSV, also a JSON string) gives one label per customer
turn, oldest first. An intent ``unsupported:<name>`` marks an in-domain question of an intent
the catalog lacks (on-topic for the business, so it should still reach the LLM).

Rows with neither a text nor messages (blank lines of a spreadsheet, a benchmark's few empty
texts) are skipped and counted in :attr:`Dataset.skipped`, never fatal. Every other problem is a
:class:`~gatekeeper.errors.DatasetError` naming the file and the line.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gatekeeper._rows import DuplicateKeyError, loads_json, read_csv, read_jsonl
from gatekeeper.catalog_review import looks_like_off_topic
from gatekeeper.conversation import chat_messages, last_user_text
from gatekeeper.errors import DatasetError, InputError
from gatekeeper.paths import why_not_a_file
from gatekeeper.types import OFF_TOPIC, blank

Label = Literal["in_domain", "off_topic"]
LABELS: tuple[Label, ...] = ("in_domain", "off_topic")
UNSUPPORTED_PREFIX = "unsupported:"
ChatMessages = tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled customer message (or conversation) and where it came from."""

    message: str | ChatMessages
    label: Label
    intent: str | None
    source: str
    line: int
    turn: int | None = None  # with per-turn ``labels``: which customer turn (1-based) is judged
    turns: int | None = None  # ... of how many in the chat

    @property
    def in_domain(self) -> bool:
        return self.label == "in_domain"

    @property
    def multi_turn(self) -> bool:
        return not isinstance(self.message, str)

    @property
    def unsupported(self) -> bool:
        """An on-topic question of an intent the catalog has no exemplars for."""
        return self.intent is not None and self.intent.startswith(UNSUPPORTED_PREFIX)

    @property
    def text(self) -> str:
        """The text that is judged: the message, or the conversation's last user turn."""
        if isinstance(self.message, str):
            return self.message
        return last_user_text(self.message)

    @property
    def where(self) -> str:
        turn = f", turn {self.turn}/{self.turns}" if self.turn is not None else ""
        return f"{located(self.source, self.line)}{turn}"

    def as_input(self) -> str | list[dict[str, Any]]:
        """The message in the form the gate takes."""
        if isinstance(self.message, str):
            return self.message
        return [dict(m) for m in self.message]


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


def located(source: str, line: int) -> str:
    """``"FILE, line N"``; ``"FILE, row N"`` for a CSV file, whose N is the spreadsheet's row
    (a quoted cell may span lines)."""
    return f"{source}, {'row' if source.lower().endswith('.csv') else 'line'} {line}"


def load_dataset(
    path: Path | str, *, skip_invalid: bool = False, max_chars: int | None = None
) -> Dataset:
    """Load one labelled dataset (JSONL or CSV); raise :class:`DatasetError` on any problem.

    An empty row (no text, no messages) is always left out and recorded in
    :attr:`Dataset.skipped`. With ``skip_invalid``, a malformed row is left out and its problem
    recorded there too, instead of raising (a JSONL line that is not a JSON object included);
    file-level problems still raise. With ``max_chars`` (``gate.max_message_chars``), a row
    whose judged message is longer is malformed too: the gate would refuse to judge it."""
    path = Path(path)
    if problem := why_not_a_file(path):
        raise DatasetError(f"dataset {path} {problem}")
    suffix = path.suffix.lower()
    skipped: list[str] = []
    problems: list[str] = []  # malformed rows: all reported at once, or skipped
    if suffix in {".jsonl", ".ndjson"}:
        rows = read_jsonl(path, DatasetError, "dataset", problems.append)
    elif suffix == ".csv":
        rows = read_csv(
            path,
            DatasetError,
            "dataset",
            _check_dataset_header,
            lambda n, p: problems.append(f"dataset {located(str(path), n)} {p}"),
        )
    else:
        raise DatasetError(
            f"dataset {path}: unknown format {suffix!r} (use .jsonl or .csv){_format_hint(suffix)}"
        )
    examples: list[Example] = []
    keys: set[str] = set()
    for line, row in rows:
        keys.update(row)
        if _empty(row):
            skipped.append(f"dataset {located(str(path), line)}: empty row (no text), skipped")
            continue
        try:
            examples += _within(parse_rows(row, source=str(path), line=line), max_chars)
        except DatasetError as exc:
            problems.append(str(exc))
    if problems and not skip_invalid:
        raise DatasetError(_all_problems(path, problems))
    skipped += problems
    if not examples:
        raise DatasetError(f"dataset {path} has no rows" + (" left" if skipped else ""))
    return Dataset(
        examples=tuple(examples),
        sources=(str(path),),
        skipped=tuple(skipped),
        warnings=(*_misspelt_keys(keys, path), *_repeats(examples, path)),
    )


KEYS = ("text", "label", "intent", "messages", "labels")

_FORMAT_HINTS = {
    ".tsv": "; a tab-separated file: save it as CSV (comma-separated, with a header row)",
    ".txt": "; a text file has no labels: write rows of text and label as .jsonl or .csv",
    ".json": (
        '; a JSON file: write one row object per line ({"text": ..., "label": ...}) as .jsonl'
    ),
}


def _format_hint(suffix: str) -> str:
    return _FORMAT_HINTS.get(suffix, "")


#: Malformed rows a dataset error lists (the rest are counted).
LISTED_PROBLEMS = 10


def _all_problems(path: Path, problems: list[str]) -> str:
    """One error for every malformed row, so a file is fixed in one pass, not one row a run."""
    if len(problems) == 1:
        return problems[0]
    listed = "\n".join(f"  {p}" for p in problems[:LISTED_PROBLEMS])
    more = len(problems) - LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return (
        f"dataset {path}: {len(problems)} malformed rows (fix them, or leave them out with "
        f"--skip-invalid):\n{listed}{tail}"
    )


def _misspelt_keys(keys: set[str], path: Path) -> tuple[str, ...]:
    """A warning for each unknown key close to a known one (``lable``, ``intnet``): its values
    are ignored, and a misspelt ``intent`` loses the row's intent without a word. Other extra
    keys (ids, sources, notes) are fine."""
    warnings = []
    for key in sorted(k for k in keys if isinstance(k, str) and k not in KEYS):
        close = difflib.get_close_matches(key.casefold(), KEYS, n=1, cutoff=0.75)
        if close:
            warnings.append(f"dataset {path}: ignored key {key!r} (did you mean {close[0]!r}?)")
    return tuple(warnings)


def _repeats(examples: list[Example], path: Path) -> list[str]:
    """Warnings for rows that repeat an earlier one (each copy is counted, so a row pasted
    twice weighs twice), and for a message labelled both ways (one label is wrong)."""
    first: dict[str, Example] = {}
    repeated: list[tuple[Example, Example]] = []
    conflicting: list[tuple[Example, Example]] = []
    for example in examples:
        if example.turn is not None:  # chats share their opening turns: not a repeat
            continue
        seen = first.setdefault(_message_key(example), example)
        if seen is example:
            continue
        (repeated if seen.label == example.label else conflicting).append((example, seen))
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
    if isinstance(example.message, str):
        return example.message.strip()
    return json.dumps([dict(m) for m in example.message], ensure_ascii=False, sort_keys=True)


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


def parse_rows(row: Mapping[str, Any], *, source: str, line: int) -> list[Example]:
    """One dataset row as its :class:`Example` s: one, or with per-turn ``labels`` one per
    customer turn (the chat up to that turn, labelled with that turn's label). A row with
    ``labels`` needs no ``label``: it is the last turn's. A text row is one customer turn: its
    ``labels``, if given, is its ``label`` alone."""
    where = f"dataset {located(source, line)}"
    labels = _labels(row.get("labels"), where)
    if not _present(row.get("label")) and labels:
        row = {**row, "label": labels[-1]}  # a chat's label is its last turn's
    example = parse_row(row, source=source, line=line)
    if labels is None:
        return [example]
    if isinstance(example.message, str):
        _check_text_labels(labels, example.label, where)
        return [example]
    return _per_turn(example, example.message, labels, where)


def _labels(value: Any, where: str) -> list[Any] | None:
    """A row's per-turn ``labels``: None when absent (or an empty CSV cell); a string (a CSV
    cell) is the list as JSON text, as a ``messages`` cell is."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = loads_json(value)
        except (json.JSONDecodeError, DuplicateKeyError, RecursionError) as exc:
            raise DatasetError(
                f"{where}: {_LABELS_SHAPE}, got {_shown(value)}, which is not JSON ({exc})"
            ) from exc
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {_LABELS_SHAPE}, got {_shown(value)}")
    return value


_LABELS_SHAPE = (
    "'labels' must be a list of in_domain/off_topic, one per user turn (in CSV, the list as "
    'JSON text: ["in_domain","off_topic"])'
)


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_text_labels(labels: list[Any], label: Label, where: str) -> None:
    """A text row's ``labels`` must be its ``label`` alone: anything else is a mistake (a
    chat's labels on a text row, or a label changed in one column only)."""
    if len(labels) != 1:
        raise DatasetError(
            f"{where}: a 'text' row is one customer turn, so 'labels' (if given) has one "
            f"entry, got {len(labels)} (per-turn labels need 'messages')"
        )
    if labels[0] != label:
        raise DatasetError(
            f"{where}: 'labels' {_shown(labels)} disagrees with its 'label' {label!r} "
            "(which one is meant?)"
        )


def _per_turn(
    example: Example, messages: ChatMessages, labels: list[Any], where: str
) -> list[Example]:
    """A chat's examples, one per customer turn, each labelled with its entry of ``labels``."""
    user_at = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if len(labels) != len(user_at):
        raise DatasetError(
            f"{where}: 'labels' must list one label per user turn ({len(user_at)}), "
            f"got {_shown(labels)}"
        )
    if labels[-1] != example.label:
        raise DatasetError(f"{where}: 'label' must equal the last of 'labels'")
    examples = []
    for turn, (at, label) in enumerate(zip(user_at, labels, strict=True), start=1):
        if label not in LABELS:
            raise DatasetError(f"{where}: labels[{turn - 1}] must be in_domain or off_topic")
        examples.append(
            Example(
                message=messages[: at + 1],
                label=label,
                intent=example.intent if label == "in_domain" else None,
                source=example.source,
                line=example.line,
                turn=turn,
                turns=len(user_at),
            )
        )
    return examples


def parse_row(row: Mapping[str, Any], *, source: str, line: int) -> Example:
    """One dataset row as an :class:`Example`; ``source`` and ``line`` go into errors."""
    where = f"dataset {located(source, line)}"
    label = row.get("label")
    if label not in LABELS:
        hint = _label_hint(label)
        raise DatasetError(
            f"{where}: 'label' must be 'in_domain' or 'off_topic', not {label!r}{hint}"
        )
    intent = row.get("intent")
    if intent is not None and not isinstance(intent, str):
        raise DatasetError(f"{where}: 'intent' must be a string, not {type(intent).__name__}")
    intent = (intent.strip() or None) if isinstance(intent, str) else None
    if label == "in_domain" and intent is not None and _off_topic_intent(intent):
        raise DatasetError(
            f"{where}: the intent {intent!r} marks an off-topic message, but the label is "
            "'in_domain' (it would count as a customer wrongly refused): label the row "
            "'off_topic', or give the in-domain intent"
        )
    message = _message(row, where)
    return Example(message=message, label=label, intent=intent, source=source, line=line)


#: Label spellings that mean one of :data:`LABELS` (compared on letters only, case aside).
_LABEL_SPELLINGS = {
    "indomain": "in_domain",
    "inscope": "in_domain",
    "supported": "in_domain",
    "offtopic": "off_topic",
    "oos": "off_topic",
    "ood": "off_topic",
    "outofscope": "off_topic",
    "outofdomain": "off_topic",
}


def _label_hint(label: Any) -> str:
    """A did-you-mean for a label spelt another way (``OOS``, ``In_Domain``); a note for a
    class id (benchmarks ship integer labels, which need mapping to the two words)."""
    number = isinstance(label, int | float) and not isinstance(label, bool)
    if number or (isinstance(label, str) and label.strip().isdigit()):  # a CSV cell: "9"
        return (
            " (a class id: map the benchmark's ids to the two words, e.g. its out-of-scope id "
            "to 'off_topic' and the rest to 'in_domain' with the intent name)"
        )
    if isinstance(label, str):
        meant = _LABEL_SPELLINGS.get("".join(ch for ch in label.casefold() if ch.isalpha()))
        if meant:
            return f" (did you mean {meant!r}?)"
    return ""


def _off_topic_intent(intent: str) -> bool:
    """The off-topic marker, or a spelling of it (``oos``, ``out_of_scope``), as an intent."""
    return intent == OFF_TOPIC or looks_like_off_topic(intent)


def _message(row: Mapping[str, Any], where: str) -> str | ChatMessages:
    text, messages = row.get("text"), row.get("messages")
    if _present(text) and _present(messages):
        raise DatasetError(f"{where}: give either 'text' or 'messages', not both")
    if _present(messages):
        return _chat(messages, where)
    if text is not None and not isinstance(text, str):
        raise DatasetError(
            f"{where}: 'text' must be a string, not {type(text).__name__} (quote it in JSON)"
        )
    if not isinstance(text, str) or blank(text):
        raise DatasetError(f"{where}: 'text' is missing or empty (or give 'messages')")
    return text


def _empty(row: Mapping[str, Any]) -> bool:
    """A row without anything to judge: no text (or only white space and invisible
    characters, such as a zero-width space) and no messages."""
    text, messages = row.get("text"), row.get("messages")
    blank_text = text is None or (isinstance(text, str) and blank(text))
    return blank_text and not _present(messages)


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _chat(messages: Any, where: str) -> ChatMessages:
    if isinstance(messages, str):  # CSV cells carry the conversation as JSON
        try:
            messages = loads_json(messages)
        except (json.JSONDecodeError, DuplicateKeyError) as exc:
            raise DatasetError(
                f"{where}: 'messages' must be a list of chat messages (in CSV, the list as "
                f"JSON text), got a string that is not that: {exc}"
            ) from exc
    try:
        messages = chat_messages(messages)
    except InputError as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    if blank(last_user_text(messages)):
        raise DatasetError(f"{where}: the conversation has no non-empty last user message")
    return tuple(messages)


def _check_dataset_header(header: list[str]) -> str | None:
    if "label" not in header or not ({"text", "messages"} & set(header)):
        return "the CSV header needs 'label' and 'text' (or 'messages') columns"
    return None


def example_row(example: Example) -> dict[str, Any]:
    """An example back as a dataset row (for writing JSONL)."""
    row: dict[str, Any] = {}
    if isinstance(example.message, str):
        row["text"] = example.message
    else:
        row["messages"] = [dict(m) for m in example.message]
    row["label"] = example.label
    if example.intent is not None:
        row["intent"] = example.intent
    return row


def write_jsonl(examples: Iterable[Example], path: Path) -> int:
    """Write ``examples`` as a JSONL dataset; return how many rows were written."""
    lines = [json.dumps(example_row(e), ensure_ascii=False) for e in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
