"""Conversations, not single lines.

A request carries ``messages`` (OpenAI chat format). The gate judges the **last user message**,
but reads it in the light of the user turns before it:

1. The most recent user turns (up to ``CONTEXT_TURNS``) are each decided on their own text, in
   order, oldest first.
2. A turn decided ``off_topic`` is *rescued* as a **follow-up** when all of these hold:
   the user turn just before it ended up forwarded to the LLM (``llm``); the turn is short
   (at most ``gate.followup_max_words`` words: "yes", an order number, an e-mail address, a
   name); it does not lean off-topic (its nearest exemplar is not an off-topic one); and no
   off-topic exemplar is close to it (best off-topic similarity under
   ``gate.followup_off_topic_max``). A rescued turn is forwarded with the previous turn's
   intent and a reason that says so.
3. The last turn's decision is the conversation's decision.

So "NW-55120" or "yes" after "my parcel never arrived" reaches the LLM, while "who won the match
last night?" in the middle of the same chat is still refused: it is close to off-topic
exemplars. A follow-up after a refused turn is refused too, so a conversation that drifted off
topic does not come back in through "ok".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.decision import Decision, Route
from gatekeeper.errors import EmptyMessageError, InputError
from gatekeeper.rules import best_in_domain, best_off_topic
from gatekeeper.types import Neighbour

CONTEXT_TURNS = 4
_WORD = re.compile(r"\w+", re.UNICODE)


def content_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    raise InputError(
        f"message content must be a string or a list of parts, not {type(content).__name__}"
    )


def last_user_text(messages: Any) -> str:
    """The content of the last user message ('' when there is none, or no list of messages)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def user_turns(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The texts of the last :data:`CONTEXT_TURNS` user messages, oldest first."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        raise InputError("'messages' must be a list of chat messages")
    turns: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"messages[{index}] must be an object with 'role' and 'content'")
        if message.get("role") == "user":
            turns.append(content_text(message.get("content")))
    if not turns:
        raise EmptyMessageError("the conversation has no user message to judge")
    if not turns[-1].strip():
        raise EmptyMessageError("the last user message is empty")
    return turns[-CONTEXT_TURNS:]


def word_count(text: str) -> int:
    """Words in ``text``; a run of CJK characters counts one word per two characters."""
    count = 0
    for word in _WORD.findall(text):
        cjk = sum(1 for ch in word if "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af")
        count += max(1, (cjk + 1) // 2 + (1 if cjk < len(word) else 0)) if cjk else 1
    return count


def as_followup(
    decision: Decision,
    neighbours: Sequence[Neighbour],
    text: str,
    previous: Decision | None,
    *,
    max_words: int,
    off_topic_max: float,
) -> Decision:
    """``decision`` for a turn, rescued as a follow-up of ``previous`` when the rule allows."""
    if decision.route is not Route.OFF_TOPIC or previous is None or previous.route is not Route.LLM:
        return decision
    words = word_count(text)
    if words > max_words:
        return decision
    nearest_off = best_off_topic(neighbours)
    nearest_in = best_in_domain(neighbours)
    if nearest_off is not None and (
        nearest_off.similarity >= off_topic_max
        or nearest_in is None
        or nearest_off.similarity > nearest_in.similarity
    ):
        return decision
    return decision.model_copy(
        update={
            "route": Route.LLM,
            "intent": previous.intent,
            "reply": None,
            "reason": (
                f"follow-up ({words} words) in a conversation about {previous.intent!r}; "
                f"alone it would be refused ({decision.reason})"
            ),
        }
    )
