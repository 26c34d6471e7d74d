"""Conversation handling: judged turn, context and the follow-up rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gatekeeper.conversation import (
    NO_TEXT,
    UNREADABLE,
    FollowupPolicy,
    Turn,
    attachments_only,
    chat_messages,
    content_text,
    customer_turns,
    rescue_followup,
    route_conversation,
    user_turns,
    word_count,
)
from gatekeeper.decision import Judged, Route, Routed, Thresholds
from gatekeeper.errors import EmptyMessageError, InputError

POLICY = FollowupPolicy(max_words=12, off_topic_max=0.55, off_topic_gap=0.15, session_margin=0.1)
SERVED = Turn("my order is broken", Judged(0.9, "order_status", "close", 0.9, None), 4)
REFUSED = Turn("tell me a joke", Judged(0.1, None, "far", 0.1, 0.9), 4)


def _route(*turns: Turn) -> Routed:
    """``turns`` routed on the tiny catalog at threshold 0.5 under :data:`POLICY`."""
    from gatekeeper.testing import tiny_catalog

    return route_conversation(
        turns, catalog=tiny_catalog(), thresholds=Thresholds(0.5), policy=POLICY
    )


def _routed(route: Route, intent: str | None = "order_status") -> Routed:
    return Routed(route=route, intent=intent, threshold=0.5, reason="alone")


def _turn(
    text: str,
    nearest_in: float | None = 0.2,
    nearest_off: float | None = None,
    *,
    score: float = 0.2,
    asked: bool = False,
) -> Turn:
    judged = Judged(score, "refund", "why", nearest_in, nearest_off)
    return Turn(text, judged, word_count(text), asked)


def test_customer_turns_know_when_the_assistant_asked() -> None:
    """Each user turn carries whether the assistant's message before it asked a question."""
    messages = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "What's your name?"},
        {"role": "user", "content": "Maria Lopez"},
        {"role": "assistant", "content": "Thanks, it ships today."},
        {"role": "user", "content": "great"},
    ]
    assert [said[:2] for said in customer_turns(messages)] == [
        ("where is my order", False),
        ("Maria Lopez", True),
        ("great", False),
    ]


def test_an_answer_to_the_assistants_question_is_forwarded() -> None:
    """A name given on request in a served chat is forwarded with the chat's intent, flagged;
    a loose off-topic neighbour (0.34) is no veto."""
    previous = _routed(Route.LLM, "delivery_problem")
    turn = _turn("Maria Lopez", nearest_in=0.25, nearest_off=0.34, asked=True)
    out = rescue_followup(_routed(Route.OFF_TOPIC), turn, previous, POLICY)
    assert out.route is Route.LLM and out.intent == "delivery_problem"
    assert out.followup and out.reply is None


def test_an_answer_with_no_in_domain_neighbour_fetched_is_not_vetoed_on_an_unseen_gap() -> None:
    """A name whose fetched neighbours are all off-topic (a small catalog among many generic
    lines) is forwarded: the gap is measured to the least similar exemplar fetched, not to -1."""
    previous = _routed(Route.LLM, "repair_status")
    judged = Judged(-1.0, None, "no in-domain exemplar", None, 0.34, farthest=0.27)
    turn = Turn("Maria Lopez", judged, 2, asked=True)
    out = rescue_followup(_routed(Route.OFF_TOPIC, None), turn, previous, POLICY)
    assert out.route is Route.LLM and out.followup
    shown = Judged(-1.0, None, "no in-domain exemplar", None, 0.5, farthest=0.3)
    far = Turn("Maria Lopez", shown, 2, asked=True)  # a gap of at least 0.2 > 0.15: shown
    alone = _routed(Route.OFF_TOPIC, None)
    assert rescue_followup(alone, far, previous, POLICY) is alone


def test_the_gap_rule_at_one_is_off() -> None:
    """followup_off_topic_gap 1.0 (the default) never refuses, even with no in-domain
    neighbour fetched."""
    judged = Judged(-1.0, None, "no in-domain exemplar", None, 0.6, farthest=0.5)
    turn = Turn("Alessandro Phoenix", judged, 2, asked=True)
    out = rescue_followup(
        _routed(Route.OFF_TOPIC, None), turn, _routed(Route.LLM), FollowupPolicy()
    )
    assert out.followup


def test_in_session_a_turn_near_the_bar_passes() -> None:
    """Hysteresis: in a served chat, a turn within session_margin of the threshold passes."""
    near = _turn("haha my dog would love that", score=0.45)
    far = _turn("haha my dog would love that", score=0.3)
    assert rescue_followup(_routed(Route.OFF_TOPIC), near, _routed(Route.LLM), POLICY).followup
    alone = _routed(Route.OFF_TOPIC)
    assert rescue_followup(alone, far, _routed(Route.LLM), POLICY) is alone


def test_a_decision_names_the_bar_its_score_was_held_to() -> None:
    """threshold is the bar applied: the session's (threshold - margin) for a turn passed near
    the bar, the raised one (threshold + margin) for short small talk refused after a refusal,
    the plain one for an answer to the assistant's question (no bar lowered)."""
    from gatekeeper.conversation import after_refusal
    from gatekeeper.testing import tiny_catalog

    near = rescue_followup(
        _routed(Route.OFF_TOPIC), _turn("haha nice", score=0.45), _routed(Route.LLM), POLICY
    )
    assert near.followup and near.threshold == pytest.approx(0.5 - POLICY.session_margin)
    answer = _turn("Maria Lopez", nearest_in=0.25, asked=True)
    answered = rescue_followup(_routed(Route.OFF_TOPIC), answer, _routed(Route.LLM), POLICY)
    assert answered.followup and answered.threshold == 0.5
    loose = _routed(Route.LLM, intent="greeting")
    agree = after_refusal(loose, _turn("ok", score=0.55), POLICY, tiny_catalog())
    assert agree.route is Route.OFF_TOPIC
    assert agree.threshold == pytest.approx(0.5 + POLICY.session_margin)


def test_an_answer_to_the_assistants_question_gets_no_fixed_reply() -> None:
    """In a served chat, a turn answering the assistant's question is forwarded, not given a
    canned reply ("要的" after "需要帮您改成藏青色吗？" got *thanks*); unasked, or as the first
    turn, the fixed reply stands."""
    from gatekeeper.conversation import no_canned_answer

    canned = Routed(Route.CANNED, "thanks", 0.5, "alone", reply="You're welcome!")
    served = _routed(Route.LLM)
    answer = _turn("要的", score=0.9, asked=True)
    forwarded = no_canned_answer(canned, answer, served)
    assert forwarded.route is Route.LLM and forwarded.reply is None
    assert forwarded.intent == "thanks" and "answers the assistant's question" in forwarded.reason
    assert no_canned_answer(canned, _turn("thanks!", score=0.9), served) is canned
    assert no_canned_answer(canned, answer, None) is canned
    assert no_canned_answer(canned, answer, _routed(Route.OFF_TOPIC)) is canned


def test_a_clearly_off_topic_turn_stays_refused_in_session() -> None:
    """Close to an off-topic exemplar, or leaning off-topic by the gap: refused mid-chat."""
    alone = _routed(Route.OFF_TOPIC)
    close = _turn("who won the match?", nearest_in=0.3, nearest_off=0.7, score=0.45, asked=True)
    leaning = _turn("capital of Peru?", nearest_in=0.2, nearest_off=0.4, score=0.45, asked=True)
    assert rescue_followup(alone, close, _routed(Route.LLM), POLICY) is alone
    assert rescue_followup(alone, leaning, _routed(Route.LLM), POLICY) is alone


def test_after_a_refusal_there_is_no_benefit_of_the_doubt() -> None:
    """Short agreement after a refused turn is refused; no previous turn, no rescue."""
    alone = _routed(Route.OFF_TOPIC)
    agree = _turn("ok please", score=0.45, asked=True)
    assert rescue_followup(alone, agree, _routed(Route.OFF_TOPIC), POLICY) is alone
    assert rescue_followup(alone, agree, None, POLICY) is alone


def test_an_unasked_long_turn_far_from_the_bar_is_refused() -> None:
    """Not an answer (no question, or too long) and far below the bar: refused."""
    alone = _routed(Route.OFF_TOPIC)
    long_answer = _turn("word " * 20, asked=True)
    assert rescue_followup(alone, long_answer, _routed(Route.LLM), POLICY) is alone
    assert rescue_followup(alone, _turn("NW-1"), _routed(Route.LLM), POLICY) is alone


def test_route_conversation_rescues_only_in_a_served_chat() -> None:
    """A chat routes turn by turn: an answer after a served turn passes, alone it does not."""
    from gatekeeper.testing import tiny_catalog

    catalog = tiny_catalog()
    thresholds = Thresholds(0.5)
    served = Turn("where is my order", Judged(0.9, "order_status", "close", 0.9, None), 4)
    short = Turn("NW-1", Judged(0.1, "refund_request", "far", 0.1, None), 1, asked=True)
    routed = route_conversation(
        [served, short], catalog=catalog, thresholds=thresholds, policy=POLICY
    )
    assert routed.route is Route.LLM and routed.followup and routed.intent == "order_status"
    alone = route_conversation([short], catalog=catalog, thresholds=thresholds, policy=POLICY)
    assert alone.route is Route.OFF_TOPIC and not alone.followup
    assert alone.intent is None and alone.nearest_intent == "refund_request"


def test_a_turn_of_attachments_only_follows_the_conversation() -> None:
    """A photo with no text is forwarded as a follow-up in a served chat, refused right after a
    refusal, and forwarded (not as a follow-up) as the first turn."""
    photo = Turn("", NO_TEXT, 0, asked=True, no_text=True)
    after_served = _route(SERVED, photo)
    assert after_served.route is Route.LLM and after_served.followup
    assert after_served.intent == "order_status"
    after_refusal = _route(REFUSED, photo)
    assert after_refusal.route is Route.OFF_TOPIC and after_refusal.intent is None
    assert after_refusal.reply == "Sorry, I only help with orders."
    first = _route(photo)
    assert first.route is Route.LLM and not first.followup and first.intent is None


def test_a_turn_with_attachments_gets_no_fixed_reply() -> None:
    """ "hi" with a photo is forwarded, not greeted (the greeting dropped the photo), in a
    first turn, a served chat and after a refusal; an off-topic text with a photo is still
    refused, and "hi" alone still gets the greeting."""
    hello = Judged(0.9, "greeting", "close", 0.9, None)
    with_photo = Turn("hi", hello, 1, attached=True)
    for turns in [(with_photo,), (SERVED, with_photo), (REFUSED, with_photo)]:
        routed = _route(*turns)
        assert routed.route is Route.LLM and routed.reply is None
        assert routed.intent == "greeting" and "attachments" in routed.reason
    assert _route(Turn("hi", hello, 1)).route is Route.CANNED
    assert _route(replace(REFUSED, attached=True)).route is Route.OFF_TOPIC


def test_a_photo_captioned_with_an_emoji_is_a_photo() -> None:
    """A first turn of a photo whose caption the model reads nothing of ("😢") is forwarded
    like the photo alone (it was refused for its caption)."""
    captioned = Turn("😢", UNREADABLE, 0, attached=True)
    first = _route(captioned)
    assert first.route is Route.LLM and "attachments" in first.reason
    assert _route(Turn("😢", UNREADABLE, 0)).route is Route.OFF_TOPIC
    assert _route(REFUSED, captioned).route is Route.OFF_TOPIC


def test_the_gates_own_greeting_asks_nothing_in_particular() -> None:
    """After only a canned greeting ("How can I help?"), a short off-topic request is judged
    alone, not taken for an answer (13 of 16 such requests were forwarded), while a turn near
    the bar still gets the session margin; once a turn went to the LLM, a short answer after a
    canned reply is an answer again."""
    hello = Turn("hi", Judged(0.9, "greeting", "close", 0.9, None), 1)
    poem = Turn("write a poem", Judged(0.1, None, "far", 0.1, 0.2), 3, asked=True)
    vague = Turn("I have a question", Judged(0.45, None, "near", 0.45, 0.3), 4, asked=True)
    order = Turn("where is my order", Judged(0.9, "order_status", "close", 0.9, None), 4)
    again = Turn("hello again", Judged(0.9, "greeting", "close", 0.9, None), 2)
    assert _route(hello).route is Route.CANNED
    assert _route(hello, poem).route is Route.OFF_TOPIC
    assert _route(hello, vague).followup
    assert _route(hello, order, again).route is Route.CANNED
    assert _route(hello, order, again, poem).followup  # an answer to "How can I help?" now


def test_a_turn_the_model_cannot_read_follows_the_conversation_but_never_opens_one() -> None:
    """Text the model reads nothing of ("👍") is a follow-up in a served chat and refused
    right after a refusal, like a photo, but refused as a first turn (it scored a fixed
    0.333 there, so every such text was forwarded)."""
    thumbs = Turn("👍", UNREADABLE, 0, asked=True)
    after_served = _route(SERVED, thumbs)
    assert after_served.route is Route.LLM and after_served.followup
    assert "nothing the model can read" in after_served.reason
    assert _route(REFUSED, thumbs).route is Route.OFF_TOPIC
    first = _route(thumbs)
    assert first.route is Route.OFF_TOPIC and first.reply == "Sorry, I only help with orders."
    assert first.reason == "nothing the model can read, first turn"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([{"type": "image_url", "image_url": {"url": "data:,"}}], True),
        ([{"type": "text", "text": " "}, {"type": "input_audio"}], True),
        ([{"type": "text", "text": "see photo"}, {"type": "image_url"}], False),
        ([{"no": "type"}], False),
        ([{"type": "input_text", "text": "write an essay"}], False),
        ([{"type": "Text", "text": "write an essay"}], False),
        ([{"type": []}, {"type": {"a": 1}}], False),
        ([{"type": "image_url"}, {"type": "text", "text": "\u200b"}], True),
        ([{"type": "text", "text": ""}], False),
        ([], False),
        ("", False),
    ],
)
def test_attachments_only_needs_a_typed_non_text_part_and_no_text(
    content: object, expected: bool
) -> None:
    """Only content with a typed non-text part and no text counts as attachments only."""
    assert attachments_only(content) is expected


def test_customer_turns_say_which_came_with_attachments() -> None:
    """Each customer turn says whether it came with a typed non-text part, text or not."""
    photo = {"type": "image_url", "image_url": {"url": "x"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, photo]},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [" ", photo, {"type": "text", "text": "broken"}]},
        {"role": "user", "content": [{"no": "type"}, "where is it"]},
    ]
    assert [said.attached for said in customer_turns(messages)] == [True, True, False]


def test_customer_turns_keep_a_last_turn_of_attachments_as_empty_text() -> None:
    """A last turn of attachments only is kept as ''; an untyped empty part is still empty."""
    photo = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    messages = [{"role": "user", "content": "it broke"}, {"role": "assistant", "content": "Photo?"}]
    assert customer_turns([*messages, photo]) == [("it broke", False, False), ("", True, True)]
    with pytest.raises(EmptyMessageError):
        customer_turns([*messages, {"role": "user", "content": [{"no": "type"}]}])


def _after_a_refusal(text: str, intent: str, score: float, nearest: float | None = None) -> Routed:
    """``text`` (``intent`` at ``score``, its nearest exemplar at ``nearest``, else ``score``)
    right after a refused request, on the tiny catalog at threshold 0.5 (bar after a refusal
    0.6) with a fixed reply only for a match of at least 0.7."""
    from gatekeeper.testing import tiny_catalog

    near = score if nearest is None else nearest
    turn = Turn(text, Judged(score, intent, "near", near, None), word_count(text))
    thresholds = Thresholds(0.5, canned_min_similarity=0.7)
    return route_conversation(
        [REFUSED, turn], catalog=tiny_catalog(), thresholds=thresholds, policy=POLICY
    )


def test_after_a_refusal_short_small_talk_is_refused_and_a_short_question_served() -> None:
    """Right after a refused request, "ok" nearest a greeting is refused like the request unless
    it is clearly one (a fixed-reply match over the raised bar); "NW-12345" just over the
    threshold is served as a new question (the raised bar refused it), and a long turn is
    judged alone."""
    agree = _after_a_refusal("ok", "greeting", 0.55)
    assert (agree.route, agree.intent, agree.nearest_intent) == (Route.OFF_TOPIC, None, "greeting")
    assert agree.reply == "Sorry, I only help with orders."
    question = _after_a_refusal("NW-12345", "order_status", 0.55)
    assert (question.route, question.intent) == (Route.LLM, "order_status")
    assert _after_a_refusal("hello", "greeting", 0.9).route is Route.CANNED
    sentence = "ok well then could you just say hello to me nicely and properly like a friend?"
    assert _after_a_refusal(sentence, "greeting", 0.55).route is Route.LLM
    assert _after_a_refusal("ok", "greeting", 0.3).route is Route.OFF_TOPIC
    assert _after_a_refusal("hi", "greeting", 0.55, nearest=0.8).route is Route.OFF_TOPIC


def test_conversation_settings_are_calibrated_on_labelled_chats(tmp_path: Path) -> None:
    """calibrate_conversations picks settings passing the target share of customer turns and,
    among those, refusing the most drift turns; the chats' test split never enters."""

    from gatekeeper.eval.conversations import calibrate_conversations
    from gatekeeper.eval.datasets import load_dataset
    from gatekeeper.testing import make_gate

    gate = make_gate(tmp_path / "data", gate={"threshold": 0.5})
    gate.index()
    chats = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_chats.jsonl"
    found = calibrate_conversations(gate, load_dataset(chats), 1.0)
    assert found.reached and found.in_domain_pass_rate == 1.0
    assert found.n_in_domain == 3 and found.n_off_topic == 1
    assert found.off_topic_block_rate == 1.0  # the joke stays refused


def test_user_turns_keeps_recent_user_messages() -> None:
    """Only user turns count, the last few, oldest first; content parts are joined."""
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "image_url"}]},
    ]
    assert user_turns(messages) == ["one", "two"]


def test_text_under_any_part_type_is_read() -> None:
    """Text sent as input_text, output_text or an unexpected type is read, not skipped."""
    content = [
        {"type": "input_text", "text": "one"},
        {"type": "Text", "text": "two"},
        {"type": "image_url", "image_url": {"url": "x"}},
    ]
    assert content_text(content) == "one\ntwo"


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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([42], r"messages\[0\]\.content\[0\] must be an object"),
        ([{"type": "text", "text": 7}], r"content\[0\]: a 'text' part needs a string 'text'"),
        (["hi", {"type": "input_text"}], r"content\[1\]: a 'input_text' part needs a string"),
    ],
)
def test_malformed_content_parts_are_refused(content: list[object], problem: str) -> None:
    """A part that is no object, or a text part without a string text, is an InputError naming
    the part (as the Responses API's parser says; a number's text is not the customer's)."""
    with pytest.raises(InputError, match=problem):
        chat_messages([{"role": "user", "content": content}])
    assert chat_messages([{"role": "user", "content": ["hi", {"type": "image_url"}]}])


def test_word_count_handles_cjk() -> None:
    """CJK runs count about one word per two characters."""
    assert word_count("yes") == 1
    assert word_count("my name is Priya Shah") == 5
    assert 2 <= word_count("我的快递到哪了") <= 5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nguyen.minh.tuan@gmail.com", 1),
        ("NW-83121", 1),
        ("(977) 625-2661", 1),
        ("+41 79 123 45 67", 1),
        ("Tanvir Hossain, +880 1712 345678", 3),
        ("José María García-López", 3),
        ("yes that's the one", 4),
        ("ok!! 👍", 1),
        ("I have 2 kids and 3 dogs", 7),
    ],
)
def test_word_count_counts_an_answer_as_a_customer_would(text: str, words: int) -> None:
    """An e-mail address, an order id or a phone number (however grouped) is one word."""
    assert word_count(text) == words


def test_conversation_calibration_takes_the_gentlest_setting_within_one_standard_error() -> None:
    """Among settings passing the target, the gentlest whose drift refusals are within one
    standard error of the best wins, not the strictest; with none passing, the one passing most."""
    from gatekeeper.conversation import FollowupPolicy
    from gatekeeper.eval.conversations import choose_policy

    gentle, strict, stricter = (FollowupPolicy(session_margin=m) for m in (0.3, 0.1, 0.0))
    harsh = FollowupPolicy(session_margin=0.2, off_topic_max=0.4)
    rows = [(gentle, 1.0, 0.10), (FollowupPolicy(), 1.0, 0.22), (strict, 1.0, 0.27)]
    rows += [(stricter, 0.99, 0.60), (harsh, 1.0, 0.22)]
    # best feasible 0.27 on 45 drift turns: one standard error is 0.066, so 0.22 is as good
    chosen, reached = choose_policy(rows, 0.995, 45)
    assert reached and chosen == (FollowupPolicy(), 1.0, 0.22)  # the first (gentlest) of two
    # with 1,000 drift turns the error is 0.014: 0.22 is worse than 0.27, beyond noise
    assert choose_policy(rows, 0.995, 1000)[0][0] == strict
    chosen, reached = choose_policy([(stricter, 0.9, 0.8), (gentle, 0.95, 0.1)], 0.995, 45)
    assert not reached and chosen[0] == gentle


def test_a_repeat_of_an_off_topic_exemplar_is_clearly_off_topic_despite_float_noise() -> None:
    """off_topic_max 1 means "a repeat of an off-topic exemplar": a repeat embedded in a batch
    scored 0.99999988 and was forwarded as a follow-up ("tell me a joke" after a served chat);
    0.9999 is no repeat."""
    from gatekeeper.conversation import clearly_off_topic

    policy = FollowupPolicy(off_topic_max=1.0)
    repeat = Judged(0.1, None, "far", 0.2, 0.99999988)
    assert clearly_off_topic(repeat, policy)
    assert not clearly_off_topic(Judged(0.1, None, "far", 0.2, 0.9999), policy)
