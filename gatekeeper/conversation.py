"""Conversations, not single lines: the conversation model.

A request carries ``messages`` (OpenAI chat format). The gate judges the **last customer turn**
in the light of the chat before it, the assistant's turns included. The most recent customer
turns (up to ``CONTEXT_TURNS``) are each judged alone (threshold-free), then routed in order,
oldest first, by :func:`route_conversation`:

1. A turn that passes alone (score over the threshold) passes: ``llm`` or ``canned``; but
   in a conversation being served, a turn that answers the assistant's question gets no fixed
   reply ("yes" after "Shall I change the colour?" is no *thanks*): it is forwarded. Nor does
   a turn that came with attachments ("hi" and a photo of the damaged parcel): a fixed reply
   cannot read them.
2. A turn that would be refused alone, **in a conversation being served** (the customer's
   previous turn passed), is given the benefit of the doubt and forwarded as a ``followup``
   (with the conversation's intent) unless it is itself *clearly off-topic*:

   * clearly off-topic: an off-topic exemplar is close (similarity at least
     ``gate.followup_off_topic_max``), or the turn leans off-topic by a clear gap (its nearest
     off-topic exemplar at least ``gate.followup_off_topic_gap`` closer than its nearest
     in-domain one);
   * otherwise it is forwarded when it answers the assistant (the assistant's message just
     before it asked something and the turn is short: at most ``gate.followup_max_words``
     words — a name, an e-mail, a phone number, an order id, an address, "yes", "the blue
     one"), or when its score is within ``gate.session_margin`` of the threshold (hysteresis:
     a lower bar for staying in a served session: small talk inside service, a polite
     push-back, "exactly!").
   * the gate's own fixed replies ask for nothing in particular: a turn after "Hello! How can
     I help?" or "You're welcome! Anything else?" (a canned reply, the refusal or the
     unavailable reply, as the gate sent it) answers no question, so "write me a poem" after
     one is judged alone and by the session margin; and a turn answers the assistant only
     once a turn of the conversation went to the LLM (since the last refusal), for hosts that
     reword the gate's replies. The same holds for rule 1's "no fixed reply to an answer".
3. After a refused turn there is no benefit of the doubt. A new in-domain question passes on
   its own score, however short ("wrong size", "NW-12345": nearest a service intent), while a
   short turn nearest a small-talk intent (one with a fixed reply) is agreement or pleading
   ("ok", "please?", "come on": near *thanks* or *goodbye*) and is refused like the request it
   follows, unless it is clearly that small talk: a close match for the fixed reply, scoring at
   least the threshold plus ``gate.session_margin`` ("thanks" gets *You're welcome!*).

4. A turn with **no text, only attachments** (an image, audio, a file: a photo of the damaged
   parcel) has nothing to score, so it follows the conversation: forwarded as a ``followup`` in
   a served conversation, refused right after a refusal, and forwarded as the first turn (the
   gate cannot tell, and refusing a customer's photo is the worse mistake). A turn whose text
   the embedding model **reads nothing of** (:data:`UNREADABLE`: "👍", a 4,000-letter "word")
   follows the conversation the same way, but is refused as a first turn: there is no photo
   the LLM could read instead, and every such text would otherwise get the same score (a photo
   captioned "😢" is a photo: forwarded).

So "Alessandro Phoenix" after "Could you tell me the name on the order?" is forwarded, while
"thanks! now write my essay on the French revolution" is refused: it is close to off-topic
exemplars. The parameters live in ``gate.*`` settings and are calibrated like the threshold, on
labelled chats: ``gatekeeper calibrate ... --conversations CHATS.jsonl --write``
(:mod:`gatekeeper.eval.conversations`); the shipped ones were chosen on
``eval/datasets/shop_chats_calibration.jsonl`` (see eval/README.md).

:func:`route_conversation` is pure; the live gate (proxy, wrapper, runnable, ``check
--conversation``) and the eval's calibration and sweep all call it. :func:`chat_messages` is
the one validator of chat messages.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from gatekeeper.catalog import Catalog
from gatekeeper.decision import Judged, Route, Routed, Thresholds, route_turn
from gatekeeper.errors import EmptyMessageError, InputError
from gatekeeper.types import blank

CONTEXT_TURNS = 4
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER_GROUP = re.compile(r"[+(]*\d[\d()./#-]*")


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
            elif isinstance(part, Mapping) and text_part(part):
                parts.append(part_text(part))
        return "\n".join(parts)
    raise InputError(
        f"message content must be a string or a list of parts, not {type(content).__name__}"
    )


#: Content part types that carry text (chat's ``text``; the Responses API's input and output).
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


#: The fields of a content part that hold text a model reads as the turn's: ``text``, and the
#: ``refusal`` / ``thinking`` / ``reasoning`` parts' own fields (vLLM reads the first two as
#: text in any role; LangChain's reasoning blocks carry ``reasoning``).
TEXT_FIELDS = ("text", "refusal", "thinking", "reasoning")


def text_part(part: Mapping[str, Any]) -> bool:
    """A part whose text the gate reads: a text type, or any part with a string in one of
    :data:`TEXT_FIELDS` (so text sent under another type is judged, not taken for an
    attachment)."""
    kind = part.get("type")
    in_fields = any(isinstance(part.get(name), str) for name in TEXT_FIELDS)
    return (isinstance(kind, str) and kind in TEXT_PARTS) or in_fields


def part_text(part: Mapping[str, Any]) -> str:
    """The text of a content part: its :data:`TEXT_FIELDS` that are strings, joined."""
    return "\n".join(v for name in TEXT_FIELDS if isinstance(v := part.get(name), str))


#: The roles of an OpenAI-format chat; a turn of any other role is no customer turn.
CHAT_ROLES = ("user", "assistant", "system", "developer", "tool", "function")


def chat_roles_hint() -> str:
    """The chat roles as a message names them: "user, assistant, ... or function"."""
    return ", ".join(CHAT_ROLES[:-1]) + f" or {CHAT_ROLES[-1]}"


def chat_messages(messages: Any) -> list[Mapping[str, Any]]:
    """``messages`` checked to be a non-empty list of ``{"role": str, "content": ...}`` objects
    with a readable content and a chat role (:data:`CHAT_ROLES`); :class:`InputError` naming
    the first bad message otherwise."""
    checked = chat_shaped(messages)
    why = role_error(checked)
    if why:
        raise InputError(why)
    return checked


def role_error(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """What is wrong with the first message whose role is no chat role, if one is. Such a turn
    is no customer's to the gate, but an upstream whose chat template prints any role ("User",
    "user ", "customer") reads it as one: skipping it would judge one chat and forward another."""
    for index, message in enumerate(messages):
        if message["role"] not in CHAT_ROLES:
            return (
                f"messages[{index}].role {message['role']!r} is not a chat role "
                f"({chat_roles_hint()}; the customer's turns are 'user', the chatbot's 'assistant')"
            )
    return None


def chat_shaped(messages: Any) -> list[Mapping[str, Any]]:
    """``messages`` checked to be a non-empty list of ``{"role": str, "content": ...}`` objects
    with a readable content, whatever their roles; :class:`InputError` otherwise."""
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
        if isinstance(content, list):
            _check_parts(content, f"messages[{index}].content")
    return list(messages)


def _check_parts(parts: list[Any], where: str) -> None:
    """:class:`InputError` unless every part is a text or an object, and every text-typed part
    has a string ``text`` (what the chat APIs require; a number's text is not the customer's)."""
    for number, part in enumerate(parts):
        if isinstance(part, str):
            continue
        if not isinstance(part, Mapping):
            raise InputError(f"{where}[{number}] must be an object (a content part)")
        kind = part.get("type")
        if isinstance(kind, str) and kind in TEXT_PARTS and not isinstance(part.get("text"), str):
            raise InputError(f"{where}[{number}]: a {kind!r} part needs a string 'text'")


def last_user_text(messages: Any) -> str:
    """The content of the last user message ('' when there is none, or no list of messages)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def attachment_types(content: Any) -> list[str]:
    """The types of a message's typed content parts that carry no text (an image, audio, a
    file), in order; none for a string content."""
    if not isinstance(content, list):
        return []
    return [
        part["type"]
        for part in content
        if isinstance(part, Mapping) and isinstance(part.get("type"), str) and not text_part(part)
    ]


def has_attachments(content: Any) -> bool:
    """Whether a message's ``content`` has a part that is an attachment
    (:func:`attachment_types`)."""
    return bool(attachment_types(content))


def attachments_only(content: Any) -> bool:
    """Whether a message's ``content`` is a list of parts with no text but at least one other
    part (an image, audio, a file)."""
    return has_attachments(content) and blank(content_text(content))


class Said(NamedTuple):
    """A customer turn as the chat holds it, before it is judged."""

    text: str
    #: the assistant's message right before it asked the customer something
    asked: bool = False
    #: it came with attachments (an image, audio, a file), with or without text
    attached: bool = False


def user_turns(messages: Any) -> list[str]:
    """The texts of the last :data:`CONTEXT_TURNS` user messages, oldest first."""
    return [said.text for said in customer_turns(messages)]


def customer_turns(messages: Any, fixed_replies: Collection[str] = ()) -> list[Said]:
    """The last :data:`CONTEXT_TURNS` user messages, oldest first, each with whether the
    assistant's message right before it asked the customer something. The gate's own
    ``fixed_replies`` (stripped) ask nothing: "How can I help?" in a greeting or "Anything
    else?" in a thanks is no question a short turn answers. A last turn of attachments only
    has the text ``""`` (see :func:`attachments_only`)."""
    if isinstance(messages, Sequence) and not isinstance(messages, str | bytes) and not messages:
        raise EmptyMessageError("the conversation has no user message to judge")
    turns: list[Said] = []
    asked, last_content = False, None
    for message in chat_messages(messages):
        role = message.get("role")
        if role == "assistant":
            said = content_text(message.get("content"))
            asked = asks(said) and said.strip() not in fixed_replies
        elif role == "user":
            last_content = message.get("content")
            turns.append(Said(content_text(last_content), asked, has_attachments(last_content)))
            asked = False
    if not turns:
        raise EmptyMessageError("the conversation has no user message to judge")
    if blank(turns[-1].text):
        if not attachments_only(last_content):
            raise EmptyMessageError("the last user message is empty")
        turns[-1] = turns[-1]._replace(text="")
    return turns[-CONTEXT_TURNS:]


def asks(text: str) -> bool:
    """Whether an assistant's message asks the customer something (a question mark in it)."""
    return "?" in text or "？" in text


def word_count(text: str) -> int:
    """Words in ``text`` as a customer would count them: whitespace-separated tokens with a
    letter or digit in them, so an e-mail address or an order id ("maria.lopez@gmail.com",
    "NW-83121") is one word, and a run of number groups ("+41 79 123 45 67", "(977) 625-2661")
    is one too; a run of CJK characters (no spaces between words) counts one word per two
    characters."""
    count, in_number = 0, False
    for token in text.split():
        word_chars = sum(len(run) for run in _WORD.findall(token))
        if not word_chars:
            continue  # punctuation or an emoji alone
        number = _NUMBER_GROUP.fullmatch(token.rstrip(",;:.")) is not None
        if number and in_number:
            continue  # the next group of the same number
        in_number = number
        cjk = sum(1 for ch in token if "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af")
        count += max(1, (cjk + 1) // 2 + (1 if cjk < word_chars else 0)) if cjk else 1
    return count


@dataclass(frozen=True, slots=True)
class Turn:
    """One customer turn of a conversation, judged alone (threshold-independent), and whether
    the assistant had just asked the customer something."""

    text: str
    judged: Judged
    words: int
    asked: bool = False
    no_text: bool = False  # attachments only: nothing was scored (see :data:`NO_TEXT`)
    attached: bool = False  # it came with attachments, with or without text

    @property
    def unreadable(self) -> bool:
        """Text the model reads nothing of (judged :data:`UNREADABLE`)."""
        return self.judged is UNREADABLE


#: The judgement of a turn of attachments only: nothing to score.
NO_TEXT = Judged(
    score=0.0,
    intent=None,
    why="no text to judge (attachments only)",
    nearest_in=None,
    nearest_off=None,
)

#: The judgement of a text the embedding model reads nothing of (every token unknown to it: an
#: emoji alone, a script it lacks, one 4,000-letter "word"): it would embed like every other
#: such text, so its similarity would be the same meaningless number for all of them.
UNREADABLE = Judged(
    score=0.0,
    intent=None,
    why="nothing in it the embedding model can read",
    nearest_in=None,
    nearest_off=None,
)


#: ``off_topic_gap`` at or above this turns the gap rule off.
GAP_OFF = 1.0
#: Float noise in a similarity: a verbatim repeat of an exemplar, embedded in a batch of other
#: lengths, scored 0.99999988 (and 1.00000024 alone), so ``off_topic_max`` 1 ("only a repeat")
#: is met within this.
SIMILARITY_NOISE = 1e-5


@dataclass(frozen=True)
class FollowupPolicy:
    """When a turn of a served conversation is forwarded although it scores low alone.

    The defaults are the settings calibrated for the shipped model, rule and catalog (the
    gentlest to customers within one standard error of the most drift refused; eval/README.md):
    a catalog of one's own starts from them until ``calibrate --conversations`` runs."""

    max_words: int = 4
    off_topic_max: float = 0.65
    off_topic_gap: float = GAP_OFF
    session_margin: float = 0.3


def clearly_off_topic(judged: Judged, policy: FollowupPolicy) -> bool:
    """Close to an off-topic exemplar, or leaning off-topic by a clear gap.

    When no in-domain exemplar was among the fetched neighbours, the gap is measured to the
    least similar one fetched (the nearest in-domain exemplar is at most that similar), so the
    rule refuses only a gap it can show; it once counted the unseen similarity as -1, which
    refused every such turn ("Maria Lopez" on a small catalog among 600 generic lines)."""
    if judged.nearest_off is None:
        return False
    if judged.nearest_off >= policy.off_topic_max - SIMILARITY_NOISE:
        return True
    if policy.off_topic_gap >= GAP_OFF:
        return False
    nearest_in = judged.nearest_in if judged.nearest_in is not None else judged.farthest
    if nearest_in is None:
        return False
    return judged.nearest_off - nearest_in >= policy.off_topic_gap


def rescue_followup(
    routed: Routed, turn: Turn, previous: Routed | None, policy: FollowupPolicy
) -> Routed:
    """``routed`` (the turn alone), forwarded as a follow-up of ``previous`` when the
    conversation model allows (see the module docstring)."""
    served = previous is not None and previous.route is not Route.OFF_TOPIC
    if routed.route is not Route.OFF_TOPIC or not served or previous is None:
        return routed
    judged = turn.judged
    if clearly_off_topic(judged, policy):
        return routed
    answers = turn.asked and turn.words <= policy.max_words
    near = judged.score >= routed.threshold - policy.session_margin
    if not (answers or near):
        return routed
    why = "answers the assistant's question" if answers else "close to the bar, in session"
    return Routed(
        route=Route.LLM,
        intent=previous.intent,
        # the bar the score was held to: none lower for an answer, the session's for the rest
        threshold=routed.threshold if answers else routed.threshold - policy.session_margin,
        reason=(
            f"follow-up ({why}) in a conversation about {previous.intent!r}; "
            f"alone it would be refused ({routed.reason})"
        ),
        nearest_intent=routed.nearest_intent,
        followup=True,
    )


def no_canned_answer(routed: Routed, turn: Turn, previous: Routed | None) -> Routed:
    """``routed``, unless it gives a fixed reply to a turn that answers the assistant's question
    in a served chat: that turn is forwarded ("yes" or "the navy one" after "Shall I change it?"
    got the *thanks* reply; a fixed reply cannot know what was asked)."""
    served = previous is not None and previous.route is not Route.OFF_TOPIC
    if routed.route is not Route.CANNED or not turn.asked or not served:
        return routed
    return Routed(
        route=Route.LLM,
        intent=routed.intent,
        threshold=routed.threshold,
        reason=f"{routed.reason}; it answers the assistant's question, so forwarded instead",
        nearest_intent=routed.nearest_intent,
    )


def no_canned_attachments(routed: Routed, turn: Turn) -> Routed:
    """``routed``, unless it gives a fixed reply to a turn that came with attachments: that
    turn is forwarded ("hi" with a photo of the damaged parcel got the greeting, and the photo
    was lost; a fixed reply cannot read a file)."""
    if routed.route is not Route.CANNED or not turn.attached:
        return routed
    return replace(
        routed,
        route=Route.LLM,
        reason=f"{routed.reason}; it came with attachments a fixed reply cannot read, so forwarded",
        reply=None,
    )


def after_refusal(routed: Routed, turn: Turn, policy: FollowupPolicy, catalog: Catalog) -> Routed:
    """Right after a refused turn, a short turn nearest a small-talk intent (one with a fixed
    reply) is agreement or pleading ("ok", "please?", "come on" near *thanks* or *goodbye*) and
    is refused like the request it follows, unless it is clearly that small talk: answered with
    its fixed reply and scoring at least the threshold plus ``session_margin`` ("thanks"). A
    short turn nearest a service intent is a new question and keeps its own decision. Until
    session 28 every short turn had to clear the raised bar, which refused short new questions
    ("wrong size", "can I exchange it?"); the calibration chats hold no short turn after a
    refusal to set a bar of its own on."""
    short = turn.words <= policy.max_words
    if routed.route is Route.OFF_TOPIC or not short or routed.intent is None:
        return routed
    intent = catalog.intent(routed.intent)
    bar = routed.threshold + policy.session_margin
    if not intent.canned or (routed.route is Route.CANNED and turn.judged.score >= bar):
        return routed
    return Routed(
        route=Route.OFF_TOPIC,
        intent=None,
        threshold=bar,  # the bar the small talk missed (or cleared as no close match)
        reason=(
            f"short turn right after a refusal, nearest the small talk {intent.name!r} but not "
            f"clearly it (score {turn.judged.score:.3f}, bar {bar:.3f}, fixed reply "
            f"{'matched' if routed.route is Route.CANNED else 'too loose'}): agreement or "
            "pleading, not a new request"
        ),
        reply=catalog.off_topic.reply,
        nearest_intent=routed.nearest_intent,
    )


def route_unscored(
    turn: Turn, previous: Routed | None, *, catalog: Catalog, thresholds: Thresholds
) -> Routed:
    """A turn with nothing to score follows the conversation (rule 4 of the module
    docstring): attachments only, or text the model cannot read (refused as a first turn)."""
    what = "attachments only" if turn.no_text else "nothing the model can read"
    if previous is None and (turn.no_text or turn.attached):  # a photo, with "😢" or not
        why = "attachments only" if turn.no_text else "attachments, and text the model cannot read"
        return Routed(
            route=Route.LLM,
            intent=None,
            threshold=thresholds.default,
            reason=f"no text to judge ({why}), first turn: forwarded",
        )
    if previous is None or previous.route is Route.OFF_TOPIC:
        return Routed(
            route=Route.OFF_TOPIC,
            intent=None,
            threshold=thresholds.default if previous is None else previous.threshold,
            reason=f"{what}, " + ("first turn" if previous is None else "right after a refusal"),
            reply=catalog.off_topic.reply,
            nearest_intent=None if previous is None else previous.nearest_intent,
        )
    return Routed(
        route=Route.LLM,
        intent=previous.intent,
        threshold=previous.threshold,
        reason=f"follow-up ({what}) in a conversation about {previous.intent!r}",
        nearest_intent=previous.nearest_intent,
        followup=True,
    )


def route_conversation(
    turns: Sequence[Turn], *, catalog: Catalog, thresholds: Thresholds, policy: FollowupPolicy
) -> Routed:
    """Route a conversation's last turn in the light of the turns before it. Pure."""
    previous: Routed | None = None
    forwarded = False  # a turn went to the LLM since the last refusal (rule 2's answers)
    for turn in turns:
        if turn.no_text or turn.unreadable:
            previous = route_unscored(turn, previous, catalog=catalog, thresholds=thresholds)
        else:
            alone = route_turn(turn.judged, catalog=catalog, thresholds=thresholds)
            if previous is not None and previous.route is Route.OFF_TOPIC:
                previous = after_refusal(alone, turn, policy, catalog)
            else:
                answering = turn if forwarded else replace(turn, asked=False)
                previous = no_canned_answer(
                    rescue_followup(alone, answering, previous, policy), answering, previous
                )
            previous = no_canned_attachments(previous, turn)
        forwarded = previous.route is Route.LLM or (forwarded and previous.route is Route.CANNED)
    if previous is None:
        raise EmptyMessageError("the conversation has no user message to judge")
    return previous
