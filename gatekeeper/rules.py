"""Scoring rules: from a message's nearest exemplars to a score and an intent.

A rule sees only :class:`~gatekeeper.types.Neighbour` rows (exemplar, intent, similarity); it
never touches a model, a store or a threshold, so it is tested on its own and chosen by name
(``gate.rule``). The registry :data:`RULES` is the one list of rules: settings validation, the
CLI's ``--rule`` help and the benchmark scripts all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gatekeeper.types import Neighbour

DEFAULT_RULE = "density"


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


@dataclass(frozen=True)
class RuleSpec:
    """A rule in the registry: its name, a one-line summary, and how to build it."""

    name: str
    summary: str
    build: Callable[[int], DecisionRule]


RULES: Mapping[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec(
            "density",
            "mean similarity of the k nearest in-domain exemplars (gate.density_k), "
            "lowered when an off-topic exemplar is closer",
            DensityRule,
        ),
        RuleSpec(
            "contrast",
            "similarity of the nearest in-domain exemplar, lowered when an off-topic "
            "exemplar is closer",
            lambda k: ContrastRule(),
        ),
        RuleSpec("top1", "similarity of the nearest in-domain exemplar", lambda k: TopOneRule()),
    )
}


def rule_names() -> tuple[str, ...]:
    """The names of the registered rules, the default first."""
    return tuple(RULES)


def rules_help() -> str:
    """One line naming every rule, for help texts."""
    return "; ".join(
        f"{name}{' (default)' if name == DEFAULT_RULE else ''}: {spec.summary}"
        for name, spec in RULES.items()
    )


def build_rule(name: str, k: int = 5) -> DecisionRule:
    """The rule called ``name`` (``k`` is the density rule's neighbourhood size)."""
    try:
        return RULES[name].build(k)
    except KeyError:
        raise ValueError(f"unknown decision rule {name!r}; known: {', '.join(RULES)}") from None
