"""The decision rule: a pure function from a message's nearest exemplars to a route.

A rule sees only :class:`Neighbour` rows (exemplar, intent, similarity) and the catalog's
thresholds and replies; it never touches a model or a store, so it is tested on its own and
swapped by name (``gate.rule``). Rules shipped:

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from gatekeeper.catalog import Catalog
from gatekeeper.rules import DecisionRule, best_in_domain
from gatekeeper.types import Neighbour


class Route(StrEnum):
    """Where a message goes."""

    LLM = "llm"
    OFF_TOPIC = "off_topic"
    CANNED = "canned"


class Decision(BaseModel):
    """Route + intent + score + threshold + nearest exemplars + reason + latency."""

    model_config = ConfigDict(frozen=True)

    route: Route
    intent: str | None
    score: float
    threshold: float
    reason: str
    neighbours: tuple[dict[str, Any], ...] = ()
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
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "latency_ms": round(self.latency_ms, 3),
            "message_id": self.message_id,
        }


@dataclass(frozen=True)
class Thresholds:
    """A global threshold with per-intent overrides."""

    default: float
    per_intent: Mapping[str, float] = field(default_factory=dict)
    canned_min_similarity: float = 0.0

    def for_intent(self, intent: str | None) -> float:
        if intent is None:
            return self.default
        return self.per_intent.get(intent, self.default)

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


def decide(
    neighbours: Sequence[Neighbour],
    *,
    rule: DecisionRule,
    catalog: Catalog,
    thresholds: Thresholds,
) -> Decision:
    """Route one message from its nearest exemplars. Pure: no I/O, no clock."""
    scored = rule.score(neighbours)
    threshold = thresholds.for_intent(scored.intent)
    shown = tuple(
        {"intent": n.intent, "text": n.text, "similarity": round(n.similarity, 4)}
        for n in sorted(neighbours, key=lambda n: -n.similarity)[:5]
    )
    if scored.intent is None or scored.score < threshold:
        return Decision(
            route=Route.OFF_TOPIC,
            intent=scored.intent,
            score=scored.score,
            threshold=threshold,
            reason=f"score {scored.score:.3f} < threshold {threshold:.3f}: {scored.why}",
            neighbours=shown,
            reply=catalog.off_topic.reply,
        )
    intent = catalog.intent(scored.intent)
    nearest = best_in_domain(neighbours)
    confident = nearest is not None and nearest.similarity >= thresholds.canned_min_similarity
    if intent.canned and confident:
        route, verb, reply = Route.CANNED, "answered with its fixed reply", intent.reply
    elif intent.canned:
        route, verb, reply = Route.LLM, "too loose a match for the fixed reply, forwarded", None
    else:
        route, verb, reply = Route.LLM, "forwarded", None
    return Decision(
        route=route,
        intent=intent.name,
        score=scored.score,
        threshold=threshold,
        reason=f"score {scored.score:.3f} >= threshold {threshold:.3f}: {scored.why}, {verb}",
        neighbours=shown,
        reply=reply,
    )
