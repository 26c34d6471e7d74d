"""The messages a report names (customers wrongly blocked, off-topic let through, wrong canned
replies, follow-ups) and ``rows.jsonl``'s rows, each with where it is and, for a chat's turn,
what came before it.

A chat's turn is named by file, line *and turn* (a row of 32 customer turns is one line), and
shown after the assistant's message before it and the customer's previous turn with how the
gate routed that turn: a short turn refused right after a refusal is refused for that refusal
(no benefit of the doubt), one after a served turn was not rescued as a follow-up, and the
assistant's message alone did not tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gatekeeper.conversation import CONTEXT_TURNS, content_text
from gatekeeper.decision import Route
from gatekeeper.eval.schema import Listed, Outcome, Row
from gatekeeper.rules import best_in_domain
from gatekeeper.types import blank

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

#: How much of an assistant's message a listed turn shows as its context.
CONTEXT_CHARS = 160


def canned_mismatches(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Labelled in-domain messages answered with the canned reply of another intent."""
    return [
        o
        for o in outcomes
        if o.decision.route is Route.CANNED and o.example.intent not in (None, o.decision.intent)
    ]


def followups(outcomes: Sequence[Outcome], in_domain: bool) -> list[Outcome]:
    """The chat turns forwarded although they would be refused alone (``decision.followup``):
    the customers' (``in_domain``) or the drifts'."""
    return [o for o in outcomes if o.decision.followup and o.example.in_domain is in_domain]


class Listing:
    """The rows of one run's outcomes as the report lists them. ``gate`` routes a chat's
    previous turn when no labelled row of it says how it went (a chat without ``labels``)."""

    def __init__(self, gate: Gatekeeper, outcomes: Sequence[Outcome]) -> None:
        self._gate = gate
        self._chats: dict[tuple[str, int], dict[int, Outcome]] = {}
        for o in outcomes:
            if o.example.turn is not None:
                chat = self._chats.setdefault((o.example.source, o.example.line), {})
                chat[o.example.turn] = o

    def listed(self, outcome: Outcome) -> Listed:
        """An outcome as a row of the report's lists."""
        d = outcome.decision
        nearest = best_in_domain(d.neighbours)
        previous = outcome.turns[-2].text if len(outcome.turns) > 1 else None
        return Listed(
            source=outcome.example.source,
            line=outcome.example.line,
            turn=outcome.example.turn,
            text=outcome.example.text,
            label_intent=outcome.example.intent,
            nearest_intent=d.nearest_intent,
            context=_context(outcome),
            previous_turn=previous,
            previous_route=None if previous is None else self._previous_route(outcome, previous),
            route=d.route.value,
            score=d.score,
            threshold=d.threshold,
            reason=d.reason,
            nearest_exemplar=nearest.text if nearest is not None else None,
            nearest_similarity=nearest.similarity if nearest is not None else None,
        )

    def row(self, outcome: Outcome) -> Row:
        """An outcome as a line of ``rows.jsonl``."""
        return Row(
            **self.listed(outcome).model_dump(),
            label=outcome.example.label,
            intent=outcome.decision.intent,
            passed=outcome.passed,
            called=outcome.called,
            followup=outcome.decision.followup,
        )

    def _previous_route(self, outcome: Outcome, previous: str) -> str | None:
        """How the gate routed the chat's previous customer turn (``previous``, the one the
        gate read before the judged turn): the decision on that turn's own row when the chat's
        turns are labelled; else the judged turns before this one, routed by the gate, when
        they are the whole chat before it (the gate reads the last :data:`CONTEXT_TURNS`);
        else None (not known)."""
        example = outcome.example
        if example.turn is not None:
            chat = self._chats.get((example.source, example.line), {})
            for turn in range(example.turn - 1, 0, -1):  # the gate skips empty turns
                if turn in chat and chat[turn].example.text == previous:
                    return chat[turn].decision.route.value
            return None
        if isinstance(example.message, str) or _customer_turns(example.message) > CONTEXT_TURNS:
            return None
        return self._gate.route(outcome.turns[:-1]).route.value


def _customer_turns(messages: Sequence[Mapping[str, Any]]) -> int:
    """The customer turns of a chat the gate reads (it leaves out the ones with no text, but
    for a last one of attachments only)."""
    said = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return sum(not blank(text) for text in said[:-1]) + 1


def _context(outcome: Outcome) -> str | None:
    """The assistant's message just before a chat's judged turn (shortened), if any."""
    message = outcome.example.message
    if isinstance(message, str) or len(message) < 2:
        return None
    before = message[-2]
    if before.get("role") != "assistant":
        return None
    text = content_text(before.get("content"))
    return text if len(text) <= CONTEXT_CHARS else text[: CONTEXT_CHARS - 1] + "…"
