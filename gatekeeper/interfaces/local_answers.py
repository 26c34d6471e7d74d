"""Answers built locally, with no LLM: what a refused or canned message gets in the shape the
caller asked for. Chat completions (and their chunks) and Responses API responses (and their
stream events).

A request that asks for a **structured format** (``response_format`` of a chat request, or
``text.format`` of a Responses request, of type ``json_schema`` or ``json_object``) cannot be
answered with free text in ``content``: a client parsing the JSON it asked for would crash on
every refused message. Its local answer comes as a **refusal** instead, the shape OpenAI uses
when a model declines to answer in the requested format: ``message.refusal`` with ``content``
null (``refusal`` deltas when streamed), or a ``refusal`` content part in a Responses output.
The ``openai`` client's ``parse`` helpers then give ``parsed = None`` and the text in
``refusal``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response as OpenAIResponse
    from openai.types.responses import ResponseOutputMessage, ResponseStreamEvent

#: Structured output formats: a local answer to a request asking for one is a refusal.
STRUCTURED_FORMATS = frozenset({"json_schema", "json_object"})


def structured(response_format: Any) -> bool:
    """Whether ``response_format`` (a chat request's, or a Responses request's ``text.format``)
    asks for structured output, so a local answer must be a refusal, not content."""
    if not isinstance(response_format, Mapping):
        return False
    kind = response_format.get("type")
    return isinstance(kind, str) and kind in STRUCTURED_FORMATS


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


def local_completion(
    text: str, *, model: str | None = None, n: int = 1, refusal: bool = False
) -> ChatCompletion:
    """A complete, valid ``chat.completion`` answering ``text`` (no LLM involved); with
    ``refusal``, ``text`` is the message's ``refusal`` and ``content`` is null."""
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
                message=ChatCompletionMessage(role="assistant", content=None, refusal=text)
                if refusal
                else ChatCompletionMessage(role="assistant", content=text),
            )
            for i in range(max(1, n))
        ],
        usage=CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
    )


def local_chunks(
    text: str,
    *,
    model: str | None = None,
    n: int = 1,
    include_usage: bool = False,
    refusal: bool = False,
) -> list[ChatCompletionChunk]:
    """The ``chat.completion.chunk`` s of a streamed answer of ``text``: a role chunk, the
    content (``refusal`` deltas with ``refusal``), a finish chunk per choice, and a usage chunk
    when ``include_usage``."""
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
        if refusal:
            opened, said = ChoiceDelta(role="assistant", refusal=""), ChoiceDelta(refusal=text)
        else:
            opened, said = ChoiceDelta(role="assistant", content=""), ChoiceDelta(content=text)
        chunks.append(chunk([Choice(index=i, delta=opened)]))
        chunks.append(chunk([Choice(index=i, delta=said)]))
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
    refusal: bool = False,
) -> OpenAIResponse:
    """A valid Responses API ``response`` whose output is one assistant message of ``text``
    (no LLM involved; a ``refusal`` part with ``refusal``); with ``status="in_progress"`` the
    empty response a stream opens with."""
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
        output=[_output_message(ident, text, refusal=refusal)] if done else [],
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


def answer_of_item(item_id: Any) -> str | None:
    """The id of the local ``response`` whose output message has the id ``item_id`` (None for
    an id no local answer gives its message)."""
    if not isinstance(item_id, str) or not item_id.startswith("msg_gk_") or item_id == "msg_gk_":
        return None
    return "resp_gk_" + item_id.removeprefix("msg_gk_")


def _part(text: str, *, refusal: bool) -> Any:
    """One content part of a local answer: output text, or a refusal."""
    from openai.types.responses import ResponseOutputRefusal, ResponseOutputText

    if refusal:
        return ResponseOutputRefusal(type="refusal", refusal=text)
    return ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])


def _output_message(
    response_ident: str, text: str | None, *, refusal: bool = False
) -> ResponseOutputMessage:
    from openai.types.responses import ResponseOutputMessage

    content = [] if text is None else [_part(text, refusal=refusal)]
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
    refusal: bool = False,
) -> list[ResponseStreamEvent]:
    """The Responses API stream events of an answer of ``text``, in the order the API sends
    them: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
    ``response.content_part.added``, ``response.output_text.delta``,
    ``response.output_text.done`` (``response.refusal.delta`` and ``.done`` with
    ``refusal``), ``response.content_part.done``, ``response.output_item.done``,
    ``response.completed``."""
    from openai.types.responses import (
        ResponseCompletedEvent,
        ResponseContentPartAddedEvent,
        ResponseContentPartDoneEvent,
        ResponseCreatedEvent,
        ResponseInProgressEvent,
        ResponseOutputItemAddedEvent,
        ResponseOutputItemDoneEvent,
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
        text,
        model=model,
        instructions=instructions,
        ident=ident,
        created_at=created,
        refusal=refusal,
    )
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
            type="response.content_part.added",
            part=_part("", refusal=refusal),
            sequence_number=0,
            **where,
        ),
        *_said(text, where, refusal=refusal),
        ResponseContentPartDoneEvent(
            type="response.content_part.done",
            part=_part(text, refusal=refusal),
            sequence_number=0,
            **where,
        ),
        ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            output_index=0,
            item=_output_message(ident, text, refusal=refusal),
            sequence_number=0,
        ),
        ResponseCompletedEvent(type="response.completed", response=done, sequence_number=0),
    ]
    for number, event in enumerate(events):
        event.sequence_number = number
    return list(events)


def _said(text: str, where: dict[str, Any], *, refusal: bool) -> list[Any]:
    """The delta and done events of a local answer's one content part."""
    from openai.types.responses import (
        ResponseRefusalDeltaEvent,
        ResponseRefusalDoneEvent,
        ResponseTextDeltaEvent,
        ResponseTextDoneEvent,
    )

    if refusal:
        return [
            ResponseRefusalDeltaEvent(
                type="response.refusal.delta", delta=text, sequence_number=0, **where
            ),
            ResponseRefusalDoneEvent(
                type="response.refusal.done", refusal=text, sequence_number=0, **where
            ),
        ]
    return [
        ResponseTextDeltaEvent(
            type="response.output_text.delta", delta=text, logprobs=[], sequence_number=0, **where
        ),
        ResponseTextDoneEvent(
            type="response.output_text.done", text=text, logprobs=[], sequence_number=0, **where
        ),
    ]
