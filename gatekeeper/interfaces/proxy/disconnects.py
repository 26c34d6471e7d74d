"""Waiting on the upstream for a client that may hang up: the wait ends when it does.

A non-streamed answer is read whole before the client gets any of it, and an LLM may take a
minute to write it: a client gone meanwhile (a timeout, a closed tab) would have the proxy wait
for, and the operator pay for, an answer nobody reads. :func:`unless_disconnected` races the
wait against the client's ``http.disconnect``: the client gone first, the wait is cancelled
(the upstream request closed with it) and :class:`ClientGone` raised, which the app answers as
any client gone mid-request (``http.client_disconnected``, 499 in the log and
``gatekeeper_requests_total``), with the decision's headers (so the log line names the route
and the ``message_id`` of its ``gate.decided`` line). A streamed answer stops at the disconnect
by itself (the server stops sending it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import anyio
from starlette.requests import ClientDisconnect

_Result = TypeVar("_Result")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientGone(ClientDisconnect):
    """The client hung up while the proxy waited on the upstream for it; ``headers``: those of
    the answer it would have had (the decision's)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__()
        self.headers = dict(headers)


async def unless_disconnected(
    receive: Receive, call: Callable[[], Awaitable[_Result]], headers: Mapping[str, str]
) -> _Result:
    """``await call()``, cancelled as soon as ``receive`` (the request's, its body read whole)
    gives ``http.disconnect``: then :class:`ClientGone` with ``headers``. An error of ``call``
    is raised as it is (not in an exception group); a result that came with the disconnect is
    returned (it may need closing: a later wait sees the client gone)."""
    outcome: list[_Result] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_watch, receive, group.cancel_scope)
        try:
            outcome.append(await call())
        except Exception as exc:  # raised below, once the watch has stopped
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not outcome:  # cancelled by the watch (another cancellation goes on through)
        raise ClientGone(headers)
    return outcome[0]


async def _watch(receive: Receive, scope: anyio.CancelScope) -> None:
    """Wait for the client's ``http.disconnect`` (after a whole body, a server gives nothing
    else until the answer is sent); then cancel ``scope``. Anything else ends the watch (never
    a loop on a server that answers at once)."""
    if (await receive())["type"] == "http.disconnect":
        scope.cancel()
