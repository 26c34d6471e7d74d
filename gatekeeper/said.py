"""What the gate judges of a message: its customer turns, checked.

A message (a text, one chat message, or a whole chat) becomes the customer turns the gate
judges (:class:`~gatekeeper.conversation.Said`), or an :class:`~gatekeeper.errors.InputError`
when it is the caller's mistake: empty, longer than ``gate.max_message_chars``, a single message
that is not the customer's, a role no chat has, or text that is not valid Unicode. No model or
store call: :meth:`gatekeeper.Gatekeeper.validate` and every decision start here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from gatekeeper.conversation import (
    Said,
    attachments_only,
    content_text,
    customer_turns,
    has_attachments,
)
from gatekeeper.errors import EmptyMessageError, InputError, MessageTooLongError
from gatekeeper.types import Message, blank


def turns_said(message: Message, *, fixed_replies: Collection[str], limit: int) -> list[Said]:
    """The customer turns to judge; a last turn of attachments only has the text ``""``
    (nothing to score). ``fixed_replies``: the gate's own replies, which ask nothing;
    ``limit``: ``gate.max_message_chars`` (earlier turns are cut to it, the last refused)."""
    if isinstance(message, str):
        turns, attached = [Said(message)], False
    elif isinstance(message, Mapping):  # one chat message: the customer's, validated
        turns = [_single(message)]
        attached = attachments_only(message.get("content"))
    else:
        turns = customer_turns(message, fixed_replies)
        attached = turns[-1].text == ""
    last = turns[-1].text
    if blank(last) and not attached:
        raise EmptyMessageError("the message is empty")
    if len(last) > limit:
        raise MessageTooLongError(
            f"the message has {len(last)} characters; the limit is {limit} (gate.max_message_chars)"
        )
    kept = [said._replace(text=said.text[:limit]) for said in turns if not blank(said.text)]
    for number, said in enumerate(kept, start=1):
        _require_text(said.text, "the message" if number == len(kept) else "an earlier turn")
    return [*kept, turns[-1]] if attached else kept


def _single(message: Mapping[str, Any]) -> Said:
    """One chat message given alone: it must be the customer's and have a content."""
    if message.get("role") not in ("user", None):
        raise InputError(
            f"a single message must be the customer's (role 'user'), not "
            f"{message.get('role')!r}: pass the whole chat as a list to judge it"
        )
    if "content" not in message:
        keys = ", ".join(map(str, message)) or "none"
        raise InputError(f"a chat message needs a 'content' (its keys: {keys})")
    content = message.get("content")
    return Said(content_text(content), attached=has_attachments(content))


def _require_text(text: str, what: str) -> None:
    """Text the tokenizer can take; anything else is the client's mistake, not the model's."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} is not valid Unicode text (character {exc.start}: a lone surrogate)"
        ) from None
