"""GatedBackend around the backends chat UIs hand it: streaming (generator) functions, Gradio's
multimodal messages, and a gate that is not one."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gatekeeper.errors import InputError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.wrapper import GatedBackend, backend_kind

ADMITTED = "where is my order?"
REFUSED = "tell me a joke"


def stream_reply(message: Any, history: list[Any]) -> Iterator[str]:
    """A Gradio-style streaming chat function: the answer so far, growing."""
    yield "Your order"
    yield "Your order ships today."


async def astream_reply(message: Any, history: list[Any]) -> AsyncIterator[str]:
    """The async-generator form of :func:`stream_reply`."""
    for text in ("Your order", "Your order ships today."):
        yield text


async def areply(message: Any, history: list[Any]) -> str:
    """An async chat function."""
    return "Your order ships today."


def test_a_gate_that_is_not_one_fails_at_once() -> None:
    """GatedBackend(None, fn) raises TypeError naming the gate (it failed later, on the first
    call, with an AttributeError)."""
    with pytest.raises(TypeError, match="gate must be a Gatekeeper, not NoneType"):
        GatedBackend(None, stream_reply)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backend", "kind"),
    [
        (stream_reply, "generator"),
        (astream_reply, "async generator"),
        (areply, "async"),
        (lambda message, history: "ok", "sync"),
    ],
)
def test_backend_kinds(backend: Any, kind: str) -> None:
    """A backend's kind is what calling it gives."""
    assert backend_kind(backend) == kind


def test_a_refusal_from_a_generator_backend_is_iterated_like_an_answer(
    tiny_gate: Gatekeeper,
) -> None:
    """Around a generator backend, a refusal is a generator too (it was a str, so a caller
    iterating the answer got it one character at a time)."""
    bot = GatedBackend(tiny_gate, stream_reply)
    assert list(bot(ADMITTED, [])) == ["Your order", "Your order ships today."]
    assert list(bot(REFUSED, [])) == [tiny_gate.catalog.off_topic.reply]


def test_as_function_streams_in_gradio(tiny_gate: Gatekeeper) -> None:
    """as_function() of a generator backend is a generator function with the backend's
    signature, which is what Gradio inspects to stream (an instance is never one)."""
    fn = GatedBackend(tiny_gate, stream_reply).as_function()
    assert inspect.isgeneratorfunction(fn)
    assert list(inspect.signature(fn).parameters) == ["message", "history"]
    assert list(fn(REFUSED, [])) == [tiny_gate.catalog.off_topic.reply]
    assert list(fn(ADMITTED, []))[-1] == "Your order ships today."


def test_as_function_of_async_backends(tiny_gate: Gatekeeper) -> None:
    """as_function() of an async generator backend is an async generator function, of an async
    backend a coroutine function; refusals take the same shape."""
    agen = GatedBackend(tiny_gate, astream_reply).as_function()
    coro = GatedBackend(tiny_gate, areply).as_function()
    assert inspect.isasyncgenfunction(agen) and inspect.iscoroutinefunction(coro)

    async def collect(message: str) -> list[str]:
        return [part async for part in agen(message, [])]

    assert asyncio.run(collect(REFUSED)) == [tiny_gate.catalog.off_topic.reply]
    assert asyncio.run(collect(ADMITTED))[-1] == "Your order ships today."
    assert asyncio.run(coro(ADMITTED, [])) == "Your order ships today."


def test_as_function_of_a_plain_backend_returns_its_answer(tiny_gate: Gatekeeper) -> None:
    """as_function() of a plain function is a plain function."""
    fn = GatedBackend(tiny_gate, lambda message, history: "ok").as_function()
    assert not inspect.isgeneratorfunction(fn)
    assert (fn(ADMITTED, []), fn(REFUSED, [])) == ("ok", tiny_gate.catalog.off_topic.reply)


@pytest.mark.parametrize(
    ("message", "called"),
    [
        ({"text": ADMITTED, "files": []}, True),
        ({"text": REFUSED, "files": []}, False),
        ({"text": "", "files": ["/tmp/gradio/parcel.jpg"]}, True),
        ({"files": [{"path": "/tmp/gradio/parcel.jpg"}]}, True),
        ({"text": "hello", "files": ["/tmp/gradio/parcel.jpg"]}, True),
        ({"text": "hello", "files": []}, False),
    ],
)
def test_gradio_multimodal_messages_are_read(
    tiny_gate: Gatekeeper, message: dict[str, Any], called: bool
) -> None:
    """A Gradio multimodal message {"text", "files"} is judged by its text, its files as
    attachments (it raised 'the message is empty'), and a greeting with a file reaches the
    backend (it got the canned greeting); the backend gets it as it was."""
    seen: list[Any] = []

    def answer(m: Any, history: list[Any]) -> str:
        seen.append(m)
        return "answer"

    bot = GatedBackend(tiny_gate, answer)
    result = bot.invoke_with_decision(message, [])
    assert result.called is called and seen == ([message] if called else [])


def test_a_multimodal_message_after_a_history_is_its_next_turn(tiny_gate: Gatekeeper) -> None:
    """After a served history, a multimodal photo-only message follows the conversation."""
    history = [
        {"role": "user", "content": ADMITTED},
        {"role": "assistant", "content": "Could you send a photo of the parcel?"},
    ]
    bot = GatedBackend(tiny_gate, lambda m, h: "thanks")
    result = bot.invoke_with_decision({"text": "", "files": ["parcel.jpg"]}, history)
    assert result.called and result.decision.followup


def test_a_batch_reads_multimodal_messages_too(tiny_gate: Gatekeeper) -> None:
    """batch_with_decisions judges Gradio multimodal messages like a single call does."""
    bot = GatedBackend(tiny_gate, lambda m: "answer")
    results = bot.batch_with_decisions(
        [{"text": ADMITTED, "files": []}, {"text": REFUSED, "files": []}]  # type: ignore[list-item]
    )
    assert [r.called for r in results] == [True, False]


@pytest.mark.parametrize(
    ("message", "problem"),
    [({"text": 5}, "'text' must be a string, not int"), ({"text": "hi", "files": "a.png"}, "list")],
)
def test_a_malformed_multimodal_message_is_named(
    tiny_gate: Gatekeeper, message: dict[str, Any], problem: str
) -> None:
    """A multimodal message with a text that is no string, or files that are no list, is an
    InputError that says which (a number as text was taken for an empty message)."""
    from gatekeeper.errors import InputError

    with pytest.raises(InputError, match=problem):
        GatedBackend(tiny_gate, lambda m, h: "answer").invoke_with_decision(message, [])


@pytest.mark.parametrize("role", ["User", "user ", "customer", "human"])
def test_a_turn_whose_role_is_no_chat_role_is_an_error_not_forwarded(
    tiny_gate: Gatekeeper, role: str
) -> None:
    """A chat whose last turn has a role no chat has ('User', 'customer') raises InputError
    naming it, and the backend is not called (the gate judged the turn before it and the
    backend got the whole chat)."""
    calls: list[Any] = []
    gated = GatedBackend(tiny_gate, lambda message, history: calls.append(message) or "ok")
    chat = [
        {"role": "user", "content": "where is my order?"},
        {"role": "assistant", "content": "It ships today."},
        {"role": role, "content": REFUSED},
    ]
    with pytest.raises(InputError, match=rf"messages\[2\]\.role {role!r} is not a chat role"):
        gated(chat)
    with pytest.raises(InputError, match="is not a chat role"):
        tiny_gate.check(chat)
    assert calls == []


@pytest.mark.parametrize("text", [ADMITTED, REFUSED])
async def test_a_sync_call_of_an_async_backend_in_a_running_loop_fails_for_every_message(
    tiny_gate: Gatekeeper, text: str
) -> None:
    """Calling a GatedBackend of an async backend synchronously inside an event loop raises
    TypeError before deciding, refused messages too (only admitted ones failed, so a test of
    refusals passed and production failed)."""
    gated = GatedBackend(tiny_gate, areply)
    with pytest.raises(TypeError, match="an event loop is running"):
        gated(text)
    with pytest.raises(TypeError, match="an event loop is running"):
        gated.batch_with_decisions([text])
