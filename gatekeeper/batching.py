"""Micro-batching of concurrent decisions.

Many requests arriving at once in an async server would each wait for the model in turn. A
:class:`DecisionBatcher` lets them share forward passes instead: the first caller to reach the
model takes everything queued so far (up to ``max_batch``) into one ``check_many`` call, and the
callers that arrive meanwhile are served by the next batch. Nothing ever waits for a batch to
fill: at low load each batch is one message, at high load batches grow by themselves. Up to
``workers`` batches run at once (in threads; the model releases the GIL).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gatekeeper.errors import InputError

if TYPE_CHECKING:
    from gatekeeper.decision import Decision
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.types import Message, OnError

_Pending = tuple["Message", "asyncio.Future[Decision]"]


class DecisionBatcher:
    """Decide concurrent messages in shared ``check_many`` batches."""

    def __init__(
        self, gate: Gatekeeper, *, on_error: OnError, max_batch: int = 32, workers: int = 1
    ) -> None:
        self.gate = gate
        self.on_error: OnError = on_error
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._turn = asyncio.Semaphore(workers)

    async def decide(self, message: Message) -> Decision:
        """The decision on ``message``, possibly computed in a batch with others."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        async with self._turn:
            if not future.done():
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                # Shielded: if this caller is cancelled (client gone, shutdown timeout), the
                # batch still finishes for the other callers waiting on it.
                await asyncio.shield(asyncio.ensure_future(self._run(batch)))
        return await future

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            decisions = await self.gate.acheck_many([m for m, _ in batch], on_error=self.on_error)
        except InputError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
            else:  # one client's mistake must not fail the others: decide them one by one
                for message, future in batch:
                    await self._run_one(message, future)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), decision in zip(batch, decisions, strict=True):
                if not future.done():
                    future.set_result(decision)

    async def _run_one(self, message: Message, future: asyncio.Future[Decision]) -> None:
        try:
            decision = await self.gate.acheck(message, on_error=self.on_error)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(decision)
