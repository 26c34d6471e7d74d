"""The gate's own answer in LangChain: a chat model run that says the decision's reply.

A message the gate does not forward (``off_topic``, ``canned``) is answered by
:class:`GatekeeperReplyModel`, a tiny ``BaseChatModel`` that returns (or streams, as one chunk)
the decision's fixed reply. Because it is a real chat model run, everything that watches chat
models sees the refusal as it sees the wrapped model's answers: ``on_chat_model_start`` /
``on_llm_new_token`` / ``on_llm_end`` callbacks, ``astream_events`` (``on_chat_model_stream``,
the event chat UIs render) and LangSmith traces. The run is recognisable: it is named and tagged
``gatekeeper_reply``, reports ``ls_provider="gatekeeper"``, makes no network call, is never
cached, and carries the decision in its metadata (``gatekeeper_route``, ``gatekeeper_intent``,
…, added by the caller's config) and in its message's ``response_metadata["gatekeeper"]``
(:func:`~gatekeeper.interfaces.langchain_output.decision_record`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.utils import LC_ID_PREFIX

from gatekeeper.decision import Decision
from gatekeeper.interfaces.langchain_output import METADATA_KEY, OutputShape, shaped
from gatekeeper.types import Message

#: The name and tag of the reply run.
REPLY_RUN = "gatekeeper_reply"

_MESSAGE_CLASSES: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}


class GatekeeperReplyModel(BaseChatModel):
    """A chat model that answers with one fixed reply, the gate's decision attached.

    One instance per decision (see :func:`reply_model`); it ignores its input, which is only
    there so a trace shows what was answered.
    """

    reply: str
    """The text it answers with."""
    decision: dict[str, Any]
    """The decision record put in ``response_metadata`` (see
    :func:`~gatekeeper.interfaces.langchain_output.decision_record`)."""

    @property
    def _llm_type(self) -> str:
        return REPLY_RUN

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="gatekeeper", ls_model_name=REPLY_RUN, ls_model_type="chat"
        )

    def _message(self, message_id: str | None = None) -> AIMessage:
        metadata = {METADATA_KEY: self.decision}
        return AIMessage(content=self.reply, response_metadata=metadata, id=message_id)

    def _chunk(self, message_id: str | None = None) -> ChatGenerationChunk:
        message = AIMessageChunk(
            content=self.reply,
            response_metadata={METADATA_KEY: self.decision},
            chunk_position="last",
            id=message_id,
        )
        return ChatGenerationChunk(message=message)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The reply (``invoke``, ``batch``), sent as one ``on_llm_new_token`` (with its chunk)
        first: a UI that streams answers through token callbacks (``AsyncIteratorCallbackHandler``,
        Chainlit, Streamlit) shows the refusal as it shows a streaming model's answer, instead of
        an empty reply. Always, not only when the wrapped model streams: the gate cannot tell
        whether a chain or a function streams, and for a handler that also reads ``on_llm_end``
        the token says the same text."""
        message_id = _run_message_id(run_manager)
        if run_manager:
            run_manager.on_llm_new_token(self.reply, chunk=self._chunk(message_id))
        return ChatResult(generations=[ChatGeneration(message=self._message(message_id))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """:meth:`_generate`, async (``ainvoke``, ``abatch``)."""
        message_id = _run_message_id(run_manager)
        if run_manager:
            await run_manager.on_llm_new_token(self.reply, chunk=self._chunk(message_id))
        return ChatResult(generations=[ChatGeneration(message=self._message(message_id))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield self._chunk()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        yield self._chunk()


def _run_message_id(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> str | None:
    """The id LangChain gives a streamed run's message (``lc_run--<run id>``), so the token's
    chunk and the answer have the same id, as when the reply is streamed."""
    return f"{LC_ID_PREFIX}-{run_manager.run_id}" if run_manager else None


def reply_model(decision: Decision, record: dict[str, Any]) -> GatekeeperReplyModel:
    """The chat model answering ``decision``: its reply, named and tagged ``gatekeeper_reply``,
    ``record`` (the decision as answers carry it) attached."""
    return GatekeeperReplyModel(
        reply=decision.reply or "",
        decision=record,
        name=REPLY_RUN,
        tags=[REPLY_RUN],
        cache=False,
    )


def reply_input(message: Message) -> list[BaseMessage]:
    """What the gate judged, as chat messages: the reply run's input in a trace."""
    if isinstance(message, str):
        return [HumanMessage(content=message)]
    return [_chat_message(turn) for turn in message]


def _chat_message(turn: Any) -> BaseMessage:
    role = str(turn.get("role", "user"))
    content = turn.get("content")
    if not isinstance(content, str | list):
        content = "" if content is None else str(content)
    cls = _MESSAGE_CLASSES.get(role)
    return cls(content=content) if cls else ChatMessage(role=role, content=content)


@dataclass(frozen=True)
class Reply:
    """A reply run ready to answer: the model saying the reply, the run's config (the caller's,
    with the decision in its metadata), and the shape the answer is returned in."""

    model: GatekeeperReplyModel
    config: RunnableConfig
    shape: OutputShape

    def say(self, message: Message) -> Any:
        """The reply run's answer to ``message`` (run as ``gatekeeper_reply``), as ``shape``."""
        return shaped(self.model.invoke(reply_input(message), self._named()), self.shape)

    async def asay(self, message: Message) -> Any:
        """:meth:`say`, async."""
        answer = await self.model.ainvoke(reply_input(message), self._named())
        return shaped(answer, self.shape)

    def stream(self, message: Message) -> Iterator[Any]:
        """:meth:`say`, streamed: the reply run's one chunk, as ``shape``."""
        for chunk in self.model.stream(reply_input(message), self._named()):
            yield shaped(chunk, self.shape)

    async def astream(self, message: Message) -> AsyncIterator[Any]:
        """:meth:`stream`, async."""
        async for chunk in self.model.astream(reply_input(message), self._named()):
            yield shaped(chunk, self.shape)

    def _named(self) -> RunnableConfig:
        return {**self.config, "run_name": REPLY_RUN}
