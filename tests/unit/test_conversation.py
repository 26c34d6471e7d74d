"""Conversation handling: judged turn, context and the follow-up rule."""

from __future__ import annotations

import pytest

from gatekeeper.conversation import as_followup, content_text, user_turns, word_count
from gatekeeper.decision import Decision, Route
from gatekeeper.errors import EmptyMessageError, InputError
from gatekeeper.types import Neighbour


def _decision(route: Route, intent: str | None = "order_status") -> Decision:
    return Decision(route=route, intent=intent, score=0.2, threshold=0.5, reason="alone")


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
    """An order number after an in-domain turn is forwarded with the earlier intent."""
    previous = _decision(Route.LLM, "delivery_problem")
    out = as_followup(
        _decision(Route.OFF_TOPIC),
        [Neighbour("a", "x", "refund", 0.2)],
        "NW-55120",
        previous,
        max_words=12,
        off_topic_max=0.55,
    )
    assert out.route is Route.LLM and out.intent == "delivery_problem"
    assert "follow-up" in out.reason and out.reply is None


def test_followup_close_to_off_topic_stays_refused() -> None:
    """A short turn near an off-topic exemplar is refused even mid-conversation."""
    alone = _decision(Route.OFF_TOPIC)
    out = as_followup(
        alone,
        [Neighbour("a", "who won", "off_topic", 0.7)],
        "who won the match?",
        _decision(Route.LLM),
        max_words=12,
        off_topic_max=0.55,
    )
    assert out is alone


def test_long_turn_or_refused_context_is_not_a_followup() -> None:
    """Long turns, and turns after a refused turn, are judged alone."""
    alone = _decision(Route.OFF_TOPIC)
    long_text = "word " * 20
    assert (
        as_followup(alone, [], long_text, _decision(Route.LLM), max_words=12, off_topic_max=0.55)
        is alone
    )
    assert (
        as_followup(alone, [], "yes", _decision(Route.OFF_TOPIC), max_words=12, off_topic_max=0.55)
        is alone
    )
    assert as_followup(alone, [], "yes", None, max_words=12, off_topic_max=0.55) is alone


def test_followup_leaning_off_topic_stays_refused() -> None:
    """A short turn whose nearest exemplar is off-topic is not rescued, however loosely."""
    alone = _decision(Route.OFF_TOPIC)
    neighbours = [
        Neighbour("a", "capital of France?", "off_topic", 0.4),
        Neighbour("b", "where is my order", "order_status", 0.3),
    ]
    out = as_followup(
        alone,
        neighbours,
        "what's the capital of Peru?",
        _decision(Route.LLM),
        max_words=12,
        off_topic_max=0.55,
    )
    assert out is alone
