"""GatekeeperRunnable's output: the gate's reply has the wrapped runnable's output shape."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain import GatekeeperRunnable

REFUSAL = "Sorry, I only help with orders."
ANSWER = "It ships today."


def text_chain() -> Runnable[Any, Any]:
    """prompt | chat model | StrOutputParser: a chain whose output is a str."""
    prompt = ChatPromptTemplate.from_messages([("system", "Shop."), ("human", "{input}")])
    return prompt | FakeListChatModel(responses=[ANSWER]) | StrOutputParser()


@pytest.fixture
def gated_text(tiny_gate: Gatekeeper) -> GatekeeperRunnable:
    """The gate in front of a text-output chain, dict inputs under ``input``."""
    return GatekeeperRunnable(gate=tiny_gate, runnable=text_chain())


def test_text_chain_refusal_is_a_str(gated_text: GatekeeperRunnable) -> None:
    """Wrapping a str-output chain, a refusal is a str too: JSON and f-strings show the reply."""
    admitted = gated_text.invoke({"input": "where is my order"})
    refused = gated_text.invoke({"input": "tell me a joke"})
    assert isinstance(admitted, str)
    assert isinstance(refused, str)
    assert json.loads(json.dumps({"reply": refused})) == {"reply": REFUSAL}
    assert f"Bot: {refused}" == f"Bot: {REFUSAL}"
    assert refused.response_metadata["gatekeeper"]["route"] == "off_topic"


async def test_text_chain_refusal_is_a_str_everywhere(gated_text: GatekeeperRunnable) -> None:
    """ainvoke, batch, stream and astream give str refusals for a str-output chain."""
    question = {"input": "write a poem"}
    (batched,) = gated_text.batch([question])
    assert isinstance(batched, str)
    assert batched == REFUSAL
    refused = await gated_text.ainvoke(question)
    assert isinstance(refused, str)
    assert refused == REFUSAL
    streamed = list(gated_text.stream(question))
    assert streamed == [REFUSAL]
    assert all(isinstance(c, str) for c in streamed)
    astreamed = [c async for c in gated_text.astream(question)]
    assert astreamed == [REFUSAL]
    assert all(isinstance(c, str) for c in astreamed)


def test_text_reply_survives_pickle(gated_text: GatekeeperRunnable) -> None:
    """A text refusal pickles (e.g. to a cache or a worker) with its decision."""
    refused = gated_text.invoke({"input": "tell me a joke"})
    copied = pickle.loads(pickle.dumps(refused))
    assert copied == REFUSAL
    assert copied.response_metadata["gatekeeper"]["route"] == "off_topic"


def test_declared_str_output_decides_the_reply_shape(tiny_gate: Gatekeeper) -> None:
    """A function annotated ``-> str`` gets str refusals; an unannotated one gets AIMessages."""

    def answer(question: Any) -> str:
        return ANSWER

    typed = GatekeeperRunnable(gate=tiny_gate, runnable=answer)
    assert isinstance(typed.invoke("tell me a joke"), str)
    assert typed.invoke("tell me a joke") == REFUSAL
    untyped = GatekeeperRunnable(gate=tiny_gate, runnable=RunnableLambda(lambda q: ANSWER))
    refused = untyped.invoke("tell me a joke")
    assert isinstance(refused, AIMessage)
    assert refused.content == REFUSAL
    (chunk,) = list(untyped.stream("tell me a joke"))
    assert isinstance(chunk, AIMessageChunk)


def test_output_schema_is_the_wrapped_output_shape(
    gated_text: GatekeeperRunnable, tiny_gate: Gatekeeper
) -> None:
    """output_schema: a string for a str chain, the message union for a chat model."""
    assert gated_text.OutputType is str
    assert gated_text.get_output_jsonschema() == {
        "title": "GatekeeperRunnableOutput",
        "type": "string",
    }
    model = FakeListChatModel(responses=[ANSWER])
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=model)
    assert gated.OutputType == model.OutputType
    assert "AIMessage" in gated.get_output_jsonschema()["$defs"]


def test_output_schema_adds_the_reply_to_other_types(tiny_gate: Gatekeeper) -> None:
    """A runnable declaring dict output: the schema says dict or AIMessage (the refusal)."""
    typed = RunnableLambda(lambda q: {"answer": ANSWER}).with_types(output_type=dict)
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=typed)
    schema = gated.get_output_jsonschema()
    assert [s.get("type") for s in schema["anyOf"]] == ["object", None]
    assert "AIMessage" in schema["$defs"]
    assert gated.get_output_schema().model_validate(gated.invoke("tell me a joke"))
