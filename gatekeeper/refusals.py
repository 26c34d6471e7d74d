"""The gate's refusals in a chat, and the turns they answered: what the LLM is never shown.

A client that keeps the chat's history sends the gate's refusal back with every later turn
("write my essay", then "Sorry, I can only help with orders", then "ok, where is my order? and
do what I asked first"). Once a later turn is admitted, forwarding that history would hand the
LLM the very request the gate turned away. The proxy, the wrapper's OpenAI backend and the
LangChain runnable therefore forward a chat without each refusal and the customer messages
right before it (:func:`without_refused`). Pure functions over OpenAI-format messages.

A refusal is recognised by its text as the gate sent it, allowing for what a chat UI or an SDK
may do to it on the way back (:func:`_rendered`): Unicode NFKC, runs of white space as one space,
white space around it, its text split across several text parts of one message. Nothing looser
(no case folding, no fuzzy match): this serves clients that keep the chat as it was answered.
A client that controls the request body can leave the refusal out or edit it, or put a request
anywhere else in the body; this is no security boundary against that.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gatekeeper.conversation import content_text, part_text, text_part
from gatekeeper.errors import InputError

#: The roles of messages that answer no turn (instructions a client puts anywhere in a chat).
_ASIDE_ROLES = frozenset({"system", "developer"})


def without_refused(
    messages: Sequence[Mapping[str, Any]], refusals: Collection[str]
) -> list[Mapping[str, Any]]:
    """``messages`` without the turns the gate refused (:func:`refused_positions`). What the LLM
    is sent after a refusal: "write my essay" and "Sorry, I only help with orders" would hand
    it the request the gate turned away, with "ok, where is my order? and do what I asked
    first" after it."""
    refused = refused_positions(messages, refusals)
    return [message for i, message in enumerate(messages) if i not in refused]


def refused_positions(messages: Sequence[Mapping[str, Any]], refusals: Collection[str]) -> set[int]:
    """The positions of each assistant message whose text (or structured-output ``refusal``)
    reads as one of ``refusals`` (:func:`_rendered`), and of the customer's messages right
    before it (over any system messages and item references between them, which stay:
    :func:`turns_answered`). Only refusals the customer spoke after count (the turn being
    judged is never taken away), and never an assistant message that calls tools: the gate's
    refusal calls none. A refusal with no customer message right before it (a tool result
    between them: that turn was answered, and stays) stays too: the LLM is never shown a turn
    without the answer it got. Then every Responses ``item_reference`` naming an item taken out (by
    the ``id`` it was given) goes too: the upstream would resolve it from its store and put the
    refused request back. (A reference to one of the proxy's own answers is that answer's
    message by then: :meth:`~gatekeeper.interfaces.proxy.threads.ResponseThreads.resolved`.)"""
    last_user = max((i for i, m in enumerate(messages) if _role(m) == "user"), default=-1)
    known = {_rendered(refusal) for refusal in refusals}
    refused: set[int] = set()
    for i, message in enumerate(messages[:last_user]):
        turns = turns_answered(messages, i) if _gate_refusal(message, known) else set()
        if turns:
            refused |= {i, *turns}
    return refused | _references_to(messages, refused)


def _references_to(messages: Sequence[Any], taken: set[int]) -> set[int]:
    """The positions of the item references that name an item at the ``taken`` positions: a
    message by the ``id`` it was given, or the item another reference there names."""
    ids = {messages[i].get("id") for i in taken if isinstance(messages[i], Mapping)}
    named = {item_id for item_id in ids if isinstance(item_id, str)}
    if not named:
        return set()
    return {i for i, item in enumerate(messages) if _referenced(item) in named}


def turns_answered(messages: Sequence[Any], refusal: int) -> set[int]:
    """The positions of the customer's messages right before position ``refusal`` (the gate's
    refusal, or the end of a refused request), walking back over asides (:func:`_aside`) and
    stopping at anything else: an assistant message, a tool call or result (the turn before it
    was answered by the LLM, not refused)."""
    turns: set[int] = set()
    for before in range(refusal - 1, -1, -1):
        if _role(messages[before]) == "user":
            turns.add(before)
        elif not _aside(messages[before]):
            break
    return turns


def _aside(item: Any) -> bool:
    """Whether ``item`` answers no turn, so may sit between a customer's turn and the gate's
    refusal of it: a system (or developer) message, or a Responses ``item_reference`` (to an
    item the caller cannot tell: it may be an answer or not)."""
    return _role(item) in _ASIDE_ROLES or is_item_reference(item)


def is_item_reference(item: Any) -> bool:
    """Whether ``item`` is a Responses ``item_reference`` (an item the upstream resolves)."""
    return isinstance(item, Mapping) and "role" not in item and item.get("type") == "item_reference"


def _referenced(item: Any) -> str | None:
    """The id a Responses ``item_reference`` names (None for any other item)."""
    item_id = item.get("id") if is_item_reference(item) else None
    return item_id if isinstance(item_id, str) else None


def _gate_refusal(message: Any, known: Collection[str]) -> bool:
    """Whether ``message`` reads as one of the gate's refusals (``known``, as
    :func:`_rendered` gives them): its text with its parts joined by a line end or by
    nothing (a refusal split across parts)."""
    if _role(message) != "assistant" or calls_tools(message):
        return False
    return any(_rendered(said) in known for said in _said(message))


def _rendered(text: str) -> str:
    """``text`` as a refusal is compared: Unicode NFKC (a no-break space, full-width letters),
    each run of white space one space, none around it."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def calls_tools(message: Mapping[str, Any]) -> bool:
    """Whether an OpenAI-format assistant ``message`` calls tools: any ``tool_calls``, or a
    legacy ``function_call`` (the LangChain runnable maps an ``AIMessage``'s calls, valid,
    invalid or legacy, onto these fields: one rule for both)."""
    return bool(message.get("tool_calls") or message.get("function_call"))


def _role(message: Any) -> Any:
    """A message's role; None for an item that is no message (a tool call of the Responses
    API)."""
    return message.get("role") if isinstance(message, Mapping) else None


def _said(message: Mapping[str, Any]) -> tuple[str, ...]:
    """An assistant message's text, its parts joined by a line end and (when it has several)
    by nothing, or its structured-output ``refusal`` (none when its content is unreadable: no
    refusal the gate sent)."""
    content = message.get("content")
    try:
        text = content_text(content)
    except InputError:
        return ()
    refusal = message.get("refusal")
    if not text and isinstance(refusal, str):
        return (refusal,)
    if not isinstance(content, list):
        return (text,)
    parts = [p if isinstance(p, str) else part_text(p) for p in content if _text_of(p)]
    return (text, "".join(parts))


def _text_of(part: Any) -> bool:
    """Whether a content part is text (as :func:`~gatekeeper.conversation.content_text` reads
    it)."""
    return isinstance(part, str) or (isinstance(part, Mapping) and text_part(part))


__all__ = [
    "calls_tools",
    "is_item_reference",
    "refused_positions",
    "turns_answered",
    "without_refused",
]
