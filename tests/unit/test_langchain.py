"""GatekeeperRunnable on the hashing-embedder gate and langchain-core's own fake chat models."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig, RunnableLambda

from gatekeeper.errors import EmptyMessageError, InputError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain import CHECK_RUN, REPLY_RUN, GatekeeperRunnable
from gatekeeper.testing import HashingEmbedder, make_gate, tiny_catalog

REFUSAL = "Sorry, I only help with orders."
GREETING = "Hello! How can I help?"


class Counter:
    """A RunnableLambda body that records every input it gets."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        with self._lock:
            self.inputs.append(value)
        return "LLM ANSWER"


class Recorder(BaseCallbackHandler):
    """Records chain and chat-model starts with their tags, metadata and parents."""

    run_inline = True

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _record(self, event: str, kwargs: dict[str, Any]) -> None:
        self.events.append(
            {
                "event": event,
                "name": kwargs.get("name"),
                "run_id": kwargs.get("run_id"),
                "parent_run_id": kwargs.get("parent_run_id"),
                "tags": list(kwargs.get("tags") or []),
                "metadata": dict(kwargs.get("metadata") or {}),
            }
        )

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self._record("chain_start", kwargs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append({"event": "chain_end", "run_id": run_id, "outputs": outputs})

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._record("chat_model_start", kwargs)

    def started(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"].endswith("start") and e["name"] == name]

    def chat_model_starts(self) -> list[dict[str, Any]]:
        """The wrapped model's runs (the gate's own reply runs left out)."""
        return [
            e for e in self.events if e["event"] == "chat_model_start" and e["name"] != REPLY_RUN
        ]

    def output_of(self, run_id: UUID) -> Any:
        return next(
            e["outputs"] for e in self.events if e["event"] == "chain_end" and e["run_id"] == run_id
        )


def answers(*texts: str) -> GenericFakeChatModel:
    """A fake chat model answering ``texts`` in turn (streamed word by word)."""
    return GenericFakeChatModel(messages=iter([AIMessage(content=t) for t in texts]))


@pytest.fixture
def counter() -> Counter:
    """Counts calls to the wrapped runnable."""
    return Counter()


@pytest.fixture
def gated(tiny_gate: Gatekeeper, counter: Counter) -> GatekeeperRunnable:
    """A counting RunnableLambda behind the tiny gate, dict inputs under ``question``."""
    return GatekeeperRunnable(
        gate=tiny_gate, runnable=RunnableLambda(counter), input_key="question"
    )


def assert_blocked(result: Any, route: str, reply: str) -> None:
    """A reply of the gate to a runnable declaring a str output: a str, the decision attached."""
    assert isinstance(result, str)
    assert result == reply
    decision = result.response_metadata["gatekeeper"]
    assert decision["route"] == route
    assert {"intent", "score", "threshold", "message_id"} <= set(decision)
    assert "neighbours" not in decision  # exemplar texts only with decision_detail="full"


# -- input types ---------------------------------------------------------------------------


def test_string_admitted_reaches_runnable(gated: GatekeeperRunnable, counter: Counter) -> None:
    """An in-domain string goes to the wrapped runnable, whose output comes back unchanged."""
    assert gated.invoke("where is my order") == "LLM ANSWER"
    assert counter.inputs == ["where is my order"]


def test_string_off_topic_is_answered_without_runnable(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """An off-topic string gets the refusal (as text, like the runnable's) without calling it."""
    result = gated.invoke("tell me a joke")
    assert_blocked(result, "off_topic", REFUSAL)
    assert counter.inputs == []


def test_canned_intent_gets_its_fixed_reply(gated: GatekeeperRunnable, counter: Counter) -> None:
    """A canned intent (greeting) is answered with its reply and the decision's intent."""
    result = gated.invoke("hello")
    assert_blocked(result, "canned", GREETING)
    assert result.response_metadata["gatekeeper"]["intent"] == "greeting"
    assert counter.inputs == []


def test_decision_in_response_metadata_matches_the_gate(
    gated: GatekeeperRunnable, tiny_gate: Gatekeeper
) -> None:
    """The decision attached to a blocked answer is the gate's own decision, as JSON."""
    attached = gated.invoke("write a poem").response_metadata["gatekeeper"]
    direct = tiny_gate.check("write a poem").summary()
    assert {k: v for k, v in attached.items() if k != "latency_ms"} == {
        k: v for k, v in direct.items() if k != "latency_ms"
    }


def test_full_decision_detail_carries_the_neighbours(
    gated: GatekeeperRunnable, tiny_gate: Gatekeeper
) -> None:
    """With decision_detail="full" a blocked answer carries the whole decision (neighbours'
    exemplar texts, reason); by default it carries none of them, so a host that shows
    response_metadata does not let users read the catalog out of it."""
    full = gated.model_copy(update={"decision_detail": "full"})
    attached = full.invoke("write a poem").response_metadata["gatekeeper"]
    direct = tiny_gate.check("write a poem").model_dump(mode="json")
    for key in ("route", "intent", "score", "threshold", "reason", "neighbours", "message_id"):
        assert attached[key] == direct[key]
    slim = gated.invoke("write a poem").response_metadata["gatekeeper"]
    texts = {n["text"] for n in direct["neighbours"]}
    assert texts and not texts & set(map(str, slim.values()))
    assert {"neighbours", "reason"}.isdisjoint(slim)


def test_message_objects_are_judged_as_a_conversation(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """A list of BaseMessages is judged on its last human turn, in the light of earlier ones."""
    conversation = [
        SystemMessage("You are a shop assistant."),
        HumanMessage("where is my order"),
        AIMessage("What is the order number?"),
        HumanMessage("NW-55120"),
    ]
    assert gated.invoke(conversation) == "LLM ANSWER"
    assert counter.inputs == [conversation]
    drifted = [*conversation[:3], HumanMessage("tell me a joke")]
    assert_blocked(gated.invoke(drifted), "off_topic", REFUSAL)


def test_follow_up_alone_is_refused(gated: GatekeeperRunnable) -> None:
    """Without the conversation, the same short follow-up is off-topic."""
    assert_blocked(gated.invoke([HumanMessage("NW-55120")]), "off_topic", REFUSAL)


def test_openai_dicts_and_tuples_are_messages(gated: GatekeeperRunnable, counter: Counter) -> None:
    """OpenAI-style dicts and (role, text) tuples are accepted as messages."""
    as_dicts = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Which one?"},
        {"role": "user", "content": "NW-55120"},
    ]
    assert gated.invoke(as_dicts) == "LLM ANSWER"
    as_tuples = [("human", "tell me a joke")]
    assert_blocked(gated.invoke(as_tuples), "off_topic", REFUSAL)
    assert counter.inputs == [as_dicts]


def test_roles_map_to_openai_format(gated: GatekeeperRunnable) -> None:
    """Human→user, AI→assistant, System→system; ChatMessage keeps its role; parts stay parts."""
    parts: list[str | dict[str, Any]] = [{"type": "text", "text": "where is my order"}]
    message = gated.to_gate_message(
        [
            SystemMessage("be nice"),
            HumanMessage("hi"),
            AIMessage("hello"),
            ChatMessage(role="user", content="ok"),
            HumanMessage(content=parts),
        ]
    )
    assert message == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "ok"},
        {"role": "user", "content": parts},
    ]


def test_content_parts_are_judged_on_their_text(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """A human message made of content parts is judged on its text parts."""
    parts: list[str | dict[str, Any]] = [{"type": "text", "text": "tell me a joke"}]
    assert_blocked(gated.invoke([HumanMessage(content=parts)]), "off_topic", REFUSAL)
    assert counter.inputs == []


def test_prompt_values_are_accepted(gated: GatekeeperRunnable, counter: Counter) -> None:
    """String and chat PromptValues are judged on their messages."""
    assert gated.invoke(StringPromptValue(text="track my order")) == "LLM ANSWER"
    chat = ChatPromptValue(messages=[SystemMessage("be brief"), HumanMessage("write a poem")])
    assert_blocked(gated.invoke(chat), "off_topic", REFUSAL)
    assert len(counter.inputs) == 1


def test_single_message_is_accepted(gated: GatekeeperRunnable) -> None:
    """A lone BaseMessage is a one-message conversation."""
    assert gated.invoke(HumanMessage("refund my money")) == "LLM ANSWER"


def test_dict_input_key_holds_text_or_messages(gated: GatekeeperRunnable, counter: Counter) -> None:
    """A dict is judged on input_key, which may hold text or messages; the dict is forwarded."""
    asked = {"question": "refund my money", "customer": "c-1"}
    assert gated.invoke(asked) == "LLM ANSWER"
    assert counter.inputs == [asked]
    assert_blocked(gated.invoke({"question": [HumanMessage("write a poem")]}), "off_topic", REFUSAL)


def test_history_key_gives_the_conversation(tiny_gate: Gatekeeper, counter: Counter) -> None:
    """With history_key, earlier messages in the dict make a short follow-up in-domain."""
    gated = GatekeeperRunnable(
        gate=tiny_gate,
        runnable=RunnableLambda(counter),
        input_key="question",
        history_key="history",
    )
    history = [HumanMessage("where is my order"), AIMessage("What is the order number?")]
    assert gated.invoke({"question": "NW-55120", "history": history}) == "LLM ANSWER"
    assert_blocked(gated.invoke({"question": "NW-55120", "history": []}), "off_topic", REFUSAL)
    assert_blocked(gated.invoke({"question": "NW-55120"}), "off_topic", REFUSAL)


@pytest.mark.parametrize(
    "bad",
    ["   ", [], [SystemMessage("only a system prompt")], {"question": ""}],
    ids=["blank", "no-messages", "no-user-turn", "blank-in-dict"],
)
def test_empty_input_raises_input_error(
    gated: GatekeeperRunnable, counter: Counter, bad: Any
) -> None:
    """An empty message or a conversation without a user turn raises EmptyMessageError."""
    with pytest.raises(EmptyMessageError):
        gated.invoke(bad)
    assert counter.inputs == []


@pytest.mark.parametrize(
    "bad", [{"text": "where is my order"}, 42, [object()]], ids=["missing-key", "int", "junk-list"]
)
def test_unusable_input_raises_input_error(gated: GatekeeperRunnable, bad: Any) -> None:
    """A dict without input_key, or a value that is no message, raises InputError."""
    with pytest.raises(InputError):
        gated.invoke(bad)


async def test_ainvoke_raises_input_error(gated: GatekeeperRunnable) -> None:
    """InputError propagates unchanged from ainvoke."""
    with pytest.raises(EmptyMessageError):
        await gated.ainvoke("")


def test_too_long_message_raises(tmp_path: Path, counter: Counter) -> None:
    """A message over gate.max_message_chars raises the gate's InputError."""
    gate = make_gate(tmp_path, gate={"threshold": 0.35, "max_message_chars": 20})
    gated = GatekeeperRunnable(gate=gate, runnable=RunnableLambda(counter))
    with pytest.raises(InputError):
        gated.invoke("where is my order " * 5)
    assert counter.inputs == []


def test_plain_function_is_wrapped_as_runnable(tiny_gate: Gatekeeper) -> None:
    """A plain function given as runnable is coerced to a RunnableLambda."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=lambda text: text.upper())
    assert gated.invoke("track my order") == "TRACK MY ORDER"


def test_from_settings_builds_its_gate(tmp_path: Path, counter: Counter) -> None:
    """from_settings builds the gate from settings and syncs the index on first use."""
    gated = GatekeeperRunnable.from_settings(
        RunnableLambda(counter),
        data_dir=tmp_path,
        catalog=tiny_catalog(),
        embedder=HashingEmbedder(),
        gate={"threshold": 0.35, "allow_uncalibrated": True},
    )
    assert gated.invoke("where is my order") == "LLM ANSWER"
    assert_blocked(gated.invoke("tell me a joke"), "off_topic", REFUSAL)
    full = GatekeeperRunnable.from_settings(
        RunnableLambda(counter),
        decision_detail="full",
        data_dir=tmp_path,
        catalog=tiny_catalog(),
        embedder=HashingEmbedder(),
        gate={"threshold": 0.35, "allow_uncalibrated": True},
    )
    assert "neighbours" in full.invoke("tell me a joke").response_metadata["gatekeeper"]


# -- chat models -----------------------------------------------------------------------------


def test_an_admitted_chat_message_carries_its_decision(tiny_gate: Gatekeeper) -> None:
    """Admitted: the chat model's AIMessage comes back with its content and metadata, the
    decision summary added to response_metadata (admitted answers carried none, so a caller
    could not tell a follow-up from a first question)."""
    gated = GatekeeperRunnable(
        gate=tiny_gate, runnable=FakeListChatModel(responses=["On its way."])
    )
    result = gated.invoke("where is my order")
    assert isinstance(result, AIMessage)
    assert result.content == "On its way."
    decision = result.response_metadata["gatekeeper"]
    assert (decision["route"], decision["intent"]) == ("llm", "order_status")
    assert "neighbours" not in decision


def test_the_first_streamed_chunk_carries_the_decision(tiny_gate: Gatekeeper) -> None:
    """Streaming an admitted answer, the first chunk carries the decision and the chunks add
    up to one message with it once (a decision on every chunk would be merged into nonsense,
    strings concatenated)."""
    gated = GatekeeperRunnable(
        gate=tiny_gate, runnable=FakeListChatModel(responses=["On its way."])
    )
    chunks = list(gated.stream("where is my order"))
    assert len(chunks) > 1 and "gatekeeper" in chunks[0].response_metadata
    assert all("gatekeeper" not in c.response_metadata for c in chunks[1:])
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert (
        total.content == "On its way." and total.response_metadata["gatekeeper"]["route"] == "llm"
    )


def test_shadow_mode_always_calls_runnable(tmp_path: Path, counter: Counter) -> None:
    """In shadow mode an off-topic message still reaches the runnable."""
    gate = make_gate(tmp_path, gate={"threshold": 0.35, "shadow": True})
    gated = GatekeeperRunnable(gate=gate, runnable=RunnableLambda(counter))
    assert gated.invoke("tell me a joke") == "LLM ANSWER"
    assert gated.batch(["write a poem", "hello"]) == ["LLM ANSWER", "LLM ANSWER"]
    assert counter.inputs == ["tell me a joke", "write a poem", "hello"]


async def test_shadow_mode_async(tmp_path: Path, counter: Counter) -> None:
    """Shadow mode forwards from ainvoke and astream too, marked in the run metadata."""
    gate = make_gate(tmp_path, gate={"threshold": 0.35, "shadow": True})
    recorder = Recorder()
    gated = GatekeeperRunnable(gate=gate, runnable=answers("fine"))
    result = await gated.ainvoke("tell me a joke", {"callbacks": [recorder]})
    assert result.content == "fine"
    (start,) = recorder.chat_model_starts()
    assert start["metadata"]["gatekeeper_route"] == "off_topic"
    assert start["metadata"]["gatekeeper_shadow"] is True


# -- async -----------------------------------------------------------------------------------


async def test_ainvoke_admitted_and_blocked(gated: GatekeeperRunnable, counter: Counter) -> None:
    """ainvoke forwards in-domain messages and answers off-topic and canned ones itself."""
    assert await gated.ainvoke("where is my order") == "LLM ANSWER"
    assert_blocked(await gated.ainvoke("tell me a joke"), "off_topic", REFUSAL)
    assert_blocked(await gated.ainvoke({"question": "hello"}), "canned", GREETING)
    assert counter.inputs == ["where is my order"]


# -- batch -----------------------------------------------------------------------------------


class BatchSpy(FakeListChatModel):
    """A fake chat model that records the inputs of each batch and abatch call."""

    batches: list[list[Any]]

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        self.batches.append(list(inputs))
        return super().batch(inputs, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        self.batches.append(list(inputs))
        return await super().abatch(inputs, config, **kwargs)


MIXED = ["where is my order", "tell me a joke", "hello", "refund my money", "write a poem"]


def check_batch_results(results: list[Any]) -> None:
    assert [r.content for r in results] == ["ok", REFUSAL, GREETING, "ok", REFUSAL]
    assert [r.response_metadata.get("gatekeeper", {}).get("route") for r in results] == [
        "llm",
        "off_topic",
        "canned",
        "llm",
        "off_topic",
    ]


def test_batch_decides_in_one_pass_and_forwards_admitted_only(tiny_gate: Gatekeeper) -> None:
    """batch: one embedding pass for all inputs, one wrapped batch of the admitted, in order."""
    spy = BatchSpy(responses=["ok"], batches=[])
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=spy)
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    tiny_gate.ready()
    before = embedder.calls
    results = gated.batch(list(MIXED))
    assert embedder.calls == before + 1
    assert spy.batches == [["where is my order", "refund my money"]]
    check_batch_results(results)


async def test_abatch_decides_in_one_pass_and_forwards_admitted_only(
    tiny_gate: Gatekeeper,
) -> None:
    """abatch: one embedding pass for all inputs, one wrapped abatch of the admitted, in order."""
    spy = BatchSpy(responses=["ok"], batches=[])
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=spy)
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    tiny_gate.ready()
    before = embedder.calls
    results = await gated.abatch(list(MIXED))
    assert embedder.calls == before + 1
    assert spy.batches == [["where is my order", "refund my money"]]
    check_batch_results(results)


def test_batch_all_blocked_never_calls_runnable(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """A batch with nothing admitted makes no call to the wrapped runnable."""
    results = gated.batch(["tell me a joke", "write a poem"])
    assert results == [REFUSAL, REFUSAL]
    assert counter.inputs == []
    assert gated.batch([]) == []


def test_batch_bad_input_raises_without_forwarding(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """Without return_exceptions, one bad input raises before anything is forwarded."""
    with pytest.raises(EmptyMessageError):
        gated.batch(["where is my order", "  "])
    with pytest.raises(InputError):
        gated.batch(["where is my order", {"wrong": "key"}])
    assert counter.inputs == []


def test_batch_return_exceptions_keeps_errors_in_place(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """With return_exceptions, bad inputs get their error in their own slot; the rest run."""
    results = gated.batch(
        ["where is my order", "  ", {"wrong": "key"}, "tell me a joke"], return_exceptions=True
    )
    assert results[0] == "LLM ANSWER"
    assert isinstance(results[1], EmptyMessageError)
    assert isinstance(results[2], InputError)
    assert_blocked(results[3], "off_topic", REFUSAL)
    assert counter.inputs == ["where is my order"]


async def test_abatch_return_exceptions_keeps_errors_in_place(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """abatch with return_exceptions puts each error in its own slot, the rest run."""
    results = await gated.abatch(["", "refund my money"], return_exceptions=True)
    assert isinstance(results[0], EmptyMessageError)
    assert results[1] == "LLM ANSWER"
    with pytest.raises(EmptyMessageError):
        await gated.abatch(["", "refund my money"])
    assert counter.inputs == ["refund my money"]


# -- streaming -------------------------------------------------------------------------------


def test_stream_admitted_yields_model_chunks(tiny_gate: Gatekeeper) -> None:
    """stream: an admitted message streams the chat model's own chunks."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("your parcel ships today"))
    chunks = list(gated.stream("where is my order"))
    assert len(chunks) > 1
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "your parcel ships today"


def test_stream_blocked_yields_one_reply_chunk(tiny_gate: Gatekeeper, counter: Counter) -> None:
    """stream: a blocked message yields one chunk (text here) with the reply and the decision."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=RunnableLambda(counter))
    (chunk,) = list(gated.stream("tell me a joke"))
    assert isinstance(chunk, str)
    assert chunk == REFUSAL
    assert chunk.response_metadata["gatekeeper"]["route"] == "off_topic"
    assert counter.inputs == []


async def test_astream_admitted_and_blocked(tiny_gate: Gatekeeper) -> None:
    """astream: model chunks when admitted, one reply chunk when canned."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("your parcel ships today"))
    chunks = [c async for c in gated.astream("track my order")]
    assert len(chunks) > 1
    assert "".join(str(c.content) for c in chunks) == "your parcel ships today"
    blocked = [c async for c in gated.astream("hello")]
    assert len(blocked) == 1
    assert isinstance(blocked[0], AIMessageChunk)
    assert blocked[0].content == GREETING


def test_stream_raises_input_error(gated: GatekeeperRunnable) -> None:
    """InputError propagates from stream."""
    with pytest.raises(EmptyMessageError):
        list(gated.stream(" "))


def test_transform_adds_up_streamed_input(gated: GatekeeperRunnable, counter: Counter) -> None:
    """A streamed input (string pieces from an upstream step) is judged as a whole."""
    assert list(gated.transform(iter(["where is ", "my order"]))) == ["LLM ANSWER"]
    assert counter.inputs == ["where is my order"]


async def test_astream_events_admitted(tiny_gate: Gatekeeper) -> None:
    """astream_events: the check run outputs the decision; model events carry it in metadata."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("ships today"))
    events = [e async for e in gated.astream_events("where is my order", version="v2")]
    kinds = [(e["event"], e["name"]) for e in events]
    assert kinds[0] == ("on_chain_start", "GatekeeperRunnable")
    assert kinds[-1] == ("on_chain_end", "GatekeeperRunnable")
    check_end = next(e for e in events if (e["event"], e["name"]) == ("on_chain_end", CHECK_RUN))
    assert check_end["data"]["output"]["route"] == "llm"
    assert "neighbours" not in check_end["data"]["output"]  # hosts forward events to users
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(str(e["data"]["chunk"].content) for e in streamed) == "ships today"
    assert all(e["metadata"]["gatekeeper_route"] == "llm" for e in streamed)
    assert all(e["metadata"]["gatekeeper_intent"] == "order_status" for e in streamed)


async def test_the_check_run_outputs_exemplar_texts_only_with_full_detail(
    tiny_gate: Gatekeeper,
) -> None:
    """The gatekeeper_check run's output, which hosts stream to their users (LangServe's
    stream_events), holds the neighbours' exemplar texts only with decision_detail="full" (it
    held them whatever the detail)."""

    async def check_output(gated: GatekeeperRunnable) -> dict[str, Any]:
        events = [e async for e in gated.astream_events("write a poem", version="v2")]
        ends = [e for e in events if (e["event"], e["name"]) == ("on_chain_end", CHECK_RUN)]
        output: dict[str, Any] = ends[0]["data"]["output"]
        return output

    slim = GatekeeperRunnable(gate=tiny_gate, runnable=answers("ok"))
    full = slim.model_copy(update={"decision_detail": "full"})
    assert {"neighbours", "reason"}.isdisjoint(await check_output(slim))
    assert (await check_output(full))["neighbours"]


async def test_astream_events_blocked(tiny_gate: Gatekeeper, counter: Counter) -> None:
    """astream_events: a blocked message is answered by a gatekeeper_reply chat model run."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=RunnableLambda(counter))
    events = [e async for e in gated.astream_events("write a poem", version="v2")]
    names = {e["name"] for e in events}
    assert {"GatekeeperRunnable", CHECK_RUN, REPLY_RUN} <= names
    assert "RunnableLambda" not in names
    reply_end = next(e for e in events if e["event"] == "on_chat_model_end")
    assert reply_end["name"] == REPLY_RUN
    assert REPLY_RUN in reply_end["tags"]
    assert reply_end["metadata"]["gatekeeper_route"] == "off_topic"
    assert reply_end["metadata"]["ls_provider"] == "gatekeeper"
    assert reply_end["data"]["output"].content == REFUSAL
    assert counter.inputs == []


async def test_refusal_reaches_a_chat_ui_filtering_chat_model_stream(
    tiny_gate: Gatekeeper,
) -> None:
    """prompt | gate | parser: a UI showing on_chat_model_stream events shows the refusal."""
    prompt = ChatPromptTemplate.from_messages([("system", "Shop."), ("human", "{question}")])

    async def shown(question: str) -> str:
        gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("It ships today."))
        chain = prompt | gated | StrOutputParser()
        text = ""
        async for event in chain.astream_events({"question": question}, version="v2"):
            if event["event"] == "on_chat_model_stream":
                text += str(event["data"]["chunk"].content)
        return text

    assert await shown("where is my order") == "It ships today."
    assert await shown("write a poem") == REFUSAL
    assert await shown("hello") == GREETING


def test_stream_refusal_is_a_chat_model_stream(tiny_gate: Gatekeeper) -> None:
    """stream: the refusal chunk comes from a chat model run whose tokens callbacks see."""

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    tokens = Tokens()
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("ok"))
    (chunk,) = list(gated.stream("tell me a joke", {"callbacks": [tokens]}))
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.content == REFUSAL
    assert tokens.tokens == [REFUSAL]


class TokenChunks(BaseCallbackHandler):
    """Collects on_llm_new_token tokens and their chunks' message ids, and on_llm_end ids."""

    run_inline = True

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.chunk_ids: list[str | None] = []
        self.end_ids: list[str | None] = []

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        self.tokens.append(token)
        self.chunk_ids.append(chunk.message.id if chunk is not None else None)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.end_ids.append(response.generations[0][0].message.id)


async def test_refusal_reaches_token_callbacks_through_invoke_ainvoke_batch(
    tiny_gate: Gatekeeper,
) -> None:
    """invoke, ainvoke and batch send the refusal as one on_llm_new_token, ids matching."""
    prompt = ChatPromptTemplate.from_messages([("system", "Shop."), ("human", "{question}")])
    chain = prompt | GatekeeperRunnable(gate=tiny_gate, runnable=answers()) | StrOutputParser()
    question = {"question": "tell me a joke"}
    for run in ("invoke", "ainvoke", "batch"):
        handler = TokenChunks()
        config: RunnableConfig = {"callbacks": [handler]}
        if run == "invoke":
            answer = chain.invoke(question, config)
        elif run == "ainvoke":
            answer = await chain.ainvoke(question, config)
        else:
            (answer,) = chain.batch([question], config)
        assert answer == REFUSAL
        assert handler.tokens == [REFUSAL], run
        assert handler.chunk_ids == handler.end_ids  # one message: a stream dedupes by id
        assert handler.end_ids[0]


# -- callbacks, tags, metadata ---------------------------------------------------------------


def traced_config(recorder: Recorder) -> RunnableConfig:
    return {"callbacks": [recorder], "tags": ["shop-bot"], "metadata": {"customer": "c-42"}}


def check_admitted_trace(recorder: Recorder) -> None:
    (gate_run,) = recorder.started("GatekeeperRunnable")
    (check_run,) = recorder.started(CHECK_RUN)
    (model_run,) = recorder.chat_model_starts()
    assert check_run["parent_run_id"] == gate_run["run_id"]
    assert model_run["parent_run_id"] == gate_run["run_id"]
    for run in (gate_run, check_run, model_run):
        assert "shop-bot" in run["tags"]
        assert run["metadata"]["customer"] == "c-42"
    assert recorder.output_of(check_run["run_id"])["route"] == "llm"
    meta = model_run["metadata"]
    assert (meta["gatekeeper_route"], meta["gatekeeper_intent"]) == ("llm", "order_status")
    assert isinstance(meta["gatekeeper_score"], float)
    assert meta["gatekeeper_shadow"] is False
    assert not recorder.started(REPLY_RUN)


def check_blocked_trace(recorder: Recorder) -> None:
    (gate_run,) = recorder.started("GatekeeperRunnable")
    (reply_run,) = recorder.started(REPLY_RUN)
    assert reply_run["event"] == "chat_model_start"
    assert reply_run["parent_run_id"] == gate_run["run_id"]
    assert {"shop-bot", REPLY_RUN} <= set(reply_run["tags"])
    assert reply_run["metadata"]["customer"] == "c-42"
    assert reply_run["metadata"]["gatekeeper_route"] == "off_topic"
    assert recorder.chat_model_starts() == []


@pytest.mark.parametrize("mode", ["invoke", "stream", "batch"])
def test_callbacks_tags_metadata_flow_through(tiny_gate: Gatekeeper, mode: str) -> None:
    """Callbacks, tags and metadata reach the gate's runs and the model, with the decision."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("ok", "ok"))
    for text, check in (
        ("where is my order", check_admitted_trace),
        ("tell me a joke", check_blocked_trace),
    ):
        recorder = Recorder()
        config = traced_config(recorder)
        if mode == "invoke":
            gated.invoke(text, config)
        elif mode == "stream":
            list(gated.stream(text, config))
        else:
            gated.batch([text], config)
        check(recorder)


@pytest.mark.parametrize("mode", ["ainvoke", "astream", "abatch"])
async def test_callbacks_tags_metadata_flow_through_async(tiny_gate: Gatekeeper, mode: str) -> None:
    """Async: callbacks, tags and metadata reach the gate's runs and the model, with decisions."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=answers("ok", "ok"))
    for text, check in (
        ("where is my order", check_admitted_trace),
        ("tell me a joke", check_blocked_trace),
    ):
        recorder = Recorder()
        config = traced_config(recorder)
        if mode == "ainvoke":
            await gated.ainvoke(text, config)
        elif mode == "astream":
            _ = [c async for c in gated.astream(text, config)]
        else:
            await gated.abatch([text], config)
        check(recorder)


def test_batch_per_input_configs(tiny_gate: Gatekeeper) -> None:
    """batch with one config per input: each model run gets its own input's metadata."""
    gated = GatekeeperRunnable(gate=tiny_gate, runnable=FakeListChatModel(responses=["ok"]))
    recorder = Recorder()
    configs: list[RunnableConfig] = [
        {"callbacks": [recorder], "metadata": {"n": i}} for i in range(3)
    ]
    gated.batch(["track my order", "write a poem", "refund my money"], configs)
    models = {e["metadata"]["n"]: e["metadata"] for e in recorder.chat_model_starts()}
    assert sorted(models) == [0, 2]
    assert models[0]["gatekeeper_intent"] == "order_status"
    assert models[2]["gatekeeper_intent"] == "refund_request"
    (reply,) = recorder.started(REPLY_RUN)
    assert reply["metadata"]["n"] == 1


def test_run_name_names_the_gate_run(gated: GatekeeperRunnable) -> None:
    """with_config(run_name=...) names the gate's own run, not its children."""
    recorder = Recorder()
    gated.with_config(run_name="shop_gate").invoke("where is my order", {"callbacks": [recorder]})
    assert len(recorder.started("shop_gate")) == 1
    assert len(recorder.started(CHECK_RUN)) == 1


# -- LCEL ------------------------------------------------------------------------------------


@pytest.fixture
def chain(tiny_gate: Gatekeeper) -> Any:
    """prompt | gated chat model | StrOutputParser."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You help customers of a small shop."), ("human", "{question}")]
    )
    model = FakeListChatModel(responses=["It ships today."])
    return prompt | GatekeeperRunnable(gate=tiny_gate, runnable=model) | StrOutputParser()


def test_lcel_chain_invoke_and_batch(chain: Any) -> None:
    """In LCEL the gate sits between prompt and parser: answers or refusals come out as text."""
    assert chain.invoke({"question": "where is my order"}) == "It ships today."
    assert chain.invoke({"question": "tell me a joke"}) == REFUSAL
    assert chain.batch([{"question": "hello"}, {"question": "refund my money"}]) == [
        GREETING,
        "It ships today.",
    ]


def test_lcel_chain_stream(chain: Any) -> None:
    """Streaming through the chain yields the model's text chunks, or the refusal once."""
    chunks = list(chain.stream({"question": "where is my order"}))
    assert len(chunks) > 1
    assert "".join(chunks) == "It ships today."
    assert list(chain.stream({"question": "write a poem"})) == [REFUSAL]


async def test_lcel_chain_async(chain: Any) -> None:
    """The chain works async: ainvoke, abatch, astream."""
    assert await chain.ainvoke({"question": "track my order"}) == "It ships today."
    assert await chain.abatch([{"question": "write a poem"}]) == [REFUSAL]
    chunks = [c async for c in chain.astream({"question": "where is my order"})]
    assert "".join(chunks) == "It ships today."


def test_lcel_chain_with_history(tiny_gate: Gatekeeper) -> None:
    """A dict chain with a history placeholder gates on the question in its conversation."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Shop assistant."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = FakeListChatModel(responses=["Found it."])
    gated = GatekeeperRunnable(
        gate=tiny_gate, runnable=prompt | model, input_key="question", history_key="history"
    )
    chain = gated | StrOutputParser()
    history = [HumanMessage("where is my order"), AIMessage("Your order number?")]
    assert chain.invoke({"question": "NW-55120", "history": history}) == "Found it."
    assert chain.invoke({"question": "tell me a joke", "history": history}) == REFUSAL


async def test_a_batch_input_error_names_the_input_and_its_message(
    gated: GatekeeperRunnable,
) -> None:
    """batch/abatch: an unreadable input's error says inputs[i], then the message's index."""
    batch = ["where is my order", "tell me a joke", {"question": [{"role": "user"}]}]
    expected = "inputs[2]: question[0] is an object without 'content'"
    with pytest.raises(InputError) as raised:
        gated.batch(batch)
    assert str(raised.value) == expected
    with pytest.raises(InputError) as araised:
        await gated.abatch(batch)
    assert str(araised.value) == expected
    returned = gated.batch(batch, return_exceptions=True)
    assert str(returned[2]) == expected
    with pytest.raises(InputError, match=r"^inputs\[1\]: the input dict has no key"):
        gated.batch(["where is my order", {"wrong": "key"}])


async def test_batch_input_errors_name_inputs_in_input_order(
    gated: GatekeeperRunnable, counter: Counter
) -> None:
    """batch/abatch: an empty input and an unreadable one both say inputs[i]; the first in
    input order is raised; returned, each names its input (the empty one said messages[i],
    or nothing)."""
    batch: list[Any] = ["where is my order", "  ", None, "tell me a joke"]
    for bad in (batch, batch[:2]):
        with pytest.raises(EmptyMessageError, match=r"^inputs\[1\]: the message is empty$"):
            gated.batch(bad)
        with pytest.raises(EmptyMessageError, match=r"^inputs\[1\]: the message is empty$"):
            await gated.abatch(bad)
    assert counter.inputs == []
    for results in (
        gated.batch(batch, return_exceptions=True),
        await gated.abatch(batch, return_exceptions=True),
    ):
        assert results[0] == "LLM ANSWER"
        assert isinstance(results[1], EmptyMessageError)
        assert str(results[1]) == "inputs[1]: the message is empty"
        assert isinstance(results[2], InputError)
        assert str(results[2]).startswith("inputs[2]: input: expected a string")
        assert_blocked(results[3], "off_topic", REFUSAL)
    assert counter.inputs == ["where is my order"] * 2
