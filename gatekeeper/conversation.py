"""Conversations, not single lines.

A request carries ``messages`` (OpenAI chat format). The gate judges the **last user message**,
but reads it in the light of the user turns before it:

1. The most recent user turns (up to ``CONTEXT_TURNS``) are each judged and routed on their own
   text (:func:`gatekeeper.decision.route_turn`), in order, oldest first.
2. A turn decided ``off_topic`` is *rescued* as a **follow-up** when all of these hold:
   the user turn just before it ended up forwarded to the LLM (``llm``); the turn is short
   (at most ``gate.followup_max_words`` words: "yes", an order number, an e-mail address, a
   name); it does not lean off-topic (its nearest exemplar is not an off-topic one); and no
   off-topic exemplar is close to it (best off-topic similarity under
   ``gate.followup_off_topic_max``). A rescued turn is forwarded with the previous turn's
   intent, flagged ``followup``.
3. The last turn's route is the conversation's.

:func:`route_conversation` is that rule, pure; the live gate and the eval's threshold sweep both
call it. :func:`chat_messages` is the one validator of chat messages (proxy, datasets, CLI).

So "NW-55120" or "yes" after "my parcel never arrived" reaches the LLM, while "who won the match
last night?" in the middle of the same chat is still refused: it is close to off-topic
exemplars. A follow-up after a refused turn is refused too, so a conversation that drifted off
topic does not come back in through "ok".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.catalog import Catalog
from gatekeeper.decision import Judged, Route, Routed, Thresholds, route_turn
from gatekeeper.errors import EmptyMessageError, InputError

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


def chat_messages(messages: Any) -> list[Mapping[str, Any]]:
    """``messages`` checked to be a non-empty list of ``{"role": str, "content": ...}`` objects
    with a readable content; :class:`InputError` naming the first bad message otherwise."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise InputError("'messages' must be a non-empty list of chat messages")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InputError(f"messages[{index}] must be an object with a string 'role'")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InputError(
                f"messages[{index}].content must be a string or a list of content parts"
            )
    return list(messages)


def last_user_text(messages: Any) -> str:
    """The content of the last user message ('' when there is none, or no list of messages)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def user_turns(messages: Any) -> list[str]:
    """The texts of the last :data:`CONTEXT_TURNS` user messages, oldest first."""
    if isinstance(messages, Sequence) and not isinstance(messages, str | bytes) and not messages:
        raise EmptyMessageError("the conversation has no user message to judge")
    turns = [
        content_text(m.get("content")) for m in chat_messages(messages) if m.get("role") == "user"
    ]
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


@dataclass(frozen=True, slots=True)
class Turn:
    """One customer turn of a conversation, judged alone (threshold-independent)."""

    text: str
    judged: Judged
    words: int


@dataclass(frozen=True)
class FollowupPolicy:
    """When a short turn in an in-domain conversation is forwarded although it scores low."""

    max_words: int = 12
    off_topic_max: float = 0.55


def rescue_followup(
    routed: Routed, turn: Turn, previous: Routed | None, policy: FollowupPolicy
) -> Routed:
    """``routed`` (the turn alone), forwarded as a follow-up of ``previous`` when the rule
    allows (see the module docstring)."""
    if routed.route is not Route.OFF_TOPIC or previous is None or previous.route is not Route.LLM:
        return routed
    if turn.words > policy.max_words:
        return routed
    judged = turn.judged
    if judged.nearest_off is not None and (
        judged.nearest_off >= policy.off_topic_max or judged.leans_off_topic
    ):
        return routed
    return Routed(
        route=Route.LLM,
        intent=previous.intent,
        threshold=routed.threshold,
        reason=(
            f"follow-up ({turn.words} words) in a conversation about {previous.intent!r}; "
            f"alone it would be refused ({routed.reason})"
        ),
        followup=True,
    )


def route_conversation(
    turns: Sequence[Turn], *, catalog: Catalog, thresholds: Thresholds, policy: FollowupPolicy
) -> Routed:
    """Route a conversation's last turn in the light of the turns before it. Pure."""
    previous: Routed | None = None
    for turn in turns:
        alone = route_turn(turn.judged, catalog=catalog, thresholds=thresholds)
        previous = rescue_followup(alone, turn, previous, policy)
    if previous is None:
        raise EmptyMessageError("the conversation has no user message to judge")
    return previous
