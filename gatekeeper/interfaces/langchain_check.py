"""The gate's decision as a LangChain run: ``gatekeeper_check``, and the decision as run metadata.

:func:`check_runs` decides a batch of messages with one ``Gatekeeper.check_many`` call and traces
one ``gatekeeper_check`` chain run per message (input: the message; output: the decision as
JSON). :func:`decision_metadata` is the decision flattened into run metadata, which the
runnable adds to the config of whatever answers (the wrapped runnable or the reply run).
"""

from __future__ import annotations

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
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.langchain_output import DecisionDetail, decision_record
from gatekeeper.types import Message

#: The name of the run that spans the gate's decision.
CHECK_RUN = "gatekeeper_check"


def check_runs(
    gate: Gatekeeper,
    messages: list[Message],
    configs: list[RunnableConfig],
    detail: DecisionDetail = "summary",
) -> list[Decision]:
    """One ``check_many`` pass, traced as one ``gatekeeper_check`` run per message, whose
    output is the decision record of ``detail`` (no exemplar texts unless ``full``: hosts pass
    stream events on to their users). An error (an input mistake, a gate failure under
    ``on_error: raise``) ends every run with it and is raised: a batch checks its inputs first
    (:meth:`Gatekeeper.validate`), so that each mistake names its own input.
    """
    if not messages:
        return []
    runs = [
        get_callback_manager_for_config(c).on_chain_start(None, {"message": m}, name=CHECK_RUN)
        for m, c in zip(messages, configs, strict=True)
    ]
    try:
        decisions = gate.check_many(messages)
    except BaseException as exc:
        _fail(runs, exc)
        raise
    for run, decision in zip(runs, decisions, strict=True):
        run.on_chain_end(decision_record(decision, detail))
    return decisions


async def acheck_runs(
    gate: Gatekeeper,
    messages: list[Message],
    configs: list[RunnableConfig],
    detail: DecisionDetail = "summary",
) -> list[Decision]:
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
        decisions = await gate.acheck_many(messages)
    except BaseException as exc:
        await _afail(runs, exc)
        raise
    for run, decision in zip(runs, decisions, strict=True):
        await run.on_chain_end(decision_record(decision, detail))
    return decisions


def check_one(
    gate: Gatekeeper, message: Message, config: RunnableConfig, detail: DecisionDetail
) -> Decision:
    """One message's decision, traced as :func:`check_runs` does; an input mistake raises."""
    return check_runs(gate, [message], [config], detail)[0]


async def acheck_one(
    gate: Gatekeeper, message: Message, config: RunnableConfig, detail: DecisionDetail
) -> Decision:
    """:func:`check_one`, async."""
    return (await acheck_runs(gate, [message], [config], detail))[0]


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """The decision as flat run metadata: ``gatekeeper_route``, ``gatekeeper_intent``, …"""
    return {f"gatekeeper_{key}": value for key, value in decision.summary().items()}


def _fail(runs: list[CallbackManagerForChainRun], exc: BaseException) -> None:
    for run in runs:
        run.on_chain_error(exc)


async def _afail(runs: list[AsyncCallbackManagerForChainRun], exc: BaseException) -> None:
    for run in runs:
        await run.on_chain_error(exc)
