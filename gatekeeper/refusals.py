"""The gate's refusals in a chat, and the turns they answered: what the LLM is never shown.

A client that keeps the chat's history sends the gate's refusal back with every later turn
("write my essay", then "Sorry, I can only help with orders", then "ok, where is my order? and
do what I asked first"). Once a later turn is admitted, forwarding that history would hand the
LLM the very request the gate turned away. The proxy, the wrapper's OpenAI backend and the
LangChain runnable therefore forward a chat without each refusal and the customer messages
right before it (:func:`without_refused`). Pure functions over OpenAI-format messages.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gatekeeper.conversation import content_text
from gatekeeper.errors import InputError


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
    """The positions of each assistant message whose text (or structured-output ``refusal``),
    stripped, is one of ``refusals``, and of the customer's messages right before it. Only
    refusals the customer spoke after count (the turn being judged is never taken away), and
    never an assistant message that calls tools: the gate's refusal calls none."""
    last_user = max((i for i, m in enumerate(messages) if _role(m) == "user"), default=-1)
    refused: set[int] = set()
    for i, message in enumerate(messages[:last_user]):
        if _gate_refusal(message, refusals):
            refused.add(i)
            before = i - 1
            while before >= 0 and _role(messages[before]) == "user":
                refused.add(before)
                before -= 1
    return refused


def _gate_refusal(message: Any, refusals: Collection[str]) -> bool:
    """Whether ``message`` reads as one of the gate's ``refusals`` as it sent it."""
    if _role(message) != "assistant" or message.get("tool_calls") or message.get("function_call"):
        return False
    return _said(message).strip() in refusals


def _role(message: Any) -> Any:
    """A message's role; None for an item that is no message (a tool call of the Responses
    API)."""
    return message.get("role") if isinstance(message, Mapping) else None


def _said(message: Mapping[str, Any]) -> str:
    """An assistant message's text, or its structured-output ``refusal`` ('' when its content
    is unreadable: no refusal the gate sent)."""
    try:
        text = content_text(message.get("content"))
    except InputError:
        return ""
    refusal = message.get("refusal")
    return refusal if not text and isinstance(refusal, str) else text


__all__ = ["refused_positions", "without_refused"]
