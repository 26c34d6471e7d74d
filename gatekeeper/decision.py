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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from gatekeeper.catalog import OFF_TOPIC, Catalog


class Route(StrEnum):
    """Where a message goes."""

    LLM = "llm"
    OFF_TOPIC = "off_topic"
    CANNED = "canned"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One nearby exemplar: its id, text, intent (``off_topic`` for contrast exemplars)."""

    id: str
    text: str
    intent: str
    similarity: float

    @property
    def off_topic(self) -> bool:
        return self.intent == OFF_TOPIC


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


@dataclass(frozen=True)
class Scored:
    """What a rule concludes before routing: the score and the intent it belongs to."""

    score: float
    intent: str | None
    why: str


class DecisionRule(Protocol):
    """Turns a message's nearest exemplars into a score and an intent."""

    name: str

    def score(self, neighbours: Sequence[Neighbour]) -> Scored: ...


def best_in_domain(neighbours: Sequence[Neighbour]) -> Neighbour | None:
    """The most similar in-domain exemplar, if any."""
    return max((n for n in neighbours if not n.off_topic), key=lambda n: n.similarity, default=None)


def best_off_topic(neighbours: Sequence[Neighbour]) -> Neighbour | None:
    """The most similar off-topic exemplar, if any."""
    return max((n for n in neighbours if n.off_topic), key=lambda n: n.similarity, default=None)


class TopOneRule:
    """score = similarity of the nearest in-domain exemplar."""

    name = "top1"

    def score(self, neighbours: Sequence[Neighbour]) -> Scored:
        best = best_in_domain(neighbours)
        if best is None:
            return Scored(-1.0, None, "no in-domain exemplar among the nearest")
        return Scored(best.similarity, best.intent, f"nearest intent {best.intent!r}")


class ContrastRule:
    """top-1 in-domain similarity, lowered by how much closer an off-topic exemplar is."""

    name = "contrast"

    def score(self, neighbours: Sequence[Neighbour]) -> Scored:
        best = best_in_domain(neighbours)
        off = best_off_topic(neighbours)
        if best is None:
            return Scored(-1.0, None, "no in-domain exemplar among the nearest")
        gap = max(0.0, off.similarity - best.similarity) if off is not None else 0.0
        if gap > 0:
            why = f"nearest intent {best.intent!r}, but an off-topic exemplar is {gap:.3f} closer"
        else:
            why = f"nearest intent {best.intent!r}"
        return Scored(best.similarity - gap, best.intent, why)


class DensityRule:
    """Mean similarity of the k nearest in-domain exemplars, lowered by the contrast gap."""

    name = "density"

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def score(self, neighbours: Sequence[Neighbour]) -> Scored:
        ranked = sorted(neighbours, key=lambda n: -n.similarity)
        in_domain = [n.similarity for n in ranked if not n.off_topic][: self.k]
        if not in_domain:
            return Scored(-1.0, None, "no in-domain exemplar among the nearest")
        # Fewer than k in-domain exemplars among the fetched neighbours: the missing ones are
        # at most as similar as the farthest neighbour fetched, so count them at that value.
        in_domain += [ranked[-1].similarity] * (self.k - len(in_domain))
        density = sum(in_domain) / self.k
        best = best_in_domain(neighbours)
        off = best_off_topic(neighbours)
        assert best is not None
        gap = max(0.0, off.similarity - best.similarity) if off is not None else 0.0
        why = f"nearest intent {best.intent!r}, mean of {self.k} nearest in-domain {density:.3f}"
        if gap > 0:
            why += f", an off-topic exemplar is {gap:.3f} closer"
        return Scored(density - gap, best.intent, why)


RULES: dict[str, Callable[[int], DecisionRule]] = {
    "top1": lambda k: TopOneRule(),
    "contrast": lambda k: ContrastRule(),
    "density": DensityRule,
}


def build_rule(name: str, k: int = 5) -> DecisionRule:
    """The rule called ``name`` (``k`` is the density rule's neighbourhood size)."""
    try:
        return RULES[name](k)
    except KeyError:
        raise ValueError(f"unknown decision rule {name!r}; known: {sorted(RULES)}") from None


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
