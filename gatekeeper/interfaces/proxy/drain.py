"""The proxy's part in a graceful shutdown: what is still waiting on the upstream when the grace
period is about to end is answered by the proxy itself, before the server cancels it.

On SIGTERM uvicorn stops accepting connections and gives the requests in flight
``server.shutdown_grace`` seconds; then it cancels them. A stream cancelled there was cut off
(the client read ``incomplete chunked read``, with no SSE error event, and ``http.request``
logged a clean 200). :class:`DrainingServer` tells the app's :class:`Drain` when its shutdown
starts, and from then every wait on the upstream (an answer's start, a stream's next chunk) is
bounded (:meth:`Drain.bounded`) by a cutoff :data:`MARGIN` seconds before the server's: a
stream then ends with an SSE error event ``server_shutting_down`` and its upstream stream is
closed; a request with no answer yet gets a 503 ``server_shutting_down`` with the decision's
``x-gatekeeper-*`` headers. The request's ``http.request`` line says so (:func:`mark_ended`).

The app hands its drain to the server in the lifespan state (:data:`STATE_KEY`); a server of
another class never starts it, and its grace period ends as uvicorn's does.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import anyio
import uvicorn

from gatekeeper.logging import Logger, get_logger

#: Seconds before the server's grace period ends at which the proxy ends what still waits
#: (half the grace period when that is shorter).
MARGIN = 1.0
#: The lifespan state's key for the app's :class:`Drain`.
STATE_KEY = "gatekeeper.drain"
#: The request scope's key for how an answer begun as a 200 ended (:func:`mark_ended`).
ENDED_KEY = "gatekeeper.ended"
SHUTTING_DOWN = "server_shutting_down"
SHUTTING_DOWN_MESSAGE = "the gatekeeper proxy is shutting down; retry the request"


class Drain:
    """The shutdown's cutoff, once it has begun, and the waits it bounds."""

    def __init__(self) -> None:
        self.cutoff: float | None = None  # in the event loop's clock (anyio.current_time)
        self._waiting: set[anyio.CancelScope] = set()

    def begin(self, grace_seconds: float) -> None:
        """The server's shutdown starts now, with ``grace_seconds`` until it cancels what is
        left: waits end :data:`MARGIN` seconds before that (in the event loop)."""
        if self.cutoff is not None:
            return
        self.cutoff = anyio.current_time() + grace_seconds - min(MARGIN, grace_seconds / 2)
        for scope in list(self._waiting):
            scope.deadline = self.cutoff

    @contextmanager
    def bounded(self) -> Iterator[anyio.CancelScope]:
        """A scope for one wait that the cutoff cancels (``cancelled_caught`` then says so)."""
        scope = anyio.CancelScope(deadline=math.inf if self.cutoff is None else self.cutoff)
        self._waiting.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._waiting.discard(scope)


def mark_ended(scope: MutableMapping[str, Any], outcome: str = SHUTTING_DOWN) -> None:
    """Note in the request's ``scope`` that its answer, begun as a 200, ended with ``outcome``
    (read by :class:`~gatekeeper.interfaces.proxy.middleware.RequestLog`)."""
    scope[ENDED_KEY] = outcome


def shutting_down_event() -> bytes:
    """The SSE error event that ends a stream at the cutoff (the shape of the proxy's other
    mid-stream error events)."""
    error = {"message": SHUTTING_DOWN_MESSAGE, "type": "server_error", "code": SHUTTING_DOWN}
    return f"\n\ndata: {json.dumps({'error': error})}\n\n".encode()


class DrainingServer(uvicorn.Server):
    """uvicorn's server as ``serve`` runs it: when its shutdown starts it logs
    ``server.draining`` (with the signal) and starts the app's :class:`Drain`; after SIGTERM it
    exits normally once drained (SIGINT, Ctrl-C, is raised again as uvicorn does: ``serve``
    says "interrupted" and exits 130)."""

    stop_signal: str | None = None

    def __init__(self, config: uvicorn.Config, log: Logger | None = None) -> None:
        super().__init__(config)
        self._log = log or get_logger()

    def handle_exit(self, sig: int, frame: Any) -> None:
        # a signal handler: nothing logged here (this thread may hold the log's lock)
        self.stop_signal = self.stop_signal or signal_name(sig)
        if sig == signal.SIGTERM:
            self.should_exit = True  # drained, then a normal exit
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._log.info("server.draining", signal=self.stop_signal, pid=os.getpid())
        drain = getattr(getattr(self, "lifespan", None), "state", {}).get(STATE_KEY)
        grace = self.config.timeout_graceful_shutdown
        if isinstance(drain, Drain) and grace is not None:
            drain.begin(grace)
        await super().shutdown(sockets)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number as text for one this platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
