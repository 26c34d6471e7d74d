"""Conversation handling: judged turn, context and the follow-up rule."""

from __future__ import annotations

import pytest

from gatekeeper.conversation import (
    FollowupPolicy,
    Turn,
    content_text,
    rescue_followup,
    route_conversation,
    user_turns,
    word_count,
)
from gatekeeper.decision import Judged, Route, Routed, Thresholds
from gatekeeper.errors import EmptyMessageError, InputError

POLICY = FollowupPolicy(max_words=12, off_topic_max=0.55)


def _routed(route: Route, intent: str | None = "order_status") -> Routed:
    return Routed(route=route, intent=intent, threshold=0.5, reason="alone")


def _turn(text: str, nearest_in: float | None = 0.2, nearest_off: float | None = None) -> Turn:
    judged = Judged(0.2, "refund", "why", nearest_in, nearest_off)
    return Turn(text, judged, word_count(text))


def test_user_turns_keeps_recent_user_messages() -> None:
    """Only user turns count, the last few, oldest first; content parts are joined."""
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "image_url"}]},
    ]
    assert user_turns(messages) == ["one", "two"]


def test_no_user_turn_or_empty_last_turn() -> None:
    """A conversation without a user turn, or with an empty last one, is a client error."""
    with pytest.raises(EmptyMessageError):
        user_turns([{"role": "assistant", "content": "hi"}])
    with pytest.raises(EmptyMessageError):
        user_turns([{"role": "user", "content": "hi"}, {"role": "user", "content": " "}])


def test_bad_shapes() -> None:
    """Messages that are not objects, or content of a wrong type, are refused clearly."""
    with pytest.raises(InputError):
        user_turns(["hello"])  # type: ignore[list-item]
    with pytest.raises(InputError):
        content_text(42)


def test_word_count_handles_cjk() -> None:
    """CJK runs count about one word per two characters."""
    assert word_count("yes") == 1
    assert word_count("my name is Priya Shah") == 5
    assert 2 <= word_count("我的快递到哪了") <= 5


def test_short_followup_after_admitted_turn_is_rescued() -> None:
    """An order number after an in-domain turn is forwarded with the earlier intent, flagged."""
    previous = _routed(Route.LLM, "delivery_problem")
    out = rescue_followup(_routed(Route.OFF_TOPIC), _turn("NW-55120"), previous, POLICY)
    assert out.route is Route.LLM and out.intent == "delivery_problem"
    assert out.followup and out.reply is None


def test_followup_close_to_off_topic_stays_refused() -> None:
    """A short turn near an off-topic exemplar is refused even mid-conversation."""
    alone = _routed(Route.OFF_TOPIC)
    turn = _turn("who won the match?", nearest_in=None, nearest_off=0.7)
    assert rescue_followup(alone, turn, _routed(Route.LLM), POLICY) is alone


def test_long_turn_or_refused_context_is_not_a_followup() -> None:
    """Long turns, and turns after a refused turn, are judged alone."""
    alone = _routed(Route.OFF_TOPIC)
    assert rescue_followup(alone, _turn("word " * 20), _routed(Route.LLM), POLICY) is alone
    assert rescue_followup(alone, _turn("yes"), _routed(Route.OFF_TOPIC), POLICY) is alone
    assert rescue_followup(alone, _turn("yes"), None, POLICY) is alone


def test_followup_leaning_off_topic_stays_refused() -> None:
    """A short turn whose nearest exemplar is off-topic is not rescued, however loosely."""
    alone = _routed(Route.OFF_TOPIC)
    turn = _turn("what's the capital of Peru?", nearest_in=0.3, nearest_off=0.4)
    assert rescue_followup(alone, turn, _routed(Route.LLM), POLICY) is alone


def test_route_conversation_rescues_only_after_a_forwarded_turn() -> None:
    """A chat routes turn by turn: a low short reply after a served turn is a follow-up."""
    from gatekeeper.testing import tiny_catalog

    catalog = tiny_catalog()
    thresholds = Thresholds(0.5)
    served = Turn("where is my order", Judged(0.9, "order_status", "close", 0.9, None), 4)
    short = Turn("NW-1", Judged(0.1, "refund_request", "far", 0.1, None), 1)
    routed = route_conversation(
        [served, short], catalog=catalog, thresholds=thresholds, policy=POLICY
    )
    assert routed.route is Route.LLM and routed.followup and routed.intent == "order_status"
    alone = route_conversation([short], catalog=catalog, thresholds=thresholds, policy=POLICY)
    assert alone.route is Route.OFF_TOPIC and not alone.followup
