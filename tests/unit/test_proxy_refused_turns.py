"""What the upstream is sent after a refusal: the chat without the turns the gate refused, in
chat completions and the Responses API (in-process proxy, fake upstream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.errors import EmbeddingError
from gatekeeper.gate import Gatekeeper
from gatekeeper.refusals import without_refused
from gatekeeper.settings import Settings
from gatekeeper.testing import tiny_catalog
from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import BreakableEmbedder
from tests.support.proxy import OFF_TOPIC_REPLY, serving

JOKE = {"role": "user", "content": "tell me a joke"}
REFUSAL = {"role": "assistant", "content": OFF_TOPIC_REPLY}
ORDER = {"role": "user", "content": "where is my order"}
SYSTEM = {"role": "system", "content": "You are the shop's assistant."}


def _sent(upstream: FakeUpstream) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(upstream.requests[-1].content)
    return body


def test_without_refused_drops_each_refusal_and_the_turns_it_answered() -> None:
    """Each assistant refusal (text, parts, or a structured-output refusal) goes, with the
    customer turns right before it; other turns, the system prompt and other replies stay."""
    parts = {"role": "assistant", "content": [{"type": "output_text", "text": OFF_TOPIC_REPLY}]}
    structured = {"role": "assistant", "content": None, "refusal": f" {OFF_TOPIC_REPLY}\n"}
    served = {"role": "assistant", "content": "It ships today."}
    chat = [SYSTEM, JOKE, JOKE, REFUSAL, ORDER, served, JOKE, parts, JOKE, structured, ORDER]
    assert without_refused(chat, {OFF_TOPIC_REPLY}) == [SYSTEM, ORDER, served, ORDER]
    assert without_refused(chat, set()) == chat
    other = {"role": "assistant", "content": "Sorry, that item is sold out."}
    assert without_refused([JOKE, other, ORDER], {OFF_TOPIC_REPLY}) == [JOKE, other, ORDER]
    odd: list[Any] = ["text", {"role": "assistant", "content": 7}, {"type": "tool"}, ORDER]
    assert without_refused(odd, {OFF_TOPIC_REPLY}) == odd  # not chat messages: kept, no error


async def test_a_chat_forwarded_after_a_refusal_leaves_the_refused_turn_out(
    gate: Gatekeeper,
) -> None:
    """An in-domain turn after a refused one is forwarded without the refused request and its
    refusal (the LLM was handed "tell me a joke" again); the rest of the body is unchanged."""
    upstream = FakeUpstream()
    body = {"model": "m", "temperature": 0.2, "messages": [SYSTEM, JOKE, REFUSAL, ORDER]}
    async with serving(gate, upstream) as client:
        answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.headers["x-gatekeeper-route"] == "llm"
    assert _sent(upstream) == {**body, "messages": [SYSTEM, ORDER]}


async def test_a_chat_without_refusals_is_forwarded_byte_for_byte(
    gate: Gatekeeper,
) -> None:
    """A chat with no refusal in it reaches the upstream as the client sent it, to the byte."""
    upstream = FakeUpstream()
    raw = b'{"messages": [{"role": "user", "content": "where is my order"}],  "model":"m"}'
    async with serving(gate, upstream) as client:
        await client.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert upstream.requests[-1].content == raw


async def test_forward_refused_turns_keeps_the_chat_as_sent(
    gate: Gatekeeper,
) -> None:
    """server.forward_refused_turns forwards the refused turns too."""
    upstream = FakeUpstream()
    body = {"model": "m", "messages": [JOKE, REFUSAL, ORDER]}
    async with serving(gate, upstream, forward_refused_turns=True) as client:
        await client.post("/v1/chat/completions", json=body)
    assert _sent(upstream) == body


@pytest.mark.parametrize("stream", [False, True])
async def test_a_responses_input_leaves_the_refused_turn_out(
    gate: Gatekeeper,
    stream: bool,
) -> None:
    """A Responses API input list that holds a refused exchange (the proxy's refusal as an
    output message) is forwarded without it; tool items and instructions stay."""
    upstream = FakeUpstream()
    refusal = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": OFF_TOPIC_REPLY}],
    }
    tool = {"type": "function_call_output", "call_id": "c1", "output": "{}"}
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "stream": stream,
        "input": [JOKE, refusal, tool, ORDER],
    }
    async with serving(gate, upstream) as client:
        await client.post("/v1/responses", json=body)
    assert _sent(upstream) == {**body, "input": [tool, ORDER]}


def test_a_refusal_after_the_last_customer_turn_takes_nothing_away() -> None:
    """The turn being judged is never removed: a chat ending in a refusal, or whose refusal
    text comes from an assistant message calling tools (the gate's refusal calls none), is
    kept whole (the admitted turn was dropped, leaving an empty chat or an orphan tool result)."""
    ending = [SYSTEM, ORDER, REFUSAL]
    assert without_refused(ending, {OFF_TOPIC_REPLY}) == ending
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    calling = {"role": "assistant", "content": OFF_TOPIC_REPLY, "tool_calls": [call]}
    tools = [ORDER, calling, {"role": "tool", "tool_call_id": "c1", "content": "ok"}, ORDER]
    assert without_refused(tools, {OFF_TOPIC_REPLY}) == tools


def test_a_refusal_after_a_system_message_or_item_reference_takes_the_turn_before_it() -> None:
    """A system message or item reference between a refused turn and its refusal stays."""
    # and the turn still goes; a tool call or result between them means it was answered
    noted = [SYSTEM, JOKE, SYSTEM, REFUSAL, ORDER]
    assert without_refused(noted, {OFF_TOPIC_REPLY}) == [SYSTEM, SYSTEM, ORDER]
    reference = {"type": "item_reference", "id": "msg_1"}
    refusal = {"type": "message", "role": "assistant", "content": OFF_TOPIC_REPLY}
    developer = {"role": "developer", "content": "Be brief."}
    items = [JOKE, reference, developer, refusal, ORDER]
    assert without_refused(items, {OFF_TOPIC_REPLY}) == [reference, developer, ORDER]


def test_a_refusal_whose_turn_stays_stays_too() -> None:
    """A refusal none of whose turns is taken out (a tool result between them: the turn was
    answered) stays with it: the LLM is never shown a turn without the refusal it got."""
    tool = {"type": "function_call_output", "call_id": "c1", "output": "{}"}
    answered = [JOKE, tool, REFUSAL, ORDER]
    assert without_refused(answered, {OFF_TOPIC_REPLY}) == answered
    result = {"role": "tool", "tool_call_id": "c", "content": "x"}
    assert without_refused([JOKE, result, REFUSAL, ORDER], {OFF_TOPIC_REPLY}) == [
        JOKE,
        result,
        REFUSAL,
        ORDER,
    ]
    assert without_refused([REFUSAL, ORDER], {OFF_TOPIC_REPLY}) == [REFUSAL, ORDER]


async def test_a_chat_whose_refused_turn_was_answered_keeps_its_refusal(
    gate: Gatekeeper,
) -> None:
    """A chat with a tool result between a turn and the gate's refusal is forwarded with both
    (the turn was kept, its refusal was dropped: the LLM saw the request unanswered)."""
    upstream = FakeUpstream()
    result = {"role": "tool", "tool_call_id": "c", "content": "x"}
    body = {"model": "m", "messages": [JOKE, result, REFUSAL, ORDER]}
    async with serving(gate, upstream) as client:
        answer = await client.post("/v1/chat/completions", json=body)
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert _sent(upstream)["messages"] == [JOKE, result, REFUSAL, ORDER]


@pytest.mark.parametrize(
    "content",
    [
        f"  {OFF_TOPIC_REPLY.replace(' ', '  ')}\n",
        OFF_TOPIC_REPLY.replace(" ", "\N{NO-BREAK SPACE}"),
        OFF_TOPIC_REPLY.replace("S", "\N{FULLWIDTH LATIN CAPITAL LETTER S}"),
        [
            {"type": "text", "text": OFF_TOPIC_REPLY[:9]},
            {"type": "text", "text": OFF_TOPIC_REPLY[9:]},
        ],
        [
            {"type": "output_text", "text": "Sorry,"},
            {"type": "output_text", "text": "I only help"},
            {"type": "output_text", "text": " with orders."},
        ],
    ],
    ids=["white-space", "no-break-spaces", "full-width", "split-parts", "split-at-spaces"],
)
def test_a_refusal_rerendered_by_a_client_still_takes_its_turn_out(content: Any) -> None:
    """A refusal sent back re-rendered (white space runs, NFKC forms, split across text parts
    of one message) still counts as the refusal; a changed letter case or text does not."""
    rerendered = {"role": "assistant", "content": content}
    assert without_refused([JOKE, rerendered, ORDER], {OFF_TOPIC_REPLY}) == [ORDER]
    for edited in (OFF_TOPIC_REPLY.lower(), OFF_TOPIC_REPLY[:-1]):
        chat = [JOKE, {"role": "assistant", "content": edited}, ORDER]
        assert without_refused(chat, {OFF_TOPIC_REPLY}) == chat


async def test_a_responses_item_reference_before_a_refusal_still_drops_the_refused_turn(
    gate: Gatekeeper,
) -> None:
    """The proxy drops a refused Responses turn and its refusal over an item reference."""
    upstream = FakeUpstream()
    reference = {"type": "item_reference", "id": "msg_1"}
    body = {"model": "m", "input": [JOKE, reference, REFUSAL, ORDER]}
    async with serving(gate, upstream) as client:
        await client.post("/v1/responses", json=body)
    assert _sent(upstream) == {**body, "input": [reference, ORDER]}


async def test_a_responses_greeting_with_a_photo_reaches_the_upstream(
    gate: Gatekeeper,
) -> None:
    """ "hello" with an input_image on /v1/responses is forwarded, as on chat completions (it
    got the canned greeting, and the photo was lost)."""
    upstream = FakeUpstream()
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    turn = {"role": "user", "content": [{"type": "input_text", "text": "hello"}, image]}
    async with serving(gate, upstream) as client:
        answer = await client.post("/v1/responses", json={"model": "m", "input": [turn]})
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert _sent(upstream)["input"] == [turn]


async def test_a_local_answer_never_keeps_a_refused_exchange_for_the_upstream(
    gate: Gatekeeper,
) -> None:
    """A canned Responses answer to an input holding a refused exchange, continued with
    previous_response_id, sends the upstream the turns it missed without that exchange (the
    joke and the refusal reached it)."""
    upstream = FakeUpstream()
    body = {"model": "m", "input": [JOKE, REFUSAL, {"role": "user", "content": "hello"}]}
    async with serving(gate, upstream) as client:
        canned = await client.post("/v1/responses", json=body)
        assert canned.headers["x-gatekeeper-route"] == "canned"
        follow = {"model": "m", "input": "where is my order"}
        await client.post(
            "/v1/responses", json={**follow, "previous_response_id": canned.json()["id"]}
        )
    sent = json.dumps(_sent(upstream))
    assert "joke" not in sent and OFF_TOPIC_REPLY not in sent and "hello" in sent


async def test_a_local_answer_keeps_what_the_client_sent_for_the_upstream(
    gate: Gatekeeper,
) -> None:
    """Continuing a canned answer sends the upstream the turns it missed as the client sent
    them, a photo and a tool item included (the photo was lost, and an empty user message
    sent); continuing a refusal sends the earlier in-domain turns but not the refused one (all
    were lost)."""
    upstream = FakeUpstream()
    photo = {"role": "user", "content": [{"type": "input_image", "image_url": "data:,x"}]}
    tool = {"type": "function_call_output", "call_id": "c1", "output": "{}"}
    served = {"role": "assistant", "content": "It ships tomorrow."}
    hello = {"role": "user", "content": "hello"}
    async with serving(gate, upstream) as client:
        canned = await client.post(
            "/v1/responses", json={"model": "m", "input": [photo, served, tool, hello]}
        )
        assert canned.headers["x-gatekeeper-route"] == "canned"
        follow = {"model": "m", "input": "where is my order"}
        await client.post(
            "/v1/responses", json={**follow, "previous_response_id": canned.json()["id"]}
        )
        assert _sent(upstream)["input"][:4] == [photo, served, tool, hello]
        refused = await client.post(
            "/v1/responses", json={"model": "m", "input": [ORDER, served, JOKE]}
        )
        assert refused.headers["x-gatekeeper-route"] == "off_topic"
        await client.post(
            "/v1/responses", json={**follow, "previous_response_id": refused.json()["id"]}
        )
    assert _sent(upstream)["input"] == [
        ORDER,
        served,
        {"role": "user", "content": "where is my order"},
    ]


def test_a_large_item_is_kept_for_the_upstream_by_its_text() -> None:
    """An input item over MAX_KEPT_ITEM (a photo inline) is kept by its text, or left out
    when it has none, so a remembered answer costs little memory."""
    from gatekeeper.interfaces.proxy.threads import MAX_KEPT_ITEM, local_thread

    big = "data:image/png;base64," + "A" * MAX_KEPT_ITEM
    captioned = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "the box"},
            {"type": "input_image", "image_url": big},
        ],
    }
    bare = {"role": "user", "content": [{"type": "input_image", "image_url": big}]}
    thread = local_thread([ORDER], [captioned, bare, ORDER], "Hi!", None, None, refused=False)
    assert list(thread.unseen) == [
        {"role": "user", "content": "the box"},
        ORDER,
        {"role": "assistant", "content": "Hi!"},
    ]


def _reference(item_id: str) -> dict[str, str]:
    return {"type": "item_reference", "id": item_id}


async def test_a_responses_reference_to_an_item_taken_out_is_dropped(
    gate: Gatekeeper,
) -> None:
    """An item_reference naming an item taken out as refused (by the id the client gave the
    refused turn, or the refusal's own) goes too (the upstream would resolve it and put the
    refused request back); a reference to any other item stays."""
    upstream = FakeUpstream()
    joke = {"type": "message", "id": "msg_joke", **JOKE}
    refusal = {
        "type": "message",
        "id": "msg_refusal",
        "role": "assistant",
        "content": [{"type": "output_text", "text": OFF_TOPIC_REPLY}],
    }
    stored = _reference("msg_up_1")
    items = [stored, joke, refusal, _reference("msg_joke"), _reference("msg_refusal"), ORDER]
    async with serving(gate, upstream) as client:
        answer = await client.post("/v1/responses", json={"model": "m", "input": items})
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert _sent(upstream)["input"] == [stored, ORDER]


async def test_a_responses_reference_to_the_proxys_refusal_takes_the_refused_turn_out(
    gate: Gatekeeper,
) -> None:
    """A later input giving the proxy's refusal by reference (its output item's id) loses it
    and the customer's turn before it, as the refusal's text would; a reference to its canned
    answer is sent as that answer (the upstream never stored it: the reference failed there);
    one to an item stored upstream is forwarded as sent."""
    upstream = FakeUpstream()
    hello = {"role": "user", "content": "hello"}
    async with serving(gate, upstream) as client:
        refused = await client.post("/v1/responses", json={"model": "m", "input": [JOKE]})
        canned = await client.post("/v1/responses", json={"model": "m", "input": [hello]})
        assert refused.headers["x-gatekeeper-route"] == "off_topic"
        assert canned.headers["x-gatekeeper-route"] == "canned"
        to_refusal = _reference(refused.json()["output"][0]["id"])
        to_canned = _reference(canned.json()["output"][0]["id"])
        stored = _reference("msg_up_1")
        items = [stored, hello, to_canned, JOKE, to_refusal, ORDER]
        await client.post("/v1/responses", json={"model": "m", "input": items})
    text = canned.json()["output"][0]["content"][0]["text"]
    reply = {"role": "assistant", "content": text}
    assert _sent(upstream)["input"] == [stored, hello, reply, ORDER]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_reference_to_the_proxys_refusal_by_its_response_id_takes_the_turn_out(
    gate: Gatekeeper, stream: bool
) -> None:
    """An item_reference naming the proxy's refusal by its response id (resp_gk_...), not its
    output message's, counts as that refusal too: it and the refused turn before it stay out
    (both were forwarded as sent)."""
    upstream = FakeUpstream()
    async with serving(gate, upstream) as client:
        refused = await client.post("/v1/responses", json={"model": "m", "input": [JOKE]})
        assert refused.headers["x-gatekeeper-route"] == "off_topic"
        to_refusal = _reference(refused.json()["id"])
        body = {"model": "m", "stream": stream, "input": [JOKE, to_refusal, ORDER]}
        answer = await client.post("/v1/responses", json=body)
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert _sent(upstream)["input"] == [ORDER]


async def test_forward_refused_turns_sends_a_referenced_refusal_as_its_text(
    gate: Gatekeeper,
) -> None:
    """With server.forward_refused_turns the chat goes as sent, but a reference to the proxy's
    own refusal is sent as the refusal's text, which the upstream can read (it never stored
    the item the reference names)."""
    upstream = FakeUpstream()
    async with serving(gate, upstream, forward_refused_turns=True) as client:
        refused = await client.post("/v1/responses", json={"model": "m", "input": [JOKE]})
        to_refusal = _reference(refused.json()["output"][0]["id"])
        await client.post("/v1/responses", json={"model": "m", "input": [JOKE, to_refusal, ORDER]})
    assert _sent(upstream)["input"] == [JOKE, REFUSAL, ORDER]


async def test_a_reference_to_a_refusal_the_proxy_does_not_hold_is_forwarded_as_sent(
    gate: Gatekeeper,
) -> None:
    """With no answers remembered (server.response_threads 0: as after a restart or on another
    replica) the proxy cannot tell its refusal's item from its canned answer's: the reference
    and the turn before it are forwarded as sent (the upstream never stored that item)."""
    upstream = FakeUpstream()
    async with serving(gate, upstream, response_threads=0) as client:
        refused = await client.post("/v1/responses", json={"model": "m", "input": [JOKE]})
        to_refusal = _reference(refused.json()["output"][0]["id"])
        await client.post("/v1/responses", json={"model": "m", "input": [JOKE, to_refusal, ORDER]})
    assert _sent(upstream)["input"] == [JOKE, to_refusal, ORDER]


async def test_a_gate_failure_keeps_the_customers_turn_for_the_upstream(tmp_path: Path) -> None:
    """A Responses request the gate could not judge (fail_closed: the unavailable reply) is no
    refusal: continued with previous_response_id once the gate works, the upstream is sent the
    customer's question and the reply (the question was dropped as if refused)."""
    embedder = BreakableEmbedder()
    settings = Settings(
        data_dir=tmp_path,
        gate={
            "threshold": 0.35,
            "rule": "contrast",
            "allow_uncalibrated": True,
            "on_error": "fail_closed",
        },
    )
    gate = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=embedder)
    gate.index()
    upstream = FakeUpstream()
    question = {"role": "user", "content": "where is my order NW-1"}
    async with serving(gate, upstream) as client:
        embedder.failure = EmbeddingError("the model is not loaded")
        failed = await client.post("/v1/responses", json={"model": "m", "input": [question]})
        assert failed.headers["x-gatekeeper-gate-error"] == "EmbeddingError"
        embedder.failure = None
        follow = {
            "model": "m",
            "input": "track my order",
            "previous_response_id": failed.json()["id"],
        }
        await client.post("/v1/responses", json=follow)
    sent = _sent(upstream)["input"]
    assert sent[0] == question
    assert sent[1] == {"role": "assistant", "content": settings.gate.unavailable_reply}


@pytest.mark.parametrize("response_threads", [10, 0])
async def test_the_proxys_own_answer_given_back_inline_reaches_the_upstream_without_its_id(
    gate: Gatekeeper, response_threads: int
) -> None:
    """A stateless client that does `input += response.output` after a canned answer sends
    back its output message (id msg_gk_...): the next admitted turn forwards it as a plain
    assistant message, without the id and status the upstream never stored (it answered 400/404
    "Item with id ... not found"), held by this process or not."""
    upstream = FakeUpstream()
    hello = {"role": "user", "content": "hello"}
    async with serving(gate, upstream, response_threads=response_threads) as client:
        canned = await client.post("/v1/responses", json={"model": "m", "input": [hello]})
        assert canned.headers["x-gatekeeper-route"] == "canned"
        [message] = canned.json()["output"]
        assert message["id"].startswith("msg_gk_")
        body = {"model": "m", "input": [hello, message, ORDER]}
        answer = await client.post("/v1/responses", json=body)
    assert answer.headers["x-gatekeeper-route"] == "llm"
    plain = {k: v for k, v in message.items() if k not in ("id", "status")}
    assert _sent(upstream)["input"] == [hello, plain, ORDER]
    assert b"msg_gk_" not in upstream.requests[-1].content


async def test_a_refusal_given_back_inline_is_forwarded_without_its_id_when_kept(
    gate: Gatekeeper,
) -> None:
    """Under server.forward_refused_turns the proxy's refusal given back inline is forwarded,
    without its msg_gk_ id; the upstream's own items keep theirs."""
    upstream = FakeUpstream()
    stored = {
        "type": "message",
        "id": "msg_up_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "It ships today.", "annotations": []}],
    }
    async with serving(gate, upstream, forward_refused_turns=True) as client:
        refused = await client.post("/v1/responses", json={"model": "m", "input": [JOKE]})
        [message] = refused.json()["output"]
        body = {"model": "m", "input": [ORDER, stored, JOKE, message, ORDER]}
        await client.post("/v1/responses", json=body)
    plain = {k: v for k, v in message.items() if k not in ("id", "status")}
    assert _sent(upstream)["input"] == [ORDER, stored, JOKE, plain, ORDER]
