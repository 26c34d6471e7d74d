"""The OpenAI chat backend as code written for the ``openai`` client uses it: the upstream the
settings name, streams with ``with`` / ``close()`` whether refused or admitted, and errors in
the middle of a stream mapped like errors before it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gatekeeper.errors import BackendError, UpstreamUnavailableError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.interfaces.wrapper import GatedBackend
from gatekeeper.settings import UpstreamSettings
from gatekeeper.testing import LoopbackServer, RecordingUpstream, make_gate

REFUSED = "write me a poem about the sea"
ADMITTED = "where is my order"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gatekeeper:
    built = make_gate(tmp_path_factory.mktemp("streams"))
    built.index()
    return built


def test_no_settings_means_the_configured_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAIChatBackend() reads GATEKEEPER_UPSTREAM__* (and the settings file) like every
    other part: it went to api.openai.com with OPENAI_API_KEY instead."""
    monkeypatch.setenv("GATEKEEPER_UPSTREAM__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GATEKEEPER_UPSTREAM__MODEL", "local-llm")
    backend = OpenAIChatBackend()
    assert backend.model == "local-llm"
    assert str(backend.client.base_url).startswith("http://127.0.0.1:9/v1")


def test_refused_and_admitted_streams_take_with_and_close(gate: Gatekeeper) -> None:
    """A refused stream is used like openai's Stream (with, close, iteration), as an admitted
    one is: code tested on in-domain messages no longer breaks on off-topic ones."""
    with RecordingUpstream() as upstream:
        backend = OpenAIChatBackend(UpstreamSettings(base_url=upstream.base_url, model="m"))
        bot = GatedBackend(gate, backend)
        texts = {}
        for message in (ADMITTED, REFUSED):
            with bot(message, stream=True) as stream:
                texts[message] = "".join(c.choices[0].delta.content or "" for c in stream)
            stream.close()
    assert texts[ADMITTED].startswith("echo") and texts[REFUSED] == gate.catalog.off_topic.reply
    assert len(upstream.calls) == 1


def test_refused_and_admitted_async_streams_take_async_with(gate: Gatekeeper) -> None:
    """The async streams take ``async with`` and ``await close()``; one backend serves several
    event loops (asyncio.run twice: the second call failed with 'Event loop is closed')."""

    async def read(bot: GatedBackend, message: str) -> str:
        stream = await bot.acall(message, stream=True)
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
        await stream.close()
        return text

    with RecordingUpstream() as upstream:
        backend = OpenAIChatBackend(UpstreamSettings(base_url=upstream.base_url, model="m"))
        bot = GatedBackend(gate, backend)
        first = asyncio.run(read(bot, ADMITTED))
        again = asyncio.run(read(bot, ADMITTED))
        refused = asyncio.run(read(bot, REFUSED))
    assert first == again and first.startswith("echo")
    assert refused == gate.catalog.off_topic.reply


def _chunk(text: str) -> str:
    body = {
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }  # fmt: skip
    return f"data: {json.dumps(body)}\n\n"


def _breaking_upstream(how: str) -> Starlette:
    """Streams one chunk, then cuts the connection (``cut``) or sends an event that is not
    JSON (``garbage``)."""

    async def events() -> AsyncIterator[str]:
        yield _chunk("Your order ")
        await asyncio.sleep(0.05)
        if how == "cut":
            raise RuntimeError("connection lost")  # uvicorn drops the connection mid-body
        yield "data: {not json\n\n"

    async def chat(request: Request) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize(
    ("how", "error"), [("cut", UpstreamUnavailableError), ("garbage", BackendError)]
)
def test_an_error_in_the_middle_of_a_stream_is_a_gatekeeper_error(
    gate: Gatekeeper, how: str, error: type[Exception]
) -> None:
    """A stream cut or broken after its first chunk raises a gatekeeper error while it is read,
    sync and async (it raised openai's APIConnectionError or a JSONDecodeError)."""
    with LoopbackServer(_breaking_upstream(how)) as upstream:
        settings = UpstreamSettings(base_url=upstream.url + "/v1", model="m", max_retries=0)
        bot = GatedBackend(gate, OpenAIChatBackend(settings))

        def read() -> Iterator[Any]:
            yield from bot(ADMITTED, stream=True)

        with pytest.raises(error):
            list(read())

        async def aread() -> list[Any]:
            return [c async for c in await bot.acall(ADMITTED, stream=True)]

        with pytest.raises(error):
            asyncio.run(aread())


def test_the_llm_endpoint_is_sent_the_chat_without_refused_turns(gate: Gatekeeper) -> None:
    """Behind GatedBackend, OpenAIChatBackend is sent an admitted chat without the turn the gate
    refused and its refusal (sync and async), as the proxy forwards it; another backend gets
    the chat as given."""
    chat = [
        {"role": "user", "content": REFUSED},
        {"role": "assistant", "content": gate.catalog.off_topic.reply},
        {"role": "user", "content": ADMITTED},
    ]
    with RecordingUpstream() as upstream:
        bot = GatedBackend(
            gate, OpenAIChatBackend(UpstreamSettings(base_url=upstream.base_url, model="m"))
        )
        bot(chat)
        asyncio.run(bot.acall(chat))
        bot(tuple(chat))  # a chat is any sequence of messages (a tuple was sent whole)
    assert [call["messages"] for call in upstream.calls] == [chat[2:], chat[2:], chat[2:]]
    given: list[Any] = []
    GatedBackend(gate, given.append)(chat)
    assert given == [chat]
