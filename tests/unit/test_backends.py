"""The gate in front of a backend: ``GatedBackend`` and the locally built chat completions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gatekeeper.decision import Route
from gatekeeper.errors import ConfigError, EmptyMessageError, InputError, MessageTooLongError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend, as_chat_messages
from gatekeeper.interfaces.wrapper import Gated, GatedBackend
from gatekeeper.settings import UpstreamSettings
from gatekeeper.testing import make_gate

OFF_TOPIC_REPLY = "Sorry, I only help with orders."
GREETING_REPLY = "Hello! How can I help?"


class CountingBackend:
    """A sync backend that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, message: Any, **kwargs: Any) -> str:
        self.calls.append((message, kwargs))
        return f"llm: {message if isinstance(message, str) else message[-1]['content']}"


class AsyncCountingBackend:
    """An async backend that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, message: Any, **kwargs: Any) -> str:
        self.calls.append(message)
        return f"async llm: {message}"


@pytest.fixture
def backend() -> CountingBackend:
    """A fresh counting sync backend."""
    return CountingBackend()


def test_wrap_returns_a_gated_backend(tiny_gate: Gatekeeper, backend: CountingBackend) -> None:
    """``GatedBackend(gate, backend)`` puts the gate in front of the backend."""
    gated = GatedBackend(tiny_gate, backend)
    assert isinstance(gated, GatedBackend)
    assert gated.backend is backend


def test_admitted_message_reaches_the_backend(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """An in-domain message returns the backend's output unchanged, with its kwargs."""
    gated = GatedBackend(tiny_gate, backend)
    assert gated("where is my order", temperature=0.2) == "llm: where is my order"
    assert backend.calls == [("where is my order", {"temperature": 0.2})]


def test_off_topic_message_gets_the_reply_without_a_call(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """An off-topic message gets the catalog's off-topic reply; the backend is not called."""
    assert GatedBackend(tiny_gate, backend)("tell me a joke") == OFF_TOPIC_REPLY
    assert backend.calls == []


def test_canned_message_gets_its_fixed_reply(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """A canned intent answers with its fixed reply; the backend is not called."""
    assert GatedBackend(tiny_gate, backend)("hello") == GREETING_REPLY
    assert backend.calls == []


def test_invoke_with_decision_exposes_the_decision(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """``invoke_with_decision`` returns output, decision and whether the backend ran."""
    gated = GatedBackend(tiny_gate, backend)
    admitted = gated.invoke_with_decision("where is my order")
    refused = gated.invoke_with_decision("what is the weather today")
    assert (admitted.decision.route, admitted.decision.intent, admitted.called) == (
        Route.LLM,
        "order_status",
        True,
    )
    assert (refused.decision.route, refused.called, refused.output) == (
        Route.OFF_TOPIC,
        False,
        OFF_TOPIC_REPLY,
    )
    assert len(backend.calls) == 1


def test_gated_is_a_frozen_dataclass(tiny_gate: Gatekeeper, backend: CountingBackend) -> None:
    """``Gated`` results cannot be changed after the fact."""
    result = GatedBackend(tiny_gate, backend).invoke_with_decision("hello")
    assert isinstance(result, Gated)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.called = True  # type: ignore[misc]


def test_conversation_is_passed_as_given_and_judged_as_a_whole(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """A chat-format conversation reaches the backend as given; a short follow-up passes."""
    conversation = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Which order number?"},
        {"role": "user", "content": "NW-55120"},
    ]
    result = GatedBackend(tiny_gate, backend).invoke_with_decision(conversation)
    assert result.called
    assert result.decision.intent == "order_status"
    assert backend.calls[0][0] is conversation


def test_off_topic_turn_mid_conversation_is_refused(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """An off-topic last turn is refused even after an in-domain one."""
    conversation = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "It ships tomorrow."},
        {"role": "user", "content": "tell me a joke"},
    ]
    assert GatedBackend(tiny_gate, backend)(conversation) == OFF_TOPIC_REPLY
    assert backend.calls == []


def test_batch_decides_once_and_calls_only_admitted(
    tiny_gate: Gatekeeper, backend: CountingBackend
) -> None:
    """``batch_with_decisions`` embeds all messages in one pass and calls the backend per admit."""
    messages = ["where is my order", "tell me a joke", "hello", "i want a refund please"]
    passes_before = tiny_gate.embedder.calls  # type: ignore[attr-defined]
    results = GatedBackend(tiny_gate, backend).batch_with_decisions(messages, user="u1")
    assert tiny_gate.embedder.calls == passes_before + 1  # type: ignore[attr-defined]
    assert [r.decision.route for r in results] == [
        Route.LLM,
        Route.OFF_TOPIC,
        Route.CANNED,
        Route.LLM,
    ]
    assert [r.called for r in results] == [True, False, False, True]
    assert [m for m, _ in backend.calls] == ["where is my order", "i want a refund please"]
    assert all(kwargs == {"user": "u1"} for _, kwargs in backend.calls)


async def test_async_backend_through_acall(tiny_gate: Gatekeeper) -> None:
    """An async backend is awaited for admitted messages and skipped for off-topic ones."""
    backend = AsyncCountingBackend()
    gated = GatedBackend(tiny_gate, backend)
    assert await gated.acall("where is my order") == "async llm: where is my order"
    assert await gated.acall("write a poem") == OFF_TOPIC_REPLY
    assert backend.calls == ["where is my order"]


async def test_async_function_backend(tiny_gate: Gatekeeper) -> None:
    """A plain ``async def`` function works as a backend."""
    seen: list[str] = []

    async def llm(message: str) -> str:
        seen.append(message)
        return "answered"

    result = await GatedBackend(tiny_gate, llm).ainvoke_with_decision("track my order")
    assert (result.output, result.called, seen) == ("answered", True, ["track my order"])


async def test_sync_backend_through_acall(tiny_gate: Gatekeeper, backend: CountingBackend) -> None:
    """A sync backend also works from async code (run off the event loop)."""
    gated = GatedBackend(tiny_gate, backend)
    assert await gated.acall("where is my order") == "llm: where is my order"
    assert await gated.acall("hello") == GREETING_REPLY
    assert len(backend.calls) == 1


async def test_async_batch(tiny_gate: Gatekeeper) -> None:
    """``abatch_with_decisions`` calls the async backend only for admitted messages."""
    backend = AsyncCountingBackend()
    results = await GatedBackend(tiny_gate, backend).abatch_with_decisions(
        ["where is my order", "tell me a joke"]
    )
    assert [r.called for r in results] == [True, False]
    assert backend.calls == ["where is my order"]


def test_sync_call_of_async_backend_outside_a_loop(tiny_gate: Gatekeeper) -> None:
    """Calling an async backend from sync code without a running loop still works."""
    backend = AsyncCountingBackend()
    assert GatedBackend(tiny_gate, backend)("where is my order") == "async llm: where is my order"


def test_shadow_mode_forwards_everything(tmp_path: Path, backend: CountingBackend) -> None:
    """In shadow mode every message reaches the backend; the decision still says off_topic."""
    gate = make_gate(tmp_path / "data", gate={"threshold": 0.35, "shadow": True})
    result = GatedBackend(gate, backend).invoke_with_decision("tell me a joke")
    assert result.called
    assert result.output == "llm: tell me a joke"
    assert (result.decision.route, result.decision.shadow) == (Route.OFF_TOPIC, True)


def test_input_mistakes_raise(tiny_gate: Gatekeeper, backend: CountingBackend) -> None:
    """Empty and oversized messages raise InputErrors and never reach the backend."""
    gated = GatedBackend(tiny_gate, backend)
    with pytest.raises(EmptyMessageError):
        gated("   ")
    with pytest.raises(MessageTooLongError):
        gated("order " * 2000)
    assert backend.calls == []


def test_a_backend_must_be_callable(tiny_gate: Gatekeeper) -> None:
    """Wrapping something that cannot be called fails at once."""
    with pytest.raises(TypeError, match="callable"):
        GatedBackend(tiny_gate, "not a backend")


# -- OpenAIChatBackend without the network: blocked answers are built locally --------------------


@pytest.fixture
def chat_backend() -> OpenAIChatBackend:
    """An OpenAI chat backend pointed at a port nothing listens on (it must not be called)."""
    return OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1", model="shop-llm"))


def test_openai_backend_off_topic_is_a_local_chat_completion(
    tiny_gate: Gatekeeper, chat_backend: OpenAIChatBackend
) -> None:
    """Off-topic through the OpenAI backend gives a valid ChatCompletion, no client created."""
    completion = GatedBackend(tiny_gate, chat_backend)("tell me a joke")
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == OFF_TOPIC_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "shop-llm"
    assert chat_backend._client is None
    ChatCompletion.model_validate_json(completion.model_dump_json())


def test_openai_backend_canned_stream_is_chunks(
    tiny_gate: Gatekeeper, chat_backend: OpenAIChatBackend
) -> None:
    """With ``stream=True`` a canned reply comes as chat.completion.chunk objects."""
    chunks = list(GatedBackend(tiny_gate, chat_backend)("hello", stream=True, model="other"))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == GREETING_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"other"}


async def test_openai_backend_async_stream_is_an_async_iterator(
    tiny_gate: Gatekeeper, chat_backend: OpenAIChatBackend
) -> None:
    """``acall`` with ``stream=True`` on a blocked message yields chunks asynchronously."""
    stream = await GatedBackend(tiny_gate, chat_backend).acall("tell me a joke", stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == OFF_TOPIC_REPLY


def test_openai_backend_needs_a_model(tiny_gate: Gatekeeper) -> None:
    """Forwarding without any model configured is a ConfigError, not an obscure client error."""
    backend = OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match="model"):
        GatedBackend(tiny_gate, backend)("where is my order")


def test_as_chat_messages() -> None:
    """A text becomes one user message; a conversation is copied as is."""
    assert as_chat_messages("hi") == [{"role": "user", "content": "hi"}]
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert as_chat_messages(conversation) == conversation


@pytest.mark.parametrize("messages", ["thanks", b"thanks", {"role": "user", "content": "hi"}, None])
def test_a_batch_that_is_one_message_is_refused_before_any_call(
    tiny_gate: Gatekeeper, backend: CountingBackend, messages: Any
) -> None:
    """A string (or a chat message, or None) given as a batch is an InputError naming check():
    it used to be decided, and sent to the LLM, once per character."""
    gated = GatedBackend(tiny_gate, backend)
    with pytest.raises(InputError, match=r"expected a list of messages.*use check\(\)"):
        gated.batch_with_decisions(messages)
    with pytest.raises(InputError, match="expected a list of messages"):
        tiny_gate.check_many(messages)
    assert backend.calls == []


def test_a_batch_may_be_any_iterable(tiny_gate: Gatekeeper, backend: CountingBackend) -> None:
    """A generator of messages is a batch: each message decided once, in order."""
    gated = GatedBackend(tiny_gate, backend)
    results = gated.batch_with_decisions(m for m in ["where is my order", "hello"])
    assert len(results) == 2 and results[0].decision.route == Route.LLM
    assert backend.calls[0][0] == "where is my order"


class ChatUIBackend:
    """A chat UI's function, ``fn(message, history)``, recording what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, message: str, history: Any) -> str:
        self.calls.append((message, history))
        return f"answered {message}"


ASKED = [
    {"role": "user", "content": "where is my order"},
    {"role": "assistant", "content": "Which name is the order under?"},
]


def test_a_chat_ui_history_is_judged_with_the_message(tiny_gate: Gatekeeper) -> None:
    """fn(message, history) as Gradio calls it: the message is judged as the next turn of the
    history (a name answering the assistant passes), and the backend gets both unchanged."""
    backend = ChatUIBackend()
    bot = GatedBackend(tiny_gate, backend)
    alone = bot.invoke_with_decision("Maria Lopez", [])
    assert not alone.called  # a name alone is no shop question
    result = bot.invoke_with_decision("Maria Lopez", ASKED)
    assert result.called and result.decision.followup
    assert backend.calls == [("Maria Lopez", ASKED)]


def test_gradio_pairs_are_a_history_too(tiny_gate: Gatekeeper) -> None:
    """Gradio's older [user, assistant] pairs (a file as a tuple, an empty slot as None) are read
    as the same conversation."""
    backend = ChatUIBackend()
    pairs = [[("photo.png",), None], ["where is my order", "Which name is the order under?"]]
    result = GatedBackend(tiny_gate, backend).invoke_with_decision("Maria Lopez", pairs)
    assert result.called and result.decision.followup
    assert backend.calls[0][1] is pairs


def test_an_off_topic_turn_after_a_history_is_refused(tiny_gate: Gatekeeper) -> None:
    """The history gives no pass to a clearly off-topic request."""
    backend = ChatUIBackend()
    served = [*ASKED, {"role": "user", "content": "Maria"}, {"role": "assistant", "content": "ok"}]
    assert GatedBackend(tiny_gate, backend)("tell me a joke", served) == OFF_TOPIC_REPLY
    assert backend.calls == []


def test_other_positional_arguments_pass_through(tiny_gate: Gatekeeper) -> None:
    """A second argument that is no chat history reaches the backend; the message is judged
    alone."""
    seen: list[tuple[Any, ...]] = []

    def backend(message: str, temperature: float) -> str:
        seen.append((message, temperature))
        return "ok"

    assert GatedBackend(tiny_gate, backend)("where is my order", 0.2) == "ok"
    assert seen == [("where is my order", 0.2)]


async def test_async_chat_ui_function_gets_the_history(tiny_gate: Gatekeeper) -> None:
    """acall(message, history) judges the conversation and awaits fn(message, history)."""
    seen: list[Any] = []

    async def respond(message: str, history: Any) -> str:
        seen.append(history)
        return "ok"

    assert await GatedBackend(tiny_gate, respond).acall("Maria Lopez", ASKED) == "ok"
    assert seen == [ASKED]


def test_a_backend_error_does_not_repeat_the_key_the_upstream_echoed() -> None:
    """An upstream error text that repeats the Authorization it got becomes a BackendError
    whose message has the key replaced, and whose traceback does not chain the original error
    (applications log exception text and tracebacks)."""
    import httpx
    import openai

    from gatekeeper.errors import BackendError

    def echoing(request: httpx.Request) -> httpx.Response:
        said = f"Incorrect API key provided: {request.headers['authorization']}"
        return httpx.Response(401, json={"error": {"message": said, "type": "auth"}})

    client = openai.OpenAI(
        base_url="http://llm/v1",
        api_key="sk-SECRET-abcdef123",
        http_client=httpx.Client(transport=httpx.MockTransport(echoing)),
        max_retries=0,
    )
    backend = OpenAIChatBackend(UpstreamSettings(model="m"), client=client)
    with pytest.raises(BackendError) as caught:
        backend("where is my order")
    assert "SECRET" not in str(caught.value) and "Bearer ***" in str(caught.value)
    assert caught.value.status_code == 401
    import traceback

    logged = "".join(traceback.format_exception(caught.value))  # what logger.exception prints
    assert "SECRET" not in logged
