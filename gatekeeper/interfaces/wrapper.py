"""Backends: what an admitted message is sent to, and the gate in front of one.

:class:`OpenAIChatBackend` calls any OpenAI-compatible chat endpoint through the ``openai`` client
(settings from ``upstream``). :class:`GatedBackend` puts the gate in front of a backend with the
same call shape: admitted messages reach the backend and its output is
returned unchanged; off-topic and canned messages get their reply without a backend call. The
backend is :class:`OpenAIChatBackend`, or any sync or async callable taking the message.

::

    gated = GatedBackend(gate, lambda message: my_llm(message))
    gated("where is my order?")          # my_llm's answer
    gated("write me a poem")             # the catalog's off-topic reply; my_llm not called
    result = gated.invoke_with_decision("hello")
    result.output, result.decision.route, result.called

Positional arguments after the message reach the backend unchanged. When the first of them is
a chat history, as a chat UI passes it (Gradio's ``ChatInterface`` calls ``fn(message,
history)``: a list of ``{"role", "content"}`` messages, or of ``[user, assistant]`` pairs), the
gate judges the message as the next turn of that conversation, so an answer to the assistant's
question ("Maria Lopez") is not refused mid-chat::

    bot = GatedBackend(gate, respond)     # def respond(message, history): ...
    gr.ChatInterface(bot.as_function(), type="messages")

:meth:`GatedBackend.as_function` has the backend's kind (a generator function for a streaming
``respond``: Gradio streams only those) and signature. Gradio's multimodal messages
(``{"text", "files"}``) are judged by their text, the files as attachments.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from gatekeeper.decision import Decision
from gatekeeper.errors import InputError
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.types import batch_of

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.types import Message


@dataclass(frozen=True, slots=True)
class Gated:
    """One gated call: the output the caller gets, the decision, and whether the backend ran."""

    output: Any
    decision: Decision
    called: bool


@runtime_checkable
class LocalReplies(Protocol):
    """A backend that knows how to shape a reply it did not compute (e.g. a ChatCompletion)."""

    def local_reply(self, text: str, **kwargs: Any) -> Any: ...


class GatedBackend:
    """``backend`` behind ``gate``; see the module docstring.

    In shadow mode (``gate.shadow``) every message reaches the backend; the decision is kept.
    Input mistakes (an empty or oversized message) raise :class:`~gatekeeper.errors.InputError`;
    gate failures follow ``gate.on_error``.
    """

    def __init__(self, gate: Gatekeeper, backend: Any) -> None:
        if not callable(getattr(gate, "check", None)):
            raise TypeError(
                f"GatedBackend(gate, backend): gate must be a Gatekeeper, not {type(gate).__name__}"
            )
        if not callable(backend):
            raise TypeError(f"a backend must be callable, not {type(backend).__name__}")
        self.gate = gate
        self.backend = backend

    # -- the same call shape as the backend ----------------------------------------------------

    def __call__(self, message: Message, *args: Any, **kwargs: Any) -> Any:
        """The backend's output for admitted messages, else the reply (no backend call)."""
        return self.invoke_with_decision(message, *args, **kwargs).output

    async def acall(self, message: Message, *args: Any, **kwargs: Any) -> Any:
        """Async :meth:`__call__`; the backend may be sync (run in a thread) or async."""
        return (await self.ainvoke_with_decision(message, *args, **kwargs)).output

    # -- with the decision -----------------------------------------------------------------------

    def invoke_with_decision(self, message: Message, *args: Any, **kwargs: Any) -> Gated:
        """Decide ``message`` (with the history in ``args``, if any), call the backend if
        admitted; the output and the decision."""
        _callable_here(self.backend)
        decision = self.gate.check(with_history(message, args))
        return self.respond(message, decision, kwargs, args)

    async def ainvoke_with_decision(self, message: Message, *args: Any, **kwargs: Any) -> Gated:
        """Async :meth:`invoke_with_decision`."""
        decision = await self.gate.acheck(with_history(message, args))
        return await self._afinish(message, decision, kwargs, args)

    def batch_with_decisions(self, messages: Sequence[Message], **kwargs: Any) -> list[Gated]:
        """Decide all ``messages`` in one batched pass, then call the backend for each admitted
        one, in order."""
        messages = batch_of(messages)
        _callable_here(self.backend)
        decisions = self.gate.check_many([ui_message(m) for m in messages])
        return [self.respond(m, d, kwargs) for m, d in zip(messages, decisions, strict=True)]

    async def abatch_with_decisions(
        self, messages: Sequence[Message], **kwargs: Any
    ) -> list[Gated]:
        """Async :meth:`batch_with_decisions`: the admitted backend calls run concurrently."""
        messages = batch_of(messages)
        decisions = await self.gate.acheck_many([ui_message(m) for m in messages])
        return list(
            await asyncio.gather(
                *(self._afinish(m, d, kwargs) for m, d in zip(messages, decisions, strict=True))
            )
        )

    # -- internals ---------------------------------------------------------------------------

    def _reply_text(self, decision: Decision) -> str:
        return decision.reply or self.gate.catalog.off_topic.reply

    def respond(
        self,
        message: Message,
        decision: Decision,
        kwargs: dict[str, Any],
        args: tuple[Any, ...] = (),
    ) -> Gated:
        """Act on a decision already made for ``message``: call the backend when it is
        forwarded, else build the reply locally."""
        if not decision.forwarded:
            return Gated(self._local(decision, kwargs), decision, called=False)
        output = self.backend(self._sent(message), *args, **kwargs)
        if inspect.isawaitable(output):
            output = _run_sync(output)
        return Gated(output, decision, called=True)

    async def _afinish(
        self,
        message: Message,
        decision: Decision,
        kwargs: dict[str, Any],
        args: tuple[Any, ...] = (),
    ) -> Gated:
        if not decision.forwarded:
            return Gated(await self._alocal(decision, kwargs), decision, called=False)
        return Gated(await self._acall_backend(message, args, kwargs), decision, called=True)

    async def _acall_backend(
        self, message: Message, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        message = self._sent(message)
        acall = getattr(self.backend, "acall", None)
        if callable(acall):
            return await acall(message, *args, **kwargs)
        if _is_async_callable(self.backend):
            return await self.backend(message, *args, **kwargs)
        output = await asyncio.to_thread(self.backend, message, *args, **kwargs)
        return await output if inspect.isawaitable(output) else output

    def _sent(self, message: Message) -> Message:
        """What the backend is sent: a chat for the LLM endpoint (:class:`OpenAIChatBackend`)
        without the turns the gate refused (:meth:`Gatekeeper.without_refused`), as the proxy
        forwards it; any other backend gets the message as given."""
        if not isinstance(self.backend, OpenAIChatBackend) or not _is_sequence(message):
            return message
        kept = self.gate.without_refused(message)  # type: ignore[arg-type]  # a judged chat
        return message if len(kept) == len(message) else kept

    def _local(self, decision: Decision, kwargs: dict[str, Any]) -> Any:
        text = self._reply_text(decision)
        if isinstance(self.backend, LocalReplies):
            return self.backend.local_reply(text, **kwargs)
        kind = backend_kind(self.backend)
        if kind == "generator":
            return _yield_once(text)  # a streaming backend's caller iterates what it gets
        if kind == "async generator":
            return _ayield_once(text)
        return text

    async def _alocal(self, decision: Decision, kwargs: dict[str, Any]) -> Any:
        alocal = getattr(self.backend, "alocal_reply", None)
        if callable(alocal):
            return await alocal(self._reply_text(decision), **kwargs)
        return self._local(decision, kwargs)

    def as_function(self) -> Callable[..., Any]:
        """This gated backend as a plain function of the backend's kind: a generator function
        for a generator backend, an async one for an async backend, with the backend's
        signature. What a chat UI that inspects its function needs (Gradio streams only a
        generator function)::

            gr.ChatInterface(GatedBackend(gate, stream_reply).as_function(), type="messages")
        """
        kind = backend_kind(self.backend)
        if kind == "generator":

            def gated(message: Message, *args: Any, **kwargs: Any) -> Iterator[Any]:
                yield from self(message, *args, **kwargs)

        elif kind == "async generator":

            async def gated(message: Message, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[misc]
                async for part in await self.acall(message, *args, **kwargs):
                    yield part

        elif kind == "async":

            async def gated(message: Message, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return await self.acall(message, *args, **kwargs)

        else:

            def gated(message: Message, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return self(message, *args, **kwargs)

        return functools.wraps(self.backend, updated=())(gated)


BackendKind = Literal["sync", "async", "generator", "async generator"]


def backend_kind(backend: Any) -> BackendKind:
    """What calling ``backend`` gives: a value, a coroutine, a generator or an async generator
    (a function, or an object whose ``__call__`` is one)."""
    call = getattr(backend, "__call__", None)  # noqa: B004 - the instance's __call__
    for kind, test in (
        ("async generator", inspect.isasyncgenfunction),
        ("generator", inspect.isgeneratorfunction),
        ("async", inspect.iscoroutinefunction),
    ):
        if test(backend) or test(call):
            return kind  # type: ignore[return-value]
    return "sync"


def _yield_once(text: str) -> Iterator[str]:
    yield text


async def _ayield_once(text: str) -> AsyncIterator[str]:
    yield text


def with_history(message: Message, args: tuple[Any, ...]) -> Message:
    """What the gate judges for a call ``(message, *args)``: a message (a text, or a chat UI's
    message: see :func:`ui_message`) after a chat history (``args[0]``: ``{"role", "content"}``
    messages, or Gradio's ``[user, assistant]`` pairs) is the next user turn of that
    conversation; anything else is ``message`` alone."""
    message = ui_message(message)
    history = args[0] if args else None
    if not isinstance(message, str | Mapping) or not _is_sequence(history) or not history:
        return message
    turns: list[dict[str, Any]] = []
    for item in history:
        if isinstance(item, Mapping) and isinstance(item.get("role"), str):
            turns.extend(_turn(item["role"], item.get("content")))
        elif _is_sequence(item) and len(item) == 2:
            turns.extend([*_turn("user", item[0]), *_turn("assistant", item[1])])
        else:
            return message  # not a chat history: the message alone
    last = message if isinstance(message, Mapping) else {"role": "user", "content": message}
    return [*turns, last]


def ui_message(message: Any) -> Any:
    """A chat UI's multimodal message (Gradio's ``{"text": ..., "files": [...]}``) as the chat
    message the gate reads: its text, and its files as attachments; any other message as it
    is."""
    if not isinstance(message, Mapping) or "content" in message:
        return message
    if "text" not in message and "files" not in message:
        return message
    text, files = message.get("text"), message.get("files") or ()
    if text is not None and not isinstance(text, str):
        raise InputError(f"a chat UI message's 'text' must be a string, not {type(text).__name__}")
    if not _is_sequence(files):
        raise InputError(f"a chat UI message's 'files' must be a list, not {type(files).__name__}")
    parts: list[Any] = [{"type": "text", "text": text}] if text is not None else []
    parts += [{"type": "file", "file": {}} for _ in files]
    return {"role": "user", "content": parts}


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _turn(role: str, content: Any) -> list[dict[str, Any]]:
    """One history turn in chat format: text as it is; a chat UI's file (a path, a tuple, a
    component) as an attachment, which the gate does not read; nothing for an empty slot."""
    if content is None:
        return []
    if isinstance(content, str) or (
        _is_sequence(content)
        and all(isinstance(part, Mapping) and "type" in part for part in content)
    ):
        return [{"role": role, "content": content}]
    return [{"role": role, "content": [{"type": "file", "file": {}}]}]


def _is_async_callable(obj: Any) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - the instance's __call__, not callable()
    )


#: Why a sync call of an async backend cannot finish here.
ASYNC_IN_LOOP = "the backend is async and an event loop is running: use `await gated.acall(...)`"


def _callable_here(backend: Any) -> None:
    """:class:`TypeError` when ``backend`` is async and an event loop runs in this thread, so a
    sync call could not finish: raised before deciding, for every message (it was raised only
    for admitted ones, after the decision was logged, so a test of refusals passed)."""
    if backend_kind(backend) != "async":
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise TypeError(ASYNC_IN_LOOP)


def _run_sync(awaitable: Awaitable[Any]) -> Any:
    """Run an async backend's result from sync code (only when no event loop is running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def wait() -> Any:
            return await awaitable

        return asyncio.run(wait())
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    raise TypeError(ASYNC_IN_LOOP)
