"""GatekeeperRunnable where an agent wants a chat model: bind_tools, with_structured_output,
and the output type of a wrapped runnable that declares none (a LangGraph agent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain import GatekeeperRunnable

REFUSAL = "Sorry, I only help with orders."


@tool
def order_status(order_id: str) -> str:
    """Look up an order's status."""
    return "shipped"


class Status(BaseModel):
    """An order's status."""

    order_id: str
    status: str


class ToolCallingModel(GenericFakeChatModel):
    """A fake chat model with bind_tools: it calls the first bound tool, recording each call's
    tool names (langchain-core's GenericFakeChatModel has no bind_tools)."""

    seen: list[list[str]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, BaseMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        names = [t["function"]["name"] for t in kwargs.get("tools", [])]
        self.seen.append(names)
        return super()._generate(messages, stop, run_manager, **kwargs)


def calling(name: str, args: dict[str, Any]) -> ToolCallingModel:
    """A tool-calling fake whose every answer calls ``name`` with ``args``."""
    call = {"name": name, "args": args, "id": "call_1", "type": "tool_call"}
    return ToolCallingModel(messages=iter([AIMessage(content="", tool_calls=[call])] * 4))


def test_bind_tools_keeps_the_gate_in_front_of_the_bound_model(tiny_gate: Gatekeeper) -> None:
    """bind_tools gives a gated runnable around model.bind_tools: tools reach admitted calls."""
    model = calling("order_status", {"order_id": "NW-1"})
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=model, decision_detail="full")
    bound = gated.bind_tools([order_status])
    assert isinstance(bound, GatekeeperRunnable)
    assert bound.gate is tiny_gate
    assert bound.decision_detail == "full"
    admitted = bound.invoke("where is my order")
    assert admitted.tool_calls[0]["name"] == "order_status"
    assert admitted.response_metadata["gatekeeper"]["route"] == "llm"
    refused = bound.invoke("tell me a joke")
    assert isinstance(refused, AIMessage)
    assert (refused.content, refused.tool_calls) == (REFUSAL, [])
    assert model.seen == [["order_status"]]
    assert gated.runnable is model  # the original is unchanged


def test_with_structured_output_parses_admitted_answers_only(tiny_gate: Gatekeeper) -> None:
    """with_structured_output: an admitted answer is the schema, a refusal an AIMessage."""
    model = calling("Status", {"order_id": "NW-1", "status": "shipped"})
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=model)
    structured = gated.with_structured_output(Status)
    assert structured.invoke("where is my order") == Status(order_id="NW-1", status="shipped")
    refused = structured.invoke("tell me a joke")
    assert isinstance(refused, AIMessage)
    assert refused.content == REFUSAL
    raw = gated.with_structured_output(Status, include_raw=True)
    assert set(raw.invoke("where is my order")) == {"raw", "parsed", "parsing_error"}
    assert isinstance(raw.invoke("write a poem"), AIMessage)


@pytest.mark.parametrize("method", ["json_mode", "function_calling", "json_schema"])
def test_with_structured_output_passes_a_method_keyword_through(
    tiny_gate: Gatekeeper, method: str
) -> None:
    """with_structured_output(T, method=...) reaches ChatOpenAI's own (it was a TypeError)."""
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    llm = chat_openai(model="gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=llm)
    structured = gated.with_structured_output(Status, method=method)
    assert isinstance(structured, GatekeeperRunnable)
    bound = structured.runnable.first  # type: ignore[attr-defined]
    assert bound.kwargs["ls_structured_output_format"]["kwargs"]["method"] == method
    refused = structured.invoke("tell me a joke")  # no call to the model: no network
    assert isinstance(refused, AIMessage)
    assert refused.content == REFUSAL


def test_with_structured_output_json_mode_needs_no_schema(tiny_gate: Gatekeeper) -> None:
    """with_structured_output(method="json_mode") without a schema works as on ChatOpenAI."""
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    llm = chat_openai(model="gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    structured = GatekeeperRunnable(gate=tiny_gate, runnable=llm).with_structured_output(
        method="json_mode"
    )
    bound = structured.runnable.first  # type: ignore[attr-defined]
    assert bound.kwargs["response_format"] == {"type": "json_object"}


def test_bind_tools_passes_every_keyword_through(tiny_gate: Gatekeeper) -> None:
    """bind_tools(tools, method=..., runnable=...) hands those keywords to the model's own."""
    model = calling("order_status", {"order_id": "NW-1"})
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=model)
    bound = gated.bind_tools([order_status], method="x", runnable="y", tool_choice="any")
    assert bound.runnable.kwargs["method"] == "x"  # type: ignore[attr-defined]
    assert bound.runnable.kwargs["runnable"] == "y"  # type: ignore[attr-defined]
    assert bound.runnable.kwargs["tool_choice"] == "any"  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["bind_tools", "with_structured_output"])
def test_a_wrapped_runnable_without_the_method_says_what_to_wrap(
    tiny_gate: Gatekeeper, method: str
) -> None:
    """bind_tools / with_structured_output on a gated chain raise an AttributeError naming it."""
    prompt = ChatPromptTemplate.from_messages([("human", "{input}")])
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=prompt | calling("x", {}))
    with pytest.raises(AttributeError, match=f"has no {method}; wrap the chat model itself"):
        getattr(gated, method)([order_status])


class Untyped(RunnableLambda[Any, Any]):
    """A runnable whose OutputType is None, as a LangGraph graph's is."""

    @property
    def OutputType(self) -> Any:
        return None


def test_an_output_type_of_none_is_read_as_unknown(tiny_gate: Gatekeeper) -> None:
    """A wrapped runnable declaring no output type (None) gives Any, not Optional[AIMessage]."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=Untyped(lambda state: state))
    assert gated.OutputType is Any
    refused = gated.invoke({"input": "tell me a joke"})
    assert isinstance(refused, AIMessage)
    assert gated.get_output_jsonschema() == {"title": "GatekeeperRunnableOutput"}
