"""The gate as a LangChain runnable: :class:`GatekeeperRunnable`.

Put it in front of the chain (or chat model), and off-topic and canned messages are answered
without calling it::

    from gatekeeper import GatekeeperRunnable

    chain = GatekeeperRunnable(
        gate=gate, runnable=prompt | chat_model | StrOutputParser(), input_key="question"
    )

In front of the prompt, so that the gate judges the customer's own words (behind a prompt that
adds context to the human turn it would judge that text), and of the parser, so that a refusal
keeps its decision (a :class:`ReplyText`).

What it accepts (a string, messages, a ``PromptValue``, a dict with ``input_key`` and
``history_key``) and what the gate judges for each: :mod:`~gatekeeper.interfaces.langchain_input`.

What it returns: when the message is admitted (route ``llm``), or the gate runs in shadow mode
(``gate.shadow``), the wrapped runnable gets the input as given (a lone message as a
one-message list) and its output is returned unchanged (a chat message with the decision added to
its ``response_metadata``, see below). Otherwise (``off_topic``, ``canned``)
the wrapped runnable is not called and the decision's reply is said by a chat model run of the
gate's own (``gatekeeper_reply``, :mod:`~gatekeeper.interfaces.langchain_reply`), returned in
the wrapped runnable's output shape (:mod:`~gatekeeper.interfaces.langchain_output`): a ``str``
(:class:`ReplyText`) when it declares a ``str`` output, else an ``AIMessage`` (one
``AIMessageChunk`` when streaming); either way with the decision in
``response_metadata["gatekeeper"]``, as an admitted answer that is a chat message (or its first
chunk) has it too: ``Decision.summary()`` (no exemplar or customer text), or the whole decision
with ``decision_detail="full"``. ``OutputType`` / ``get_output_schema()`` describe both.

Tracing: the runnable is its own run (``GatekeeperRunnable``) with two children. The first,
``gatekeeper_check``, spans the gate's decision and outputs it. The second carries the decision
in its metadata (``gatekeeper_route``, ``gatekeeper_intent``, ``gatekeeper_score``,
``gatekeeper_threshold``, ``gatekeeper_latency_ms``, ``gatekeeper_message_id``,
``gatekeeper_shadow``): the wrapped runnable when the message is forwarded (so the model's own
run, and every run under it, can be filtered by route), else the ``gatekeeper_reply`` chat model
run, so a chat UI rendering ``on_chat_model_stream`` events shows refusals as it shows answers.
The caller's callbacks, tags and metadata flow to both.

``batch``/``abatch`` decide all inputs with one ``Gatekeeper.check_many`` call (one embedding
pass, one store query), then call the wrapped runnable's ``batch``/``abatch`` once with the
admitted inputs only; results come back in input order. Client mistakes (an empty message, no
user turn, a dict without ``input_key``, a dict for a runnable that takes none) are found before
the gate pass, each naming its input (``inputs[2]: the message is empty``): the first in input
order raises its :class:`~gatekeeper.errors.InputError` whether the gate would admit the
message or not, or with ``return_exceptions=True`` each comes back in its input's slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableSerializable,
)
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import (
    merge_configs,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict, PrivateAttr, field_validator

from gatekeeper.decision import Decision
from gatekeeper.errors import InputError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain_check import (
    CHECK_RUN,
    acheck_one,
    acheck_runs,
    check_one,
    check_runs,
    decision_metadata,
)
from gatekeeper.interfaces.langchain_delegate import delegated
from gatekeeper.interfaces.langchain_input import (
    GateInput,
    GateInputSchema,
    added,
    collected,
    forwarded_input,
    gate_message,
    unread_history_key,
    without_refused_input,
)
from gatekeeper.interfaces.langchain_output import (
    DecisionDetail,
    ReplyText,
    decision_record,
    output_shape,
    output_type,
    with_decision,
)
from gatekeeper.interfaces.langchain_reply import (
    REPLY_RUN,
    Reply,
    reply_model,
)
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings
from gatekeeper.types import Message


class GatekeeperRunnable(RunnableSerializable[GateInput, Any]):
    """A runnable (usually a chat model) behind the gate.

    Admitted messages reach ``runnable`` with their original input and its output comes back
    unchanged; off-topic and canned ones get the gate's reply in ``runnable``'s output shape (a
    ``str`` or an ``AIMessage``) with the decision in ``response_metadata["gatekeeper"]``,
    without a call to ``runnable``.
    """

    gate: Gatekeeper
    """The gate that decides."""
    runnable: Runnable[Any, Any]
    """What admitted inputs go to: a chat model, a chain, any runnable (a function is wrapped)."""
    input_key: str = "input"
    """For dict inputs: the key whose value (a text or messages) the gate judges."""
    history_key: str | None = None
    """For dict inputs: the key holding the earlier messages of the conversation, if any."""
    decision_detail: DecisionDetail = "summary"
    """What answers carry in ``response_metadata["gatekeeper"]``: ``summary`` (no exemplar or
    customer text: safe to pass on to users) or ``full`` (the neighbours' exemplar texts too)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _history_warned: bool = PrivateAttr(default=False)

    @field_validator("runnable", mode="before")
    @classmethod
    def _coerce_runnable(cls, value: Any) -> Runnable[Any, Any]:
        runnable: Runnable[Any, Any] = coerce_to_runnable(value)
        return runnable

    @classmethod
    def from_settings(
        cls,
        runnable: Runnable[Any, Any],
        *,
        settings: Settings | None = None,
        config: Path | None = None,
        input_key: str = "input",
        history_key: str | None = None,
        decision_detail: DecisionDetail = "summary",
        **overrides: Any,
    ) -> GatekeeperRunnable:
        """``runnable`` behind a gate built from settings (see :meth:`Gatekeeper.from_settings`)."""
        gate = Gatekeeper.from_settings(settings, config=config, **overrides)
        return cls(
            gate=gate,
            runnable=runnable,
            input_key=input_key,
            history_key=history_key,
            decision_detail=decision_detail,
        )

    @property
    def InputType(self) -> Any:
        """What it accepts, as a type pydantic can validate (so ``get_input_schema()`` works)."""
        return GateInputSchema

    @property
    def OutputType(self) -> Any:
        """The wrapped runnable's output type, ``AIMessage`` added if replies are not among it."""
        return output_type(self.runnable)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The wrapped runnable's configurable fields, so ``with_config(configurable=…)`` works."""
        return self.runnable.config_specs

    # -- for agents: tools, structured output --------------------------------------------

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> GatekeeperRunnable:
        """The same gate around ``runnable.bind_tools(tools, **kwargs)`` (see
        :mod:`~gatekeeper.interfaces.langchain_delegate`); AttributeError if it has none."""
        return self._around(delegated(self.runnable, "bind_tools", tools, **kwargs))

    def with_structured_output(self, schema: Any = None, **kwargs: Any) -> GatekeeperRunnable:
        """The same gate around ``runnable.with_structured_output(schema, **kwargs)`` (no schema
        for ``method="json_mode"`` on a model that allows it); a reply of the gate is an
        ``AIMessage`` still."""
        return self._around(delegated(self.runnable, "with_structured_output", schema, **kwargs))

    def _around(self, runnable: Runnable[Any, Any]) -> GatekeeperRunnable:
        return self.model_copy(update={"runnable": runnable})

    # -- input ---------------------------------------------------------------------------

    def to_gate_message(self, value: GateInput) -> Message:
        """What the gate judges for ``value``: a text, or a conversation in OpenAI format."""
        return gate_message(value, self.input_key, self.history_key)

    def _prepared(self, value: GateInput) -> tuple[Any, Message]:
        """What the runnable would get for ``value`` (without the turns the gate refused), and
        what the gate judges (or InputError)."""
        self._warn_unread_history(value)
        sent = without_refused_input(value, self.gate.refusals, self.input_key, self.history_key)
        return forwarded_input(sent, self.runnable), self.to_gate_message(value)

    def _warn_unread_history(self, value: GateInput) -> None:
        """Once per runnable: a dict holds chat messages the gate does not read (no
        ``history_key``), so it judges each turn alone and forwards the turns it refused."""
        if self._history_warned:  # said once: no scan of every later input
            return
        key = unread_history_key(value, self.input_key, self.history_key)
        if key is None:
            return
        self._history_warned = True
        get_logger("gatekeeper.langchain").warning(
            "langchain.history_not_read",
            key=key,
            message=f"the input dict holds chat messages under {key!r}, which the gate does "
            f"not read: it judges each turn alone and cannot take refused turns out of them; "
            f'if they are the earlier turns, pass GatekeeperRunnable(..., history_key="{key}")',
        )

    # -- invoke --------------------------------------------------------------------------

    def invoke(self, input: GateInput, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Decide ``input``; forward it to the wrapped runnable or answer with the reply."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(
        self, input: GateInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """:meth:`invoke`, async: the gate runs off the event loop, then ``runnable.ainvoke``."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(
        self,
        input: GateInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        item, message = self._prepared(input)
        decision = check_one(self.gate, message, config, self.decision_detail)
        if decision.forwarded:
            answer = self.runnable.invoke(item, self._child_config(config, decision), **kwargs)
            return with_decision(answer, self._record(decision))
        return self._reply(decision, config).say(message)

    async def _ainvoke(
        self,
        input: GateInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        item, message = self._prepared(input)
        decision = await acheck_one(self.gate, message, config, self.decision_detail)
        if decision.forwarded:
            child = self._child_config(config, decision)
            answer = await self.runnable.ainvoke(item, child, **kwargs)
            return with_decision(answer, self._record(decision))
        return await self._reply(decision, config).asay(message)

    # -- batch ---------------------------------------------------------------------------

    def batch(
        self,
        inputs: Sequence[GateInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        """Decide all ``inputs`` in one gate pass; batch the admitted ones to the runnable."""

        def run(
            items: list[GateInput],
            run_manager: list[CallbackManagerForChainRun],
            config: list[RunnableConfig],
        ) -> list[Any]:
            return self._batch(items, config, return_exceptions, kwargs)

        return self._batch_with_config(
            run, list(inputs), config, return_exceptions=return_exceptions
        )

    async def abatch(
        self,
        inputs: Sequence[GateInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        """:meth:`batch`, async."""

        async def run(
            items: list[GateInput],
            run_manager: list[AsyncCallbackManagerForChainRun],
            config: list[RunnableConfig],
        ) -> list[Any]:
            return await self._abatch(items, config, return_exceptions, kwargs)

        return await self._abatch_with_config(
            run, list(inputs), config, return_exceptions=return_exceptions
        )

    def _batch(
        self,
        inputs: list[GateInput],
        configs: list[RunnableConfig],
        return_exceptions: bool,
        kwargs: dict[str, Any],
    ) -> list[Any]:
        results: list[Any] = [None] * len(inputs)
        items, messages = self._messages(inputs, results, return_exceptions)
        decisions = check_runs(
            self.gate, list(messages.values()), [configs[i] for i in messages], self.decision_detail
        )
        forward, answer = _sort(list(messages), decisions)
        for i, decision in answer:
            results[i] = self._reply(decision, configs[i]).say(messages[i])
        if forward:
            admitted, child_configs = self._forwarded(items, configs, forward)
            answers = self.runnable.batch(
                admitted, child_configs, return_exceptions=return_exceptions, **kwargs
            )
            self._place(results, forward, answers)
        return results

    async def _abatch(
        self,
        inputs: list[GateInput],
        configs: list[RunnableConfig],
        return_exceptions: bool,
        kwargs: dict[str, Any],
    ) -> list[Any]:
        results: list[Any] = [None] * len(inputs)
        items, messages = self._messages(inputs, results, return_exceptions)
        decisions = await acheck_runs(
            self.gate, list(messages.values()), [configs[i] for i in messages], self.decision_detail
        )
        forward, answer = _sort(list(messages), decisions)
        for i, decision in answer:
            results[i] = await self._reply(decision, configs[i]).asay(messages[i])
        if forward:
            admitted, child_configs = self._forwarded(items, configs, forward)
            answers = await self.runnable.abatch(
                admitted, child_configs, return_exceptions=return_exceptions, **kwargs
            )
            self._place(results, forward, answers)
        return results

    def _forwarded(
        self,
        items: list[Any],
        configs: list[RunnableConfig],
        forward: list[tuple[int, Decision]],
    ) -> tuple[list[Any], list[RunnableConfig]]:
        """The admitted inputs as forwarded, and their configs carrying the decision."""
        admitted = [items[i] for i, _ in forward]
        return admitted, [self._child_config(configs[i], d) for i, d in forward]

    def _messages(
        self, inputs: list[GateInput], results: list[Any], return_exceptions: bool
    ) -> tuple[list[Any], dict[int, Message]]:
        """Each input as forwarded, and its gate message by position, checked as the gate
        checks it before deciding (empty, too long: :meth:`Gatekeeper.validate`). Input
        mistakes, each naming its input (``inputs[3]: question[0] is ...``, the message's index
        inside), go to ``results``, or the first in input order is raised."""
        items: list[Any] = [None] * len(inputs)
        messages: dict[int, Message] = {}
        for i, value in enumerate(inputs):
            try:
                item, message = self._prepared(value)
                self.gate.validate(message)
            except InputError as exc:
                named = type(exc)(f"inputs[{i}]: {exc}")
                if not return_exceptions:
                    raise named from exc
                results[i] = named
            else:
                items[i], messages[i] = item, message
        return items, messages

    # -- stream --------------------------------------------------------------------------

    def stream(
        self, input: GateInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[Any]:
        """Admitted: the wrapped runnable's chunks; blocked: one ``AIMessageChunk``."""
        return self.transform(iter([input]), config, **kwargs)

    async def astream(
        self, input: GateInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[Any]:
        """:meth:`stream`, async."""

        async def single() -> AsyncIterator[GateInput]:
            yield input

        async for chunk in self.atransform(single(), config, **kwargs):
            yield chunk

    def transform(
        self,
        input: Iterator[GateInput],
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[Any]:
        """Collect the input stream, decide it, then stream the answer."""
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    async def atransform(
        self,
        input: AsyncIterator[GateInput],
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[Any]:
        """:meth:`transform`, async."""
        async for chunk in self._atransform_stream_with_config(
            input, self._atransform, config, **kwargs
        ):
            yield chunk

    def _transform(
        self,
        chunks: Iterator[GateInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        value = collected(chunks)
        item, message = self._prepared(value)
        decision = check_one(self.gate, message, config, self.decision_detail)
        if decision.forwarded:
            child, record = self._child_config(config, decision), self._record(decision)
            for number, out in enumerate(self.runnable.stream(item, child, **kwargs)):
                yield out if number else with_decision(out, record)
        else:
            yield from self._reply(decision, config).stream(message)

    async def _atransform(
        self,
        chunks: AsyncIterator[GateInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        value: Any = None
        async for chunk in chunks:
            value = added(value, chunk)
        item, message = self._prepared(value)
        decision = await acheck_one(self.gate, message, config, self.decision_detail)
        if decision.forwarded:
            child, record = self._child_config(config, decision), self._record(decision)
            first = True
            async for out in self.runnable.astream(item, child, **kwargs):
                yield with_decision(out, record) if first else out
                first = False
        else:
            async for reply in self._reply(decision, config).astream(message):
                yield reply

    # -- the gate's own runs -------------------------------------------------------------

    def _record(self, decision: Decision) -> dict[str, Any]:
        return decision_record(decision, self.decision_detail)

    def _place(
        self, results: list[Any], forward: list[tuple[int, Decision]], answers: list[Any]
    ) -> None:
        """The admitted answers into their slots, each with its decision."""
        for (i, decision), answer in zip(forward, answers, strict=True):
            results[i] = with_decision(answer, self._record(decision))

    @staticmethod
    def _child_config(config: RunnableConfig, decision: Decision) -> RunnableConfig:
        """``config`` with the decision added to its metadata (inherited by every child run)."""
        return merge_configs(config, {"metadata": decision_metadata(decision)})

    def _reply(self, decision: Decision, config: RunnableConfig) -> Reply:
        """The reply run answering ``decision`` in the wrapped runnable's output shape."""
        model = reply_model(decision, self._record(decision))
        return Reply(model, self._child_config(config, decision), output_shape(self.runnable))


def _sort(
    positions: list[int], decisions: list[Decision]
) -> tuple[list[tuple[int, Decision]], list[tuple[int, Decision]]]:
    """The decisions, by position, split into (forwarded, answered by the gate)."""
    forward: list[tuple[int, Decision]] = []
    answer: list[tuple[int, Decision]] = []
    for i, decision in zip(positions, decisions, strict=True):
        (forward if decision.forwarded else answer).append((i, decision))
    return forward, answer


__all__ = [
    "CHECK_RUN",
    "REPLY_RUN",
    "GateInput",
    "GatekeeperRunnable",
    "ReplyText",
    "decision_metadata",
]
