"""GatekeeperRunnable in front of a real ChatOpenAI talking to a real upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain import GatekeeperRunnable
from gatekeeper.testing import RecordingUpstream

pytestmark = pytest.mark.integration

REFUSAL = "Sorry, I only help with orders."


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """One OpenAI-compatible upstream on loopback for the module; it echoes and records."""
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
def calls(upstream: RecordingUpstream) -> list[dict[str, Any]]:
    """The chat requests the upstream receives during one test."""
    upstream.reset()
    return upstream.calls


@pytest.fixture
def chat_model(upstream: RecordingUpstream) -> ChatOpenAI:
    """A real ChatOpenAI client pointed at the loopback upstream."""
    # An async HTTP client of its own: langchain-openai caches one per base URL, and its pooled
    # connections would outlive the event loop pytest-asyncio gives each test.
    return ChatOpenAI(
        model="echo-model",
        base_url=upstream.base_url,
        api_key="test-key",
        max_retries=0,
        http_async_client=openai.DefaultAsyncHttpxClient(),
    )


@pytest.fixture
def gated(tiny_gate: Gatekeeper, chat_model: ChatOpenAI) -> GatekeeperRunnable:
    """The chat model behind the tiny gate."""
    return GatekeeperRunnable(gate=tiny_gate, runnable=chat_model, input_key="question")


def last_user(call: dict[str, Any]) -> Any:
    return [m for m in call["messages"] if m["role"] == "user"][-1]["content"]


def test_invoke_admitted_reaches_upstream_blocked_does_not(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """invoke: an in-domain question is answered by the upstream; off-topic never reaches it."""
    answer = gated.invoke("where is my order")
    assert isinstance(answer, AIMessage)
    assert answer.content == "echo: where is my order"
    assert len(calls) == 1
    assert calls[0]["model"] == "echo-model"
    assert last_user(calls[0]) == "where is my order"

    refused = gated.invoke("tell me a joke")
    assert refused.content == REFUSAL
    assert refused.response_metadata["gatekeeper"]["route"] == "off_topic"
    canned = gated.invoke("hello")
    assert canned.response_metadata["gatekeeper"]["route"] == "canned"
    assert len(calls) == 1


async def test_ainvoke_admitted_reaches_upstream_blocked_does_not(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """ainvoke: the same split, through the async OpenAI client."""
    assert (await gated.ainvoke("refund my money")).content == "echo: refund my money"
    assert (await gated.ainvoke("write a poem")).content == REFUSAL
    assert [last_user(c) for c in calls] == ["refund my money"]


def test_stream_passes_upstream_chunks(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """stream: admitted answers arrive as the upstream's SSE chunks; refusals as one chunk."""
    chunks = list(gated.stream("track my order"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(str(c.content) for c in chunks) == "echo: track my order"
    assert len(calls) == 1
    assert calls[0]["stream"] is True

    (refused,) = list(gated.stream("what is the weather today"))
    assert refused.content == REFUSAL
    assert len(calls) == 1


async def test_astream_events_carry_the_decision(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """astream_events: ChatOpenAI's stream events carry the gate's decision in metadata; a
    refusal streams from the gatekeeper_reply model alone (a chat UI sees it; no upstream)."""
    events = [e async for e in gated.astream_events("where is my order", version="v2")]
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(str(e["data"]["chunk"].content) for e in streamed) == "echo: where is my order"
    assert {e["metadata"]["gatekeeper_route"] for e in streamed} == {"llm"}
    assert {e["metadata"]["gatekeeper_intent"] for e in streamed} == {"order_status"}
    blocked = [e async for e in gated.astream_events("tell me a joke", version="v2")]
    said = [e for e in blocked if e["event"].startswith("on_chat_model")]
    assert said and {e["name"] for e in said} == {"gatekeeper_reply"}
    told = [e for e in said if e["event"] == "on_chat_model_stream"]
    assert "".join(str(e["data"]["chunk"].content) for e in told) == REFUSAL
    assert len(calls) == 1


def test_batch_sends_only_admitted(gated: GatekeeperRunnable, calls: list[dict[str, Any]]) -> None:
    """batch: only admitted questions reach the upstream; answers come back in input order."""
    questions = ["where is my order", "tell me a joke", "refund my money", "hello"]
    answers = gated.batch(questions)
    assert [a.content for a in answers] == [
        "echo: where is my order",
        REFUSAL,
        "echo: refund my money",
        "Hello! How can I help?",
    ]
    assert sorted(last_user(c) for c in calls) == ["refund my money", "where is my order"]


async def test_abatch_sends_only_admitted(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """abatch: the same, async."""
    answers = await gated.abatch(["write a poem", "track my order"])
    assert [a.content for a in answers] == [REFUSAL, "echo: track my order"]
    assert [last_user(c) for c in calls] == ["track my order"]


def test_conversation_reaches_upstream_unchanged(
    gated: GatekeeperRunnable, calls: list[dict[str, Any]]
) -> None:
    """A follow-up admitted through the conversation reaches the upstream with its history."""
    conversation = [
        SystemMessage("You help customers of a small shop."),
        HumanMessage("where is my order"),
        AIMessage("What is the order number?"),
        HumanMessage("NW-55120"),
    ]
    assert gated.invoke(conversation).content == "echo: NW-55120"
    assert [(m["role"], m["content"]) for m in calls[0]["messages"]] == [
        ("system", "You help customers of a small shop."),
        ("user", "where is my order"),
        ("assistant", "What is the order number?"),
        ("user", "NW-55120"),
    ]
    assert gated.invoke([*conversation[:3], HumanMessage("tell me a joke")]).content == REFUSAL
    assert len(calls) == 1


async def test_lcel_chain_sync_and_async(
    tiny_gate: Gatekeeper, chat_model: ChatOpenAI, calls: list[dict[str, Any]]
) -> None:
    """prompt | gated ChatOpenAI | StrOutputParser: text answers, the prompt reaches upstream."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You help customers of a small shop."), ("human", "{question}")]
    )
    chain = prompt | GatekeeperRunnable(gate=tiny_gate, runnable=chat_model) | StrOutputParser()
    assert chain.invoke({"question": "where is my order"}) == "echo: where is my order"
    assert await chain.ainvoke({"question": "tell me a joke"}) == REFUSAL
    streamed = [c async for c in chain.astream({"question": "refund my money"})]
    assert "".join(streamed) == "echo: refund my money"
    assert len(calls) == 2
    assert calls[0]["messages"][0] == {
        "role": "system",
        "content": "You help customers of a small shop.",
    }


def test_default_model_gate_in_front_of_chat_openai(
    real_gate: Gatekeeper, chat_model: ChatOpenAI, calls: list[dict[str, Any]]
) -> None:
    """With the default model and shop catalog, weather and poems never reach the upstream."""
    gated = GatekeeperRunnable(gate=real_gate, runnable=chat_model)
    parcel = "where is my parcel? I ordered it last week"
    answers = gated.batch(
        [parcel, "what's the weather like in Paris tomorrow?", "write me a poem about the sea"]
    )
    assert answers[0].content == f"echo: {parcel}"
    assert [a.response_metadata["gatekeeper"]["route"] for a in answers[1:]] == [
        "off_topic",
        "off_topic",
    ]
    assert [last_user(c) for c in calls] == [parcel]
