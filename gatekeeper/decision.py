"""The decision: pure functions from a message's nearest exemplars to a route.

Two steps, both pure (no I/O, no clock), used alike by the live gate and by the eval's
calibration and threshold sweep, so every number in a report is what the proxy would do:

1. :func:`judge` — a scoring rule (:mod:`gatekeeper.rules`) turns the neighbours into a
   :class:`Judged` turn: score, intent and what routing needs, independent of any threshold;
2. :func:`route_turn` — the thresholds and the catalog turn a :class:`Judged` turn into a
   :class:`Routed` one (``llm``, ``off_topic`` or ``canned``). A conversation is routed by
   :func:`gatekeeper.conversation.route_conversation`, which calls :func:`route_turn`.

:func:`decide` does both for one message.

Rules shipped (``gate.rule``):

``top1``
    score = the highest similarity to any in-domain exemplar; the intent is that exemplar's.
``contrast``
    as ``top1``, but off-topic exemplars act as a contrast class: when the nearest off-topic
    exemplar is closer than the nearest in-domain one, the score drops by the gap,
    ``score = s_in - max(0, s_off - s_in)``. With no off-topic exemplars it equals ``top1``.
``density`` (default)
    as ``contrast``, but ``s_in`` is the mean similarity of the ``k`` nearest in-domain
    exemplars (``gate.density_k``, default 5) rather than of the nearest one: a message in a
    dense in-domain neighbourhood scores high even when no single exemplar matches it, and a
    message that brushes one exemplar by chance scores low. The gap is still measured from the
    single nearest in-domain exemplar. Chosen on banking77's calibration file (see
    ``eval/README.md``): at a 99% in-domain pass rate it blocks more off-topic queries than
    ``top1`` at the same pass rate.

Either way the message is ``off_topic`` when the score is under the threshold (the intent's own
threshold when it has one), else ``llm``, or ``canned`` when the intent has a fixed reply **and**
the nearest exemplar is that close (similarity at least ``gate.canned_min_similarity``). A
canned reply skips the LLM, so a loose match ("yes" vaguely like "hi") must not earn one: it is
forwarded instead, which costs a call but never answers a customer with the wrong fixed reply.

Whatever the rule, a message that **is** one of the catalog's off-topic exemplars (similarity at
least :data:`VERBATIM`, and closer to it than to any in-domain exemplar) scores -1, under every
threshold: the owner said that text is off-topic. Before, a Spanish shop's own "¿qué tiempo hará
mañana en Sevilla?" scored 0.442 on the English-only default model (the gap rule took off 0.230
from an in-domain mean of 0.671) and was forwarded at threshold 0.302.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from gatekeeper.catalog import Catalog
from gatekeeper.rules import DecisionRule, best_in_domain, best_off_topic
from gatekeeper.types import Neighbour

#: How many of the nearest exemplars a decision shows.
SHOWN_NEIGHBOURS = 5
#: A similarity this high is the same text (up to float noise, batching and int8 quantisation).
VERBATIM = 0.999
#: The score of a copy of an off-topic exemplar: under every threshold.
OFF_TOPIC_COPY = -1.0


class Route(StrEnum):
    """Where a message goes."""

    LLM = "llm"
    OFF_TOPIC = "off_topic"
    CANNED = "canned"


class Decision(BaseModel):
    """The gate's decision on one message: route + intent + score + threshold + nearest
    exemplars + reason + latency. Frozen.

    Attributes:
        route: where the message goes: :attr:`Route.LLM` (to the backend), :attr:`Route.OFF_TOPIC`
            (refused with :attr:`reply`) or :attr:`Route.CANNED` (answered with :attr:`reply`).
        intent: the intent served (routes ``llm`` and ``canned``); None when refused (see
            :attr:`nearest_intent`) or when the gate failed.
        score: how in-domain the message is under ``gate.rule`` (higher = more); -1 for a copy
            of an off-topic exemplar. When the gate failed: 1.0 (``fail_open``) or -1.0
            (``fail_closed``).
        threshold: the bar the score was held to: the intent's own, ``gate.threshold``, or in a
            conversation the session's moved bar (lower for a follow-up passed near it, higher
            for small talk after a refusal).
        reason: why, for people: the score against the threshold and the rule's account.
        nearest_intent: the closest in-domain intent, whatever the route (None when the gate
            failed or no in-domain exemplar was among the nearest).
        neighbours: the nearest exemplars (up to 5, most similar first), each with its text,
            intent and similarity; empty when the gate failed.
        followup: True when a conversation's turn that would be refused alone was forwarded
            as part of the conversation being served (an answer to the assistant's question, a
            score near the threshold, an attachment).
        reply: what to answer the customer instead of calling the LLM: the intent's fixed
            reply (``canned``), the catalog's off-topic reply, or ``gate.unavailable_reply``
            (``fail_closed``); None when the message goes to the LLM.
        latency_ms: the gate's own time for the message (embedding, search and rule; a
            batch's time shared among its messages; loading the model not included).
        message_id: a keyed hash of the message's text (``logging.message_id_key``) that joins
            logs, headers and reports without holding the text; None for a message with no
            text (attachments only).
        shadow: ``gate.shadow`` was on: decided and logged, but forwarded whatever the route
            (see :attr:`forwarded`).
        gate_error: the error class's name when the gate itself failed (model or Chroma) and
            ``gate.on_error`` decided, not the model; None otherwise.
    """

    model_config = ConfigDict(frozen=True)

    route: Route
    intent: str | None
    score: float
    threshold: float
    reason: str
    nearest_intent: str | None = None
    neighbours: tuple[Neighbour, ...] = ()
    followup: bool = False
    reply: str | None = None
    latency_ms: float = 0.0
    message_id: str | None = None
    shadow: bool = False
    gate_error: str | None = None

    @property
    def admitted(self) -> bool:
        """True when the gate admits the message to the LLM (route ``llm``)."""
        return self.route is Route.LLM

    @property
    def forwarded(self) -> bool:
        """True when the message goes to the backend: admitted, or any route in shadow mode."""
        return self.admitted or self.shadow

    def summary(self) -> dict[str, Any]:
        """The fields that go to logs, headers and metadata (no exemplar or customer text)."""
        return {
            "route": self.route.value,
            "intent": self.intent,
            "nearest_intent": self.nearest_intent,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "followup": self.followup,
            "shadow": self.shadow,
            "gate_error": self.gate_error,  # a fail_open decision is not a perfect match
            "latency_ms": round(self.latency_ms, 3),
            "message_id": self.message_id,
        }


@dataclass(frozen=True)
class Thresholds:
    """A global threshold with per-intent overrides, and the bar for a canned reply."""

    default: float
    per_intent: Mapping[str, float] = field(default_factory=dict)
    canned_min_similarity: float = 0.0

    def for_intent(self, intent: str | None) -> float:
        """The threshold that applies to a message whose nearest intent is ``intent``."""
        if intent is None:
            return self.default
        return self.per_intent.get(intent, self.default)

    def with_default(self, default: float) -> Thresholds:
        """The same thresholds with another global one (the eval's sweep and calibration)."""
        return dataclasses.replace(self, default=default)

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        default: float,
        overrides: Mapping[str, float] | None = None,
        canned_min_similarity: float = 0.0,
    ) -> Thresholds:
        """Catalog thresholds, then ``overrides`` (settings) on top."""
        per_intent = {i.name: i.threshold for i in catalog.intents if i.threshold is not None}
        per_intent.update(overrides or {})
        return cls(default, per_intent, canned_min_similarity)


@dataclass(frozen=True, slots=True)
class Judged:
    """One message judged by the scoring rule: everything routing needs, no threshold yet."""

    score: float
    intent: str | None
    why: str
    nearest_in: float | None
    nearest_off: float | None
    neighbours: tuple[Neighbour, ...] = ()
    #: the least similar exemplar fetched: when no in-domain one was among them, the nearest
    #: in-domain exemplar is at most this similar
    farthest: float | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a judged message goes, under which threshold, and why."""

    route: Route
    intent: str | None
    threshold: float
    reason: str
    reply: str | None = None
    nearest_intent: str | None = None
    followup: bool = False


def judge(neighbours: Sequence[Neighbour], rule: DecisionRule) -> Judged:
    """Score one message from its nearest exemplars."""
    scored = rule.score(neighbours)
    best_in, best_off = best_in_domain(neighbours), best_off_topic(neighbours)
    ranked = sorted(neighbours, key=lambda n: -n.similarity)
    score, why = scored.score, scored.why
    if off_topic_copy(best_in, best_off):
        score, why = OFF_TOPIC_COPY, f"a copy of an off-topic exemplar of the catalog; {why}"
    return Judged(
        score=score,
        intent=scored.intent,
        why=why,
        nearest_in=best_in.similarity if best_in is not None else None,
        nearest_off=best_off.similarity if best_off is not None else None,
        neighbours=tuple(ranked[:SHOWN_NEIGHBOURS]),
        farthest=ranked[-1].similarity if ranked else None,
    )


def off_topic_copy(best_in: Neighbour | None, best_off: Neighbour | None) -> bool:
    """Whether the nearest off-topic exemplar is the message itself (:data:`VERBATIM`) and no
    in-domain exemplar is as close (a text in both blocks is left to the rule)."""
    if best_off is None or best_off.similarity < VERBATIM:
        return False
    return best_in is None or best_in.similarity < best_off.similarity


def route_turn(judged: Judged, *, catalog: Catalog, thresholds: Thresholds) -> Routed:
    """Route one judged message: ``off_topic`` under the threshold, else ``llm``, or ``canned``
    when its intent has a fixed reply and an exemplar of it is close enough."""
    threshold = thresholds.for_intent(judged.intent)
    score = judged.score
    if judged.intent is None or score < threshold:
        reason = f"score {score:.3f} < threshold {threshold:.3f}: {judged.why}"
        return Routed(
            Route.OFF_TOPIC, None, threshold, reason, catalog.off_topic.reply, judged.intent
        )
    intent = catalog.intent(judged.intent)
    confident = (
        judged.nearest_in is not None and judged.nearest_in >= thresholds.canned_min_similarity
    )
    if intent.canned and confident:
        route, verb, reply = Route.CANNED, "answered with its fixed reply", intent.reply
    elif intent.canned:
        route, verb, reply = Route.LLM, "too loose a match for the fixed reply, forwarded", None
    else:
        route, verb, reply = Route.LLM, "forwarded", None
    reason = f"score {score:.3f} >= threshold {threshold:.3f}: {judged.why}, {verb}"
    return Routed(route, intent.name, threshold, reason, reply, intent.name)


def to_decision(judged: Judged, routed: Routed) -> Decision:
    """The :class:`Decision` of a judged and routed message."""
    return Decision(
        route=routed.route,
        intent=routed.intent,
        score=judged.score,
        # a bar moved by a margin (0.2569 - 0.2) is reported without float noise (0.0569, not
        # 0.056900000000000006)
        threshold=round(routed.threshold, 10),
        reason=routed.reason,
        nearest_intent=routed.nearest_intent,
        neighbours=judged.neighbours,
        followup=routed.followup,
        reply=routed.reply,
    )


def decide(
    neighbours: Sequence[Neighbour],
    *,
    rule: DecisionRule,
    catalog: Catalog,
    thresholds: Thresholds,
) -> Decision:
    """Route one message from its nearest exemplars. Pure: no I/O, no clock."""
    judged = judge(neighbours, rule)
    return to_decision(judged, route_turn(judged, catalog=catalog, thresholds=thresholds))
