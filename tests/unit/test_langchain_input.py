"""GatekeeperRunnable's inputs: admitted and refused messages accept and reject the same ones."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from pydantic import ValidationError
from structlog.testing import capture_logs

from gatekeeper.errors import InputError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain import GatekeeperRunnable

REFUSAL = "Sorry, I only help with orders."
ANSWER = "It ships today."


class Recording(FakeListChatModel):
    """A fake chat model that records what each call got."""

    seen: list[Any]

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        self.seen.append(input)
        return super().invoke(input, config, **kwargs)


@pytest.fixture
def model() -> Recording:
    """A recording fake chat model."""
    return Recording(responses=[ANSWER], seen=[])


@pytest.fixture
def gated_model(tiny_gate: Gatekeeper, model: Recording) -> GatekeeperRunnable:
    """The gate in front of a bare chat model."""
    return GatekeeperRunnable(gate=tiny_gate, runnable=model)


def test_single_message_reaches_the_chat_model_as_a_list(
    gated_model: GatekeeperRunnable, model: Recording
) -> None:
    """A lone HumanMessage is admitted as a one-message conversation the chat model takes."""
    message = HumanMessage("where is my order")
    answer = gated_model.invoke(message)
    assert isinstance(answer, AIMessage)
    assert answer.content == ANSWER
    assert model.seen == [[message]]
    assert gated_model.invoke(HumanMessage("tell me a joke")).content == REFUSAL


async def test_single_message_streams_and_batches(gated_model: GatekeeperRunnable) -> None:
    """A lone message works admitted in stream, astream and batch too."""
    message = HumanMessage("where is my order")
    assert "".join(str(c.content) for c in gated_model.stream(message)) == ANSWER
    assert "".join([str(c.content) async for c in gated_model.astream(message)]) == ANSWER
    assert [r.content for r in gated_model.batch([message, HumanMessage("write a poem")])] == [
        ANSWER,
        REFUSAL,
    ]


@pytest.mark.parametrize("text", ["where is my order", "tell me a joke"])
def test_dict_to_a_chat_model_fails_the_same_admitted_or_refused(
    gated_model: GatekeeperRunnable, model: Recording, text: str
) -> None:
    """A dict for a bare chat model is an InputError naming the fix, whatever the gate says."""
    with pytest.raises(InputError, match="put a prompt in front of it") as caught:
        gated_model.invoke({"input": text})
    assert text not in str(caught.value)
    with pytest.raises(InputError):
        list(gated_model.stream({"input": text}))
    assert model.seen == []


async def test_dict_to_a_chat_model_in_batches(
    gated_model: GatekeeperRunnable, model: Recording
) -> None:
    """batch/abatch: each dict input gets the InputError in its slot; the rest run."""
    inputs: list[Any] = [{"input": "tell me a joke"}, "where is my order", {"input": "hello"}]
    results = gated_model.batch(inputs, return_exceptions=True)
    assert isinstance(results[0], InputError)
    assert results[1].content == ANSWER
    assert isinstance(results[2], InputError)
    with pytest.raises(InputError):
        await gated_model.abatch([{"input": "tell me a joke"}])


def test_input_schema_validates_every_accepted_input(gated_model: GatekeeperRunnable) -> None:
    """get_input_schema() validates dicts (was a TypeError) and keeps every input kind as it is."""
    accepted: list[Any] = [
        {"input": "where is my order"},
        {"text": "where is my order"},  # a dict, not a StringPromptValue
        "where is my order",
        [{"role": "user", "content": "where is my order"}],
        [HumanMessage("where is my order")],
        HumanMessage("where is my order"),
        StringPromptValue(text="where is my order"),
        ChatPromptValue(messages=[HumanMessage("where is my order")]),
    ]
    schema = gated_model.get_input_schema()
    for value in accepted:
        validated = schema.model_validate(value).root
        assert validated == value
        assert type(validated) is type(value)


def test_input_schema_rejects_what_the_runnable_rejects(gated_model: GatekeeperRunnable) -> None:
    """The input schema says no to a number with a ValidationError, not a crash."""
    schema = gated_model.get_input_schema()
    with pytest.raises(ValidationError):
        schema.model_validate(42)
    assert schema.model_validate_json('{"input": "hi"}').root == {"input": "hi"}
    assert "anyOf" in gated_model.get_input_jsonschema()


SECRET = "my card 4111 1111 1111 1111"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ([{"content": SECRET}], "input[0] is an object without a string 'role'"),
        ([{"role": "customer", "content": SECRET}], "input[0] is an object whose role"),
        ([("customer", SECRET)], "input[0] is a sequence that is not a (role, content) pair"),
        ([{"role": "tool", "content": SECRET}], "input[0] is a tool message without"),
        ([HumanMessage("hi"), {"text": SECRET}], "input[1] is an object without a string"),
    ],
    ids=["no-role", "unknown-role", "unknown-tuple-role", "tool-without-id", "second"],
)
def test_message_errors_never_quote_the_customer(
    gated_model: GatekeeperRunnable, bad: Any, says: str
) -> None:
    """An unreadable message is named by position and type; its text is in no error or cause."""
    with pytest.raises(InputError) as caught:
        gated_model.invoke(bad)
    assert str(caught.value).startswith(says)
    for error in (caught.value, caught.value.__cause__, caught.value.__context__):
        assert "4111" not in str(error)


def test_one_role_content_dict_under_a_key_is_one_message(tiny_gate: Gatekeeper) -> None:
    """Under input_key or history_key, one role/content dict is judged as one message (as one
    HumanMessage is), admitted or refused; it was an InputError saying a dict was expected."""
    from langchain_core.runnables import RunnableLambda

    got: list[Any] = []
    chain = RunnableLambda(lambda value: got.append(value) or ANSWER)
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=chain, history_key="history")
    order = {"role": "user", "content": "where is my order"}
    joke = {"role": "user", "content": "tell me a joke"}
    assert gated.to_gate_message({"input": order}) == [order]
    assert gated.to_gate_message({"input": "tell me a joke", "history": order}) == [order, joke]
    assert gated.invoke({"input": order}) == ANSWER
    assert gated.invoke({"input": joke}).content == REFUSAL
    assert got == [{"input": order}]
    gated.invoke({"input": order, "history": [joke, {"role": "assistant", "content": REFUSAL}]})
    assert got[-1] == {"input": order, "history": []}  # the refused turn taken out, as ever


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"text": SECRET}, "question is an object without a string 'role' (or 'type'): expected"),
        ({"role": "user"}, "question is an object without 'content': expected"),
        (42, "question: expected a string, a message (or role/content dict), a list of messages"),
    ],
    ids=["no-role", "no-content", "int"],
)
def test_a_value_under_a_key_that_is_no_message_says_what_is_expected(
    tiny_gate: Gatekeeper, value: Any, says: str
) -> None:
    """A value under input_key that is no message says what is expected there (not "a dict",
    which it was), by type, never quoting it."""
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | FakeListChatModel(responses=[ANSWER])
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=chain, input_key="question")
    with pytest.raises(InputError) as caught:
        gated.invoke({"question": value})
    assert str(caught.value).startswith(says)
    assert "or a dict" not in str(caught.value)
    assert "4111" not in str(caught.value)


def test_an_admitted_chat_reaches_the_model_without_the_refused_turn(
    tiny_gate: Gatekeeper, gated_model: GatekeeperRunnable, model: Recording
) -> None:
    """A chat with the gate's refusal in it reaches the model without the refused request and
    the refusal, as messages, tuples or a chat prompt value, and under a dict's history key;
    a chat without a refusal goes on as it was."""
    from langchain_core.runnables import RunnableLambda

    order = HumanMessage("where is my order")
    chat = [HumanMessage("tell me a joke"), AIMessage(REFUSAL), order]
    gated_model.invoke(chat)
    gated_model.invoke(
        [("human", "tell me a joke"), ("ai", REFUSAL), ("human", "where is my order")]
    )
    gated_model.invoke(ChatPromptValue(messages=chat))
    gated_model.invoke([order])
    assert model.seen[0] == [order]
    assert model.seen[1] == [("human", "where is my order")]
    assert model.seen[2] == ChatPromptValue(messages=[order])
    assert model.seen[3] == [order]
    got: list[Any] = []
    chain = RunnableLambda(lambda value: got.append(value) or ANSWER)
    with_history = GatekeeperRunnable(gate=tiny_gate, runnable=chain, history_key="history")
    with_history.invoke({"input": "where is my order", "history": chat[:2]})
    assert got == [{"input": "where is my order", "history": []}]


SERVED_CHAT: list[Any] = [
    HumanMessage("where is my order"),
    AIMessage(ANSWER),
    HumanMessage("tell me a joke"),
    AIMessage(REFUSAL),
    HumanMessage("where is my order now"),
]


@pytest.mark.parametrize("split", range(len(SERVED_CHAT)))
def test_a_chat_split_across_history_and_input_loses_its_refused_turn_as_one_list_does(
    tiny_gate: Gatekeeper, split: int
) -> None:
    """Split anywhere over history_key and input_key, a chat loses what one list would."""
    from langchain_core.runnables import RunnableLambda

    got: list[Any] = []
    chain = RunnableLambda(lambda value: got.append(value) or ANSWER)
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=chain, history_key="history")
    gated.invoke({"input": SERVED_CHAT[split:], "history": SERVED_CHAT[:split]})
    assert [*got[0]["history"], *got[0]["input"]] == [*SERVED_CHAT[:2], SERVED_CHAT[-1]]
    assert got[0]["history"] == [m for m in SERVED_CHAT[:split] if m in got[0]["history"]]


def test_a_chat_prompt_value_under_the_input_key_loses_its_refused_turn(
    tiny_gate: Gatekeeper,
) -> None:
    """A ChatPromptValue under input_key goes on, still one, without the refused turn."""
    from langchain_core.runnables import RunnableLambda

    got: list[Any] = []
    chain = RunnableLambda(lambda value: got.append(value) or ANSWER)
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=chain, history_key="history")
    gated.invoke({"input": ChatPromptValue(messages=SERVED_CHAT[2:]), "history": SERVED_CHAT[:2]})
    gated.invoke({"input": ChatPromptValue(messages=SERVED_CHAT)})
    assert got[0] == {
        "input": ChatPromptValue(messages=SERVED_CHAT[-1:]),
        "history": SERVED_CHAT[:2],
    }
    assert got[1] == {"input": ChatPromptValue(messages=[*SERVED_CHAT[:2], SERVED_CHAT[-1]])}


def test_a_structured_output_refusal_in_additional_kwargs_is_taken_out(
    gated_model: GatekeeperRunnable, model: Recording
) -> None:
    """A refusal in additional_kwargs["refusal"] (langchain-openai's) goes with its turn."""
    # as an AIMessage or an OpenAI-format dict; an AI message that calls tools is no refusal
    joke, order = HumanMessage("tell me a joke"), HumanMessage("where is my order")
    structured = AIMessage("", additional_kwargs={"refusal": REFUSAL})
    as_dict = {"role": "assistant", "content": None, "refusal": REFUSAL}
    call = {"name": "track", "args": {}, "id": "c1"}
    calling = AIMessage("", additional_kwargs={"refusal": REFUSAL}, tool_calls=[call])
    gated_model.invoke([joke, structured, order])
    gated_model.invoke([joke, as_dict, order])
    gated_model.invoke([order, calling, order])
    assert model.seen == [[order], [order], [order, calling, order]]


BAD_CALL = {"name": "track", "args": "{not json", "id": "c1", "error": "bad arguments"}
LEGACY_CALL = {"name": "track", "arguments": "{}"}
RAW_CALL = {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
#: Tool calls in each shape LangChain keeps them, beside the OpenAI message each stands for.
CALL_SHAPES: list[tuple[AIMessage, dict[str, Any]]] = [
    (
        AIMessage(REFUSAL, invalid_tool_calls=[BAD_CALL]),
        {"role": "assistant", "content": REFUSAL, "tool_calls": [RAW_CALL]},
    ),
    (
        AIMessage(REFUSAL, additional_kwargs={"function_call": LEGACY_CALL}),
        {"role": "assistant", "content": REFUSAL, "function_call": LEGACY_CALL},
    ),
    (  # raw OpenAI calls LangChain could not parse (no "arguments"): in additional_kwargs only
        AIMessage(REFUSAL, additional_kwargs={"tool_calls": [{"id": "c1", "type": "function"}]}),
        {"role": "assistant", "content": REFUSAL, "tool_calls": [RAW_CALL]},
    ),
]


@pytest.mark.parametrize(("calling", "as_openai"), CALL_SHAPES, ids=["invalid", "legacy", "raw"])
def test_an_ai_message_with_invalid_or_legacy_tool_calls_is_no_refusal(
    gated_model: GatekeeperRunnable,
    model: Recording,
    calling: AIMessage,
    as_openai: dict[str, Any],
) -> None:
    """invalid_tool_calls, raw and legacy calls count as tool calls, as in OpenAI chats."""
    from gatekeeper.refusals import without_refused

    order, joke = HumanMessage("where is my order"), HumanMessage("tell me a joke")
    result = ToolMessage("shipped", tool_call_id="c1")
    bare = calling.model_copy(update={"content": ""})
    # the call answered the joke: it stays, and so does the refusal after it
    between = [joke, bare, result, AIMessage(REFUSAL), order]
    chats: list[list[Any]] = [
        [order, calling, order],  # the refusal's text, but calling a tool: no refusal
        [order, as_openai, order],  # the OpenAI message, read by LangChain
        between,
    ]
    for chat in chats:
        gated_model.invoke(chat)
    assert model.seen == [chats[0], chats[1], between]
    openai = [{"role": "user", "content": "where is my order"}, as_openai]
    assert without_refused([*openai, openai[0]], {REFUSAL}) == [*openai, openai[0]]


def test_a_history_the_gate_does_not_read_is_warned_about_once(tiny_gate: Gatekeeper) -> None:
    """Without history_key, chat messages under another dict key log one warning naming it."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Shop."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | FakeListChatModel(responses=[ANSWER])
    history = [HumanMessage("where is my order"), AIMessage("Which name was it under?")]
    as_dicts = [{"role": "user", "content": "where is my order"}]
    unread = GatekeeperRunnable(gate=tiny_gate, runnable=chain, input_key="question")
    read = GatekeeperRunnable(
        gate=tiny_gate, runnable=chain, input_key="question", history_key="history"
    )
    with capture_logs() as logs:
        read.invoke({"question": "Maria Lopez", "history": history})
        unread.invoke({"question": "where is my parcel", "history": []})  # a first turn
        unread.invoke({"question": "Maria Lopez", "history": history})
        unread.invoke({"question": "tell me a joke", "history": as_dicts})
    (warning,) = [e for e in logs if e["event"] == "langchain.history_not_read"]
    assert warning["log_level"] == "warning"
    assert warning["key"] == "history"
    assert 'history_key="history"' in warning["message"]
    assert "Maria" not in str(warning) and "order" not in str(warning)
