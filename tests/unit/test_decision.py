"""The decision rule, as a pure function over neighbours."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.catalog import parse_catalog
from gatekeeper.decision import Decision, Route, Thresholds, decide
from gatekeeper.rules import ContrastRule, DecisionRule, DensityRule, TopOneRule, build_rule
from gatekeeper.types import Neighbour

CATALOG = parse_catalog(
    {
        "intents": [
            {"name": "order_status", "exemplars": ["where is my order"]},
            {"name": "refund", "exemplars": ["refund please"], "threshold": 0.8},
            {"name": "greeting", "exemplars": ["hi"], "reply": "Hello!"},
        ],
        "off_topic": {"exemplars": ["tell me a joke"], "reply": "Only shop questions."},
    }
)
THRESHOLDS = Thresholds.from_catalog(CATALOG, 0.5)


def n(intent: str, similarity: float) -> Neighbour:
    return Neighbour(
        id=f"{intent}-{similarity}", text=f"about {intent}", intent=intent, similarity=similarity
    )


def test_top1_forwards_above_threshold() -> None:
    """A close in-domain exemplar routes to the LLM with its intent."""
    d = decide(
        [n("order_status", 0.7), n("refund", 0.4)],
        rule=TopOneRule(),
        catalog=CATALOG,
        thresholds=THRESHOLDS,
    )
    assert (d.route, d.intent, d.score, d.threshold) == (Route.LLM, "order_status", 0.7, 0.5)
    assert "forwarded" in d.reason and d.reply is None


def test_below_threshold_is_off_topic_with_refusal() -> None:
    """Under the threshold the message is refused with the catalog's reply."""
    d = decide([n("order_status", 0.3)], rule=TopOneRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    assert d.route is Route.OFF_TOPIC
    assert d.reply == "Only shop questions."
    assert "< threshold" in d.reason


def test_per_intent_threshold_overrides_global() -> None:
    """An intent's own threshold applies instead of the global one."""
    d = decide([n("refund", 0.7)], rule=TopOneRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    assert d.route is Route.OFF_TOPIC and d.threshold == 0.8


def test_settings_override_beats_catalog_threshold() -> None:
    """Thresholds given in settings override the catalog's."""
    thresholds = Thresholds.from_catalog(CATALOG, 0.5, {"refund": 0.6})
    d = decide([n("refund", 0.7)], rule=TopOneRule(), catalog=CATALOG, thresholds=thresholds)
    assert d.route is Route.LLM


def test_canned_intent_gets_fixed_reply() -> None:
    """A canned intent is answered with its reply, not forwarded."""
    d = decide([n("greeting", 0.9)], rule=TopOneRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    assert (d.route, d.reply) == (Route.CANNED, "Hello!")


def test_contrast_lowers_score_when_off_topic_is_closer() -> None:
    """With an off-topic exemplar closer than any in-domain one, contrast drops the score."""
    neighbours = [n("off_topic", 0.8), n("order_status", 0.6)]
    top1 = decide(neighbours, rule=TopOneRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    contrast = decide(neighbours, rule=ContrastRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    assert top1.route is Route.LLM
    assert contrast.score == pytest.approx(0.4)
    assert contrast.route is Route.OFF_TOPIC


def test_no_in_domain_neighbour() -> None:
    """Only off-topic neighbours: refused, no intent."""
    d = decide([n("off_topic", 0.9)], rule=ContrastRule(), catalog=CATALOG, thresholds=THRESHOLDS)
    assert d.route is Route.OFF_TOPIC and d.intent is None


def test_unknown_rule_name() -> None:
    """Asking for a rule that does not exist names the known ones."""
    with pytest.raises(ValueError, match="contrast"):
        build_rule("nope")


similarities = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
intents = st.sampled_from(["order_status", "refund", "greeting", "off_topic"])


@given(st.lists(st.tuples(intents, similarities), min_size=1, max_size=12))
def test_contrast_never_scores_above_top1(pairs: list[tuple[str, float]]) -> None:
    """Contrast equals top-1 without a closer off-topic exemplar, and is never higher."""
    neighbours = [n(i, s) for i, s in pairs]
    top1 = TopOneRule().score(neighbours)
    contrast = ContrastRule().score(neighbours)
    assert contrast.intent == top1.intent
    assert contrast.score <= top1.score + 1e-9


@given(st.lists(st.tuples(intents, similarities), min_size=1, max_size=12), similarities)
def test_route_follows_score_and_threshold(pairs: list[tuple[str, float]], t: float) -> None:
    """The route is off_topic exactly when the score is under the threshold."""
    neighbours = [n(i, s) for i, s in pairs]
    d = decide(neighbours, rule=ContrastRule(), catalog=CATALOG, thresholds=Thresholds(t))
    assert (d.route is Route.OFF_TOPIC) == (d.intent is None or d.score < t)


def test_density_averages_the_k_nearest_in_domain() -> None:
    """The density score is the mean of the k nearest in-domain similarities."""
    neighbours = [
        n("order_status", 0.9),
        n("refund", 0.5),
        n("order_status", 0.4),
        n("off_topic", 0.3),
    ]
    scored = DensityRule(k=3).score(neighbours)
    assert scored.intent == "order_status"
    assert scored.score == pytest.approx((0.9 + 0.5 + 0.4) / 3)


def test_density_fills_missing_neighbours_with_the_farthest() -> None:
    """Fewer than k in-domain neighbours count the farthest fetched similarity for the rest."""
    neighbours = [n("order_status", 0.8), n("off_topic", 0.7), n("off_topic", 0.2)]
    assert DensityRule(k=3).score(neighbours).score == pytest.approx((0.8 + 0.2 + 0.2) / 3)


def test_density_applies_the_contrast_gap() -> None:
    """A closer off-topic exemplar lowers the density score by the gap to the nearest."""
    neighbours = [n("off_topic", 0.9), n("order_status", 0.6), n("order_status", 0.6)]
    assert DensityRule(k=2).score(neighbours).score == pytest.approx(0.6 - 0.3)


@given(st.lists(st.tuples(intents, similarities), min_size=1, max_size=12))
def test_density_never_scores_above_contrast(pairs: list[tuple[str, float]]) -> None:
    """Averaging the k nearest never scores above the single nearest (same gap)."""
    neighbours = [n(i, s) for i, s in pairs]
    assert DensityRule(k=5).score(neighbours).score <= ContrastRule().score(neighbours).score + 1e-9


def test_loose_canned_match_is_forwarded_not_canned() -> None:
    """A canned intent matched loosely goes to the LLM instead of getting the fixed reply."""
    thresholds = Thresholds.from_catalog(CATALOG, 0.3, canned_min_similarity=0.7)
    loose = decide([n("greeting", 0.4)], rule=TopOneRule(), catalog=CATALOG, thresholds=thresholds)
    assert (loose.route, loose.intent, loose.reply) == (Route.LLM, "greeting", None)
    assert "too loose" in loose.reason
    tight = decide([n("greeting", 0.8)], rule=TopOneRule(), catalog=CATALOG, thresholds=thresholds)
    assert tight.route is Route.CANNED


def test_a_bar_moved_by_a_margin_is_reported_without_float_noise() -> None:
    """A threshold of 0.2569 - 0.2 is reported as 0.0569 (check --json printed
    0.056900000000000006)."""
    from gatekeeper.decision import Judged, Routed, to_decision

    routed = Routed(route=Route.LLM, intent="a", threshold=0.2569 - 0.2, reason="follow-up")
    assert to_decision(Judged(0.1, "a", "why", 0.1, None), routed).threshold == 0.0569


@pytest.mark.parametrize("rule", [TopOneRule(), ContrastRule(), DensityRule(k=3)])
def test_a_copy_of_an_off_topic_exemplar_is_refused_under_any_threshold(rule: DecisionRule) -> None:
    """A message that is one of the catalog's off-topic exemplars scores -1 under every rule,
    however close the in-domain exemplars (the owner labelled that text off-topic); a text in
    both blocks, or an off-topic exemplar short of a copy, is left to the rule."""
    low = Thresholds.from_catalog(CATALOG, -0.9)
    copy = [n("off_topic", 0.9999994), n("order_status", 0.95), n("order_status", 0.94)]
    d = decide(copy, rule=rule, catalog=CATALOG, thresholds=low)
    assert (d.route, d.score) == (Route.OFF_TOPIC, -1.0)
    assert "a copy of an off-topic exemplar" in d.reason
    both = [n("off_topic", 1.0), n("order_status", 1.0)]
    assert decide(both, rule=rule, catalog=CATALOG, thresholds=low).route is Route.LLM
    near = [n("off_topic", 0.99), n("order_status", 0.95)]
    assert decide(near, rule=rule, catalog=CATALOG, thresholds=low).score > -1.0


def test_every_decision_field_is_described_in_its_docstring() -> None:
    """help(Decision) and IDE hovers describe each field (they were described only in
    comments), in field order under "Attributes:"."""
    import inspect
    import re

    doc = inspect.cleandoc(Decision.__doc__ or "")
    described = re.findall(r"^ {4}(\w+): \S", doc.split("Attributes:", 1)[-1], re.M)
    assert described == list(Decision.model_fields)
