"""One row of a labelled dataset as the example(s) it holds.

A row has ``text``, ``label`` (``in_domain`` | ``off_topic``, case and surrounding white space
aside, as header names are matched) and an optional ``intent``, or
``messages`` (a chat; in CSV, a JSON string) instead of ``text``, with optional per-turn
``labels`` and ``intents``. A chat's ``intent`` is its last customer turn's (the turn judged);
with ``labels`` each earlier turn has the intent ``intents`` gives it, or none.
:func:`parse_rows` turns one row into its :class:`Example` s or raises a
:class:`~gatekeeper.errors.DatasetError` naming the file and line; :func:`empty_row` and
:func:`stray_values` tell a row to skip from a malformed one.

A customer turn is judged as the live gate judges it: a turn of attachments only (a photo) has
nothing to score and follows the chat (forwarded as a follow-up, or as a first turn), so it is
a turn like any other; a turn with neither text nor attachments is an *empty turn*: the gate
leaves it out of the chat's context and answers a chat ending in one with 400 (an empty
message), so it is skipped and counted, as an empty row is, and the chat's other turns are
judged.

An intent is taken in NFC (:func:`~gatekeeper.types.nfc`), as the catalog takes its names, so
``cancelación`` pasted decomposed names the catalog's intent. The message itself is kept as
written: it stands for what a customer sends, and the gate judges (and the proxy forwards) a
customer's text as sent; repeats and leakage are found regardless of the normal form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gatekeeper._rows import (
    DuplicateKeyError,
    class_id,
    loads_json,
    map_class_ids,
    near_key,
    shown,
    unknown_keys,
)
from gatekeeper.catalog_review import looks_like_off_topic
from gatekeeper.conversation import attachments_only, chat_messages, content_text, last_user_text
from gatekeeper.errors import DatasetError, InputError
from gatekeeper.types import OFF_TOPIC, blank, nfc

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


def located(source: str, line: int) -> str:
    """``"FILE, line N"``; ``"FILE, row N"`` for a CSV file, whose N is the spreadsheet's row
    (a quoted cell may span lines)."""
    return f"{source}, {'row' if source.lower().endswith('.csv') else 'line'} {line}"


KEYS = ("text", "label", "intent", "messages", "labels", "intents")


#: How close an unknown key must be to a known one to be called a misspelling of it.
NEAR = 0.75


def keys_named(keys: list[str]) -> str:
    """Unknown keys of a dataset row, each with a did-you-mean when close to a known one."""
    return unknown_keys(keys, KEYS, NEAR)


def stray_values(row: Mapping[str, Any], where: str) -> str | None:
    """The problem of a row with no ``text`` or ``messages`` key but values under unknown keys
    (its message under ``utterance``, or ``Text``): malformed, not an empty row to skip."""
    if "text" in row or "messages" in row:
        return None
    stray = [k for k in row if k not in KEYS and _present(_stripped(row[k]))]
    if not stray:
        return None
    values = "a value under the unknown key" if len(stray) == 1 else "values under the unknown keys"
    return (
        f"{where}: no 'text' (or 'messages'), but {values} {keys_named(stray)}: rename the key "
        "that holds the message to 'text'"
    )


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def parse_rows(
    row: Mapping[str, Any], *, source: str, line: int
) -> tuple[list[Example], list[str]]:
    """One dataset row as its :class:`Example` s: one, or with per-turn ``labels`` one per
    customer turn (the chat up to that turn, labelled with that turn's label and intent); and
    the row's empty turns, each skipped with why (file, line and turn). A row with ``labels``
    needs no ``label``: it is the last turn's. A text row is one customer turn: its
    ``labels``, if given, is its ``label`` alone."""
    where = f"dataset {located(source, line)}"
    labels = _labels(row.get("labels"), where)
    intents = _intents(row.get("intents"), where)
    if not _present(row.get("label")) and labels:
        row = {**row, "label": labels[-1]}  # a chat's label is its last turn's
    example = parse_row(row, source=source, line=line)
    if intents is not None and (labels is None or isinstance(example.message, str)):
        raise DatasetError(
            f"{where}: 'intents' gives one intent per customer turn of a chat, beside its "
            "'labels' (one per turn); this row has "
            + ("no 'messages'" if isinstance(example.message, str) else "no 'labels'")
        )
    if isinstance(example.message, str):
        if labels is not None:
            _check_text_labels(labels, example.label, where)
        return [example], []
    if labels is None:  # the last customer turn alone is judged
        last = next(m for m in reversed(example.message) if m.get("role") == "user")
        if _empty_turn(last):
            return [], [f"{where}: empty row (its last customer turn has no text), skipped"]
        return [example], []
    return _per_turn(example, example.message, labels, intents, row, where)


def _empty_turn(message: Mapping[str, Any]) -> bool:
    """A customer turn with nothing for the gate to judge: no text (white space and invisible
    characters aside) and no attachments. A turn of attachments only is no empty turn."""
    content = message.get("content")
    return blank(content_text(content)) and not attachments_only(content)


def _labels(value: Any, where: str) -> list[Label] | None:
    """A row's per-turn ``labels``: None when absent (or an empty CSV cell); a string (a CSV
    cell) is the list as JSON text, as a ``messages`` cell is. Each entry is a label as
    :func:`label_value` reads it; any other is an error showing it (with a did-you-mean)."""
    value = _json_list(value, _LABELS_SHAPE, where)
    if value is None:
        return None
    labels: list[Label] = []
    for index, written in enumerate(value):
        label = label_value(written)
        if label not in LABELS:
            raise DatasetError(
                f"{where}: labels[{index}] (customer turn {index + 1}) must be 'in_domain' or "
                f"'off_topic', not {shown(written)}{_label_hint(written)}"
            )
        labels.append(label)
    return labels


def _json_list(value: Any, shape: str, where: str) -> list[Any] | None:
    """A list-valued key of a row: None when absent (or an empty CSV cell); a string (a CSV
    cell) is read as JSON text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = loads_json(value)
        except (json.JSONDecodeError, DuplicateKeyError, RecursionError) as exc:
            raise DatasetError(
                f"{where}: {shape}, got {shown(value)}, which is not JSON ({exc})"
            ) from exc
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {shape}, got {shown(value)}")
    return value


def _intents(value: Any, where: str) -> list[str | None] | None:
    """A chat row's per-turn ``intents``: None when absent; each entry an intent name (in NFC,
    as the catalog reads names) or null (no intent for that turn)."""
    value = _json_list(value, _INTENTS_SHAPE, where)
    if value is None:
        return None
    intents: list[str | None] = []
    for index, name in enumerate(value):
        if name is not None and not isinstance(name, str):
            raise DatasetError(
                f"{where}: intents[{index}] must be an intent name or null, not {shown(name)}"
            )
        intents.append((nfc(name.strip()) or None) if isinstance(name, str) else None)
    return intents


def label_value(value: Any) -> Any:
    """A label as matched, as header names are: case and surrounding white space do not count
    (``Off_Topic``, ``"in_domain "``); anything else (``in-domain``, ``OOS``) is not a label."""
    return value.strip().casefold() if isinstance(value, str) else value


_LABELS_SHAPE = (
    "'labels' must be a list of in_domain/off_topic, one per user turn (in CSV, the list as "
    'JSON text: ["in_domain","off_topic"])'
)
_INTENTS_SHAPE = (
    "'intents' must be a list of intent names (or null), one per user turn (in CSV, the list "
    'as JSON text: ["order_status",null])'
)


def _check_text_labels(labels: list[Label], label: Label, where: str) -> None:
    """A text row's ``labels`` must be its ``label`` alone: anything else is a mistake (a
    chat's labels on a text row, or a label changed in one column only)."""
    if len(labels) != 1:
        raise DatasetError(
            f"{where}: a 'text' row is one customer turn, so 'labels' (if given) has one "
            f"entry, got {len(labels)} (per-turn labels need 'messages')"
        )
    if labels[0] != label:
        raise DatasetError(
            f"{where}: 'labels' {shown(labels)} disagrees with its 'label' {shown(label)} "
            "(which one is meant?)"
        )


def _per_turn(
    example: Example,
    messages: ChatMessages,
    labels: list[Label],
    intents: list[str | None] | None,
    row: Mapping[str, Any],
    where: str,
) -> tuple[list[Example], list[str]]:
    """A chat's examples, one per customer turn, each labelled with its entry of ``labels``
    and of ``intents`` (the row's ``intent`` is the last turn's); and its empty turns, skipped.
    """
    user_at = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if len(labels) != len(user_at):
        raise DatasetError(
            f"{where}: 'labels' must list one label per user turn ({len(user_at)}), "
            f"got {shown(labels)}"
        )
    if labels[-1] != example.label:
        raise DatasetError(
            f"{where}: 'label' {shown(row.get('label'))} disagrees with the last of 'labels' "
            f"{shown(labels[-1])} (labels {shown(labels)}): which one is meant?"
        )
    turn_intents = _turn_intents(example, intents, len(user_at), where)
    examples, skipped = [], []
    for turn, (at, label, intent) in enumerate(
        zip(user_at, labels, turn_intents, strict=True), start=1
    ):
        if _empty_turn(messages[at]):
            skipped.append(
                f"dataset {located(example.source, example.line)}, turn {turn}/{len(user_at)}: "
                "empty customer turn (no text, no attachments), skipped: the gate leaves it "
                "out of the chat, and the chat's other turns are judged"
            )
            continue
        if label == "in_domain" and intent is not None and _off_topic_intent(intent):
            raise DatasetError(
                f"{where}: intents[{turn - 1}] {shown(intent)} marks an off-topic message, but "
                f"labels[{turn - 1}] is 'in_domain' (it would count as a customer wrongly "
                "refused)"
            )
        examples.append(
            Example(
                message=messages[: at + 1],
                label=label,
                intent=intent if label == "in_domain" else None,
                source=example.source,
                line=example.line,
                turn=turn,
                turns=len(user_at),
            )
        )
    return examples, skipped


def _turn_intents(
    example: Example, intents: list[str | None] | None, turns: int, where: str
) -> list[str | None]:
    """Each customer turn's intent: ``intents`` when given (its last entry and the row's
    ``intent`` must agree), else the row's ``intent`` for the last turn (the one it describes)
    and none for the others: a chat's intent given to every turn counted "thanks" and names as
    that intent's messages."""
    if intents is None:
        return [*([None] * (turns - 1)), example.intent]
    if len(intents) != turns:
        raise DatasetError(
            f"{where}: 'intents' must list one intent (or null) per user turn ({turns}), "
            f"got {shown(intents)}"
        )
    if example.intent is not None and intents[-1] != example.intent:
        raise DatasetError(
            f"{where}: 'intent' {shown(example.intent)} disagrees with the last of 'intents' "
            f"{shown(intents[-1])} (intents {shown(intents)}): which one is meant?"
        )
    return intents


def parse_row(row: Mapping[str, Any], *, source: str, line: int) -> Example:
    """One dataset row as an :class:`Example`; ``source`` and ``line`` go into errors."""
    where = f"dataset {located(source, line)}"
    written = row.get("label")
    if written is None:
        raise DatasetError(f"{where}: missing 'label' (in_domain or off_topic){_meant(row)}")
    label = label_value(written)
    if label not in LABELS:
        hint = _label_hint(written)
        raise DatasetError(
            f"{where}: 'label' must be 'in_domain' or 'off_topic', not {shown(written)}{hint}"
        )
    intent = row.get("intent")
    if intent is not None and not isinstance(intent, str):
        raise DatasetError(f"{where}: 'intent' must be a string, not {type(intent).__name__}")
    intent = (nfc(intent.strip()) or None) if isinstance(intent, str) else None
    if label == "in_domain" and intent is not None and _off_topic_intent(intent):
        raise DatasetError(
            f"{where}: the intent {shown(intent)} marks an off-topic message, but the label is "
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
    if class_id(label):  # 9, or a CSV cell "9"
        words = (
            "the two words, e.g. its out-of-scope id to 'off_topic' and the rest to "
            "'in_domain' with the intent name"
        )
        return f" ({map_class_ids(words)})"
    if isinstance(label, str):
        meant = _LABEL_SPELLINGS.get("".join(ch for ch in label.casefold() if ch.isalpha()))
        if meant:
            return f" (did you mean {meant!r}?)"
    return ""


def _meant(row: Mapping[str, Any]) -> str:
    """For a row without ``label``: its unknown keys that look like ``label`` (``Label``)."""
    near = [k for k in row if k not in KEYS and near_key(k, ("label",), NEAR)]
    return f"; the row has {keys_named(near)}" if near else ""


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


def empty_row(row: Mapping[str, Any]) -> bool:
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
    if not any(m.get("role") == "user" for m in messages):
        raise DatasetError(f"{where}: the conversation has no user message to judge")
    return tuple(messages)


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
