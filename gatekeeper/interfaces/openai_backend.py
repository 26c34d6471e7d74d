"""The OpenAI-compatible chat backend, and the answers built locally for refused messages:
chat completions (and their chunks) and Responses API responses (and their stream events)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigError
from gatekeeper.interfaces.chat_streams import (
    LocalAsyncStream,
    LocalStream,
    MappedAsyncStream,
    MappedStream,
    upstream_errors,
)
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings, UpstreamSettings, load_settings

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response as OpenAIResponse
    from openai.types.responses import ResponseOutputMessage, ResponseStreamEvent

    from gatekeeper.types import Message

#: The ``model`` of a locally built reply when neither the request nor the backend names one.


LOCAL_MODEL = "gatekeeper"


# -- chat completions built locally ----------------------------------------------------------


def _fresh_hex() -> str:
    """24 random hex digits for an answer's id, from the system's randomness: ids stay unique
    across processes and restarts whatever a caller does to the ``random`` module's seed."""
    return uuid.uuid4().hex[:24]


def completion_id() -> str:
    """A fresh id for a locally built chat completion."""
    return f"chatcmpl-gk-{_fresh_hex()}"


def local_completion(text: str, *, model: str | None = None, n: int = 1) -> ChatCompletion:
    """A complete, valid ``chat.completion`` answering ``text`` (no LLM involved)."""
    from openai.types.chat import ChatCompletion
    from openai.types.chat.chat_completion import Choice
    from openai.types.chat.chat_completion_message import ChatCompletionMessage
    from openai.types.completion_usage import CompletionUsage

    return ChatCompletion(
        id=completion_id(),
        object="chat.completion",
        created=int(time.time()),
        model=model or LOCAL_MODEL,
        choices=[
            Choice(
                index=i,
                finish_reason="stop",
                logprobs=None,
                message=ChatCompletionMessage(role="assistant", content=text),
            )
            for i in range(max(1, n))
        ],
        usage=CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
    )


def local_chunks(
    text: str, *, model: str | None = None, n: int = 1, include_usage: bool = False
) -> list[ChatCompletionChunk]:
    """The ``chat.completion.chunk`` s of a streamed answer of ``text``: a role chunk, the
    content, a finish chunk per choice, and a usage chunk when ``include_usage``."""
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
    from openai.types.completion_usage import CompletionUsage

    ident, created, model = completion_id(), int(time.time()), model or LOCAL_MODEL

    def chunk(choices: list[Choice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=ident,
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=choices,
            usage=usage,
        )

    chunks: list[ChatCompletionChunk] = []
    for i in range(max(1, n)):
        chunks.append(chunk([Choice(index=i, delta=ChoiceDelta(role="assistant", content=""))]))
        chunks.append(chunk([Choice(index=i, delta=ChoiceDelta(content=text))]))
        chunks.append(chunk([Choice(index=i, delta=ChoiceDelta(), finish_reason="stop")]))
    if include_usage:
        usage = CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        chunks.append(chunk([], usage))
    return chunks


# -- Responses API answers built locally --------------------------------------------------------


def response_id() -> str:
    """A fresh id for a locally built Responses API ``response``."""
    return f"resp_gk_{_fresh_hex()}"


def local_response(
    text: str,
    *,
    model: str | None = None,
    instructions: str | None = None,
    ident: str | None = None,
    created_at: int | None = None,
    status: str = "completed",
) -> OpenAIResponse:
    """A valid Responses API ``response`` whose output is one assistant message of ``text``
    (no LLM involved); with ``status="in_progress"`` the empty response a stream opens with."""
    from openai.types.responses import Response, ResponseUsage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    done = status == "completed"
    ident = ident or response_id()
    return Response(
        id=ident,
        object="response",
        created_at=created_at if created_at is not None else int(time.time()),
        completed_at=int(time.time()) if done else None,
        status=status,
        model=model or LOCAL_MODEL,
        instructions=instructions,
        output=[_output_message(ident, text)] if done else [],
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[],
        error=None,
        incomplete_details=None,
        usage=ResponseUsage(
            input_tokens=0,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens=0,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=0,
        )
        if done
        else None,
    )


def _message_id(response_ident: str) -> str:
    return "msg_gk_" + (response_ident.removeprefix("resp_gk_") or _fresh_hex())


def _output_message(response_ident: str, text: str | None) -> ResponseOutputMessage:
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText

    content = (
        []
        if text is None
        else [ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])]
    )
    return ResponseOutputMessage(
        id=_message_id(response_ident),
        type="message",
        role="assistant",
        status="completed" if text is not None else "in_progress",
        content=content,
    )


def local_response_events(
    text: str,
    *,
    model: str | None = None,
    instructions: str | None = None,
    ident: str | None = None,
) -> list[ResponseStreamEvent]:
    """The Responses API stream events of an answer of ``text``, in the order the API sends
    them: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
    ``response.content_part.added``, ``response.output_text.delta``,
    ``response.output_text.done``, ``response.content_part.done``,
    ``response.output_item.done``, ``response.completed``."""
    from openai.types.responses import (
        ResponseCompletedEvent,
        ResponseContentPartAddedEvent,
        ResponseContentPartDoneEvent,
        ResponseCreatedEvent,
        ResponseInProgressEvent,
        ResponseOutputItemAddedEvent,
        ResponseOutputItemDoneEvent,
        ResponseOutputText,
        ResponseTextDeltaEvent,
        ResponseTextDoneEvent,
    )

    ident, created = ident or response_id(), int(time.time())
    item_id = _message_id(ident)
    opened = local_response(
        text,
        model=model,
        instructions=instructions,
        ident=ident,
        created_at=created,
        status="in_progress",
    )
    done = local_response(
        text, model=model, instructions=instructions, ident=ident, created_at=created
    )
    part = ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])
    empty = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[Any] = [
        ResponseCreatedEvent(type="response.created", response=opened, sequence_number=0),
        ResponseInProgressEvent(type="response.in_progress", response=opened, sequence_number=0),
        ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            output_index=0,
            item=_output_message(ident, None),
            sequence_number=0,
        ),
        ResponseContentPartAddedEvent(
            type="response.content_part.added", part=empty, sequence_number=0, **where
        ),
        ResponseTextDeltaEvent(
            type="response.output_text.delta", delta=text, logprobs=[], sequence_number=0, **where
        ),
        ResponseTextDoneEvent(
            type="response.output_text.done", text=text, logprobs=[], sequence_number=0, **where
        ),
        ResponseContentPartDoneEvent(
            type="response.content_part.done", part=part, sequence_number=0, **where
        ),
        ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            output_index=0,
            item=_output_message(ident, text),
            sequence_number=0,
        ),
        ResponseCompletedEvent(type="response.completed", response=done, sequence_number=0),
    ]
    for number, event in enumerate(events):
        event.sequence_number = number
    return list(events)


def as_chat_messages(message: Message) -> list[dict[str, Any]]:
    """``message`` in OpenAI chat format: a text becomes one user message."""
    if isinstance(message, str):
        return [{"role": "user", "content": message}]
    if isinstance(message, Mapping):
        return [dict(message)]
    return [dict(m) for m in message]


# -- the OpenAI-compatible chat backend ----------------------------------------------------------


class OpenAIChatBackend:
    """Any OpenAI-compatible chat endpoint, through the ``openai`` client.

    ``backend(message, **kwargs)`` sends ``message`` (a text or chat messages) to
    ``chat.completions.create`` with ``model`` from settings unless given, and returns what the
    client returns (a ``ChatCompletion``, or a stream of chunks with ``stream=True``).
    ``await backend.acall(...)`` does the same on the async client. openai's errors become
    gatekeeper's: :class:`UpstreamTimeoutError`, :class:`UpstreamUnavailableError`,
    :class:`BackendError` (with ``status_code``).
    """

    def __init__(
        self,
        settings: UpstreamSettings | Settings | None = None,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        **defaults: Any,
    ) -> None:
        if isinstance(settings, Settings):
            settings = settings.upstream
        # none given: the upstream the settings file and GATEKEEPER_UPSTREAM__* name, as
        # everywhere else (an empty UpstreamSettings() meant api.openai.com and OPENAI_API_KEY)
        self.settings = settings or load_settings().upstream
        self.defaults = defaults
        self._client = client
        self._async_client = async_client
        self._own_async = False  # a client passed in is the caller's to manage
        self._async_loop: asyncio.AbstractEventLoop | None = None
        if not self.model:
            # Said now, not at the first admitted message (which may come hours later, when a
            # gate in front has refused everything before it): every call must pass model=.
            get_logger("gatekeeper.backend").warning(
                "backend.no_model",
                message="no chat model: set upstream.model (GATEKEEPER_UPSTREAM__MODEL) or pass "
                "model= to the backend or to every call",
            )

    @property
    def model(self) -> str | None:
        """The chat model used when a call names none."""
        model = self.defaults.get("model", self.settings.model)
        return str(model) if model else None

    # -- clients, created on first use ----------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return {
            "base_url": self.settings.base_url,
            # a keyless local endpoint still needs some key for the client to start
            "api_key": key or os.environ.get("OPENAI_API_KEY") or "no-key",
            "timeout": self.settings.timeout,
            "max_retries": self.settings.max_retries,
        }

    @property
    def client(self) -> openai.OpenAI:
        """The sync ``openai`` client (created on first use)."""
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._client_options())
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The async ``openai`` client (created on first use)."""
        loop = _running_loop()
        if self._async_client is None or (self._own_async and self._async_loop is not loop):
            # one per event loop: a client's connections belong to the loop that opened them
            # (reused after asyncio.run() closed that loop: "Event loop is closed")
            import openai

            self._async_client = openai.AsyncOpenAI(**self._client_options())
            self._own_async, self._async_loop = True, loop
        return self._async_client

    # -- calls ------------------------------------------------------------------------------

    def _request(self, message: Message, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        request = {**self.defaults, **kwargs}
        request["messages"] = as_chat_messages(message)
        if not request.get("model"):
            if not self.settings.model:
                raise ConfigError(
                    "no chat model: set upstream.model (GATEKEEPER_UPSTREAM__MODEL) or pass model="
                )
            request["model"] = self.settings.model
        return request

    def __call__(self, message: Message, **kwargs: Any) -> Any:
        """``chat.completions.create`` with ``message``; returns the client's answer (a
        stream's errors while it is read are mapped too)."""
        request = self._request(message, kwargs)
        where = self.settings.base_url
        with upstream_errors(where):
            answer = self.client.chat.completions.create(**request)
        return MappedStream(answer, where) if request.get("stream") else answer

    async def acall(self, message: Message, **kwargs: Any) -> Any:
        """:meth:`__call__` on the async client."""
        request = self._request(message, kwargs)
        where = self.settings.base_url
        with upstream_errors(where):
            answer = await self.async_client.chat.completions.create(**request)
        return MappedAsyncStream(answer, where) if request.get("stream") else answer

    def local_reply(self, text: str, **kwargs: Any) -> Any:
        """What this backend would return for ``text``, built locally: a ``ChatCompletion``,
        or an iterator of ``ChatCompletionChunk`` s when ``stream=True``."""
        model = kwargs.get("model") or self.model
        n = int(kwargs.get("n") or 1)
        if kwargs.get("stream"):
            usage = bool((kwargs.get("stream_options") or {}).get("include_usage"))
            return LocalStream(local_chunks(text, model=model, n=n, include_usage=usage))
        return local_completion(text, model=model, n=n)

    async def alocal_reply(self, text: str, **kwargs: Any) -> Any:
        """:meth:`local_reply` for async callers: streams are async streams."""
        reply = self.local_reply(text, **kwargs)
        if kwargs.get("stream"):
            return LocalAsyncStream(reply)
        return reply

    def close(self) -> None:
        """Close the sync client, if one was created."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close both clients, if created."""
        self.close()
        if self._async_client is not None:
            await self._async_client.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
