"""The gate's decision as a LangChain run: ``gatekeeper_check``, and the decision as run metadata.

:func:`check_runs` decides a batch of messages with one ``Gatekeeper.check_many`` call and traces
one ``gatekeeper_check`` chain run per message (input: the message; output: the decision as
JSON). :func:`decision_metadata` is the decision flattened into run metadata, which the
runnable adds to the config of whatever answers (the wrapped runnable or the reply run).
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)

from gatekeeper.decision import Decision
from gatekeeper.errors import InputError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain_output import DecisionDetail, decision_record
from gatekeeper.types import Message

#: The name of the run that spans the gate's decision.
CHECK_RUN = "gatekeeper_check"


def check_runs(
    gate: Gatekeeper,
    messages: list[Message],
    configs: list[RunnableConfig],
    return_exceptions: bool,
    detail: DecisionDetail = "summary",
) -> list[Decision | InputError]:
    """One ``check_many`` pass, traced as one ``gatekeeper_check`` run per message, whose
    output is the decision record of ``detail`` (no exemplar texts unless ``full``: hosts pass
    stream events on to their users).

    With ``return_exceptions``, a batch holding a message the gate refuses to judge
    (:class:`InputError`) is decided again one message at a time, so the error lands in
    that message's slot only; otherwise the error is raised.
    """
    if not messages:
        return []
    runs = [
        get_callback_manager_for_config(c).on_chain_start(None, {"message": m}, name=CHECK_RUN)
        for m, c in zip(messages, configs, strict=True)
    ]
    try:
        outcomes: list[Decision | InputError] = list(gate.check_many(messages))
    except InputError as exc:
        if not return_exceptions:
            _fail(runs, exc)
            raise
        outcomes = [exc] if len(messages) == 1 else [_check_alone(gate, m) for m in messages]
    except BaseException as exc:
        _fail(runs, exc)
        raise
    for run, outcome in zip(runs, outcomes, strict=True):
        if isinstance(outcome, Exception):
            run.on_chain_error(outcome)
        else:
            run.on_chain_end(decision_record(outcome, detail))
    return outcomes


async def acheck_runs(
    gate: Gatekeeper,
    messages: list[Message],
    configs: list[RunnableConfig],
    return_exceptions: bool,
    detail: DecisionDetail = "summary",
) -> list[Decision | InputError]:
    """:func:`check_runs`, async: the gate runs in a worker thread."""
    if not messages:
        return []
    runs = [
        await get_async_callback_manager_for_config(c).on_chain_start(
            None, {"message": m}, name=CHECK_RUN
        )
        for m, c in zip(messages, configs, strict=True)
    ]
    try:
        outcomes: list[Decision | InputError] = list(await gate.acheck_many(messages))
    except InputError as exc:
        if not return_exceptions:
            await _afail(runs, exc)
            raise
        outcomes = (
            [exc]
            if len(messages) == 1
            else [await asyncio.to_thread(_check_alone, gate, m) for m in messages]
        )
    except BaseException as exc:
        await _afail(runs, exc)
        raise
    for run, outcome in zip(runs, outcomes, strict=True):
        if isinstance(outcome, Exception):
            await run.on_chain_error(outcome)
        else:
            await run.on_chain_end(decision_record(outcome, detail))
    return outcomes


def check_one(
    gate: Gatekeeper, message: Message, config: RunnableConfig, detail: DecisionDetail
) -> Decision:
    """One message's decision, traced as :func:`check_runs` does; an input mistake raises."""
    return _only(check_runs(gate, [message], [config], False, detail))


async def acheck_one(
    gate: Gatekeeper, message: Message, config: RunnableConfig, detail: DecisionDetail
) -> Decision:
    """:func:`check_one`, async."""
    return _only(await acheck_runs(gate, [message], [config], False, detail))


def _only(outcomes: list[Decision | InputError]) -> Decision:
    """The one decision of a single-message check (errors were raised, not returned)."""
    outcome = outcomes[0]
    assert isinstance(outcome, Decision)
    return outcome


def _check_alone(gate: Gatekeeper, message: Message) -> Decision | InputError:
    try:
        return gate.check(message)
    except InputError as exc:
        return exc


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """The decision as flat run metadata: ``gatekeeper_route``, ``gatekeeper_intent``, …"""
    return {f"gatekeeper_{key}": value for key, value in decision.summary().items()}


def _fail(runs: list[CallbackManagerForChainRun], exc: BaseException) -> None:
    for run in runs:
        run.on_chain_error(exc)


async def _afail(runs: list[AsyncCallbackManagerForChainRun], exc: BaseException) -> None:
    for run in runs:
        await run.on_chain_error(exc)
