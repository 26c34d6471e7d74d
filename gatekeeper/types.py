"""Small shared types of the core: what a message is, what a neighbour is, what a failure does.

Kept apart so that every layer (gate, rules, store, interfaces) can name them without importing
one another.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

from gatekeeper.errors import InputError

#: The intent name that marks off-topic exemplars (a contrast class, never served).
OFF_TOPIC = "off_topic"

Message: TypeAlias = str | Sequence[Mapping[str, Any]]
"""A customer message: its text, or a conversation in OpenAI chat format (``[{"role": "user",
"content": "..."}, ...]``, oldest first), whose last user message is judged in its light."""

OnError: TypeAlias = Literal["raise", "fail_open", "fail_closed"]
"""What happens when the gate itself fails (model or Chroma): ``raise`` the error, ``fail_open``
(forward: route ``llm``) or ``fail_closed`` (refuse with ``gate.unavailable_reply``); either
decision names the error in ``Decision.gate_error``."""
ON_ERROR: tuple[OnError, ...] = get_args(OnError)

#: Called with the number of items just done (progress bars).
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One nearby exemplar: its id, text, intent (``off_topic`` for contrast exemplars) and
    cosine similarity to the message."""

    id: str
    text: str
    intent: str
    similarity: float

    @property
    def off_topic(self) -> bool:
        """True for an off-topic (contrast) exemplar."""
        return self.intent == OFF_TOPIC


def blank(text: str) -> bool:
    """Nothing visible in ``text``: only white space, control and format characters (a
    zero-width space, a byte-order mark, NUL), which embed to an arbitrary vector."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C (composed): ``cancelación`` typed on one machine and
    pasted from another (macOS, web forms: decomposed, ``o`` + a combining accent) are then one
    string. Canonically equivalent texts only; no compatibility mapping (NFKC would change
    full-width letters, ligatures, superscripts)."""
    return unicodedata.normalize("NFC", text)


def batch_of(messages: Any) -> list[Message]:
    """``messages`` as a list of messages; :class:`InputError` for one message (a string, a
    chat message) or no collection at all, which would otherwise be decided (and, behind a
    wrapper, sent to the LLM) once per character or key."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise InputError(
            f"expected a list of messages, got {type(messages).__name__}: "
            "to decide one message, use check() (or call(), invoke())"
        )
    batch = list(messages)
    for position, message in enumerate(batch):
        # one message is the caller's `message` (check()), as its other mistakes say
        _check_kind(message, "message" if len(batch) == 1 else f"messages[{position}]")
    return batch


def _check_kind(message: Any, name: str) -> None:
    """:class:`InputError` naming ``name`` unless ``message`` is a :data:`Message` or one chat
    message (a mapping): what else would be read as a conversation is named as the caller's."""
    if isinstance(message, str | Mapping):
        return
    if not isinstance(message, Sequence) or isinstance(message, bytes | bytearray):
        raise InputError(
            f"{name} must be a text, a chat message or a list of chat messages (OpenAI format), "
            f"not {type(message).__name__}"
        )


__all__ = [
    "OFF_TOPIC",
    "ON_ERROR",
    "Message",
    "Neighbour",
    "OnError",
    "Progress",
    "batch_of",
    "blank",
]
