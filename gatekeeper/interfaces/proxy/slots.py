"""A cap on the passed-through requests in progress (``server.max_passthrough``).

Passed-through requests share the upstream connection pool (``upstream.max_connections``) with
the gated ones; without a cap, one client holding hundreds of slow passed-through requests
(a file download the upstream takes a minute over) would leave the customers' chats waiting for
a connection. Beyond the cap the proxy answers 503 with ``Retry-After`` at once. Gated requests
take no slot: their path stays as it was.

The count is kept on the event loop (one per serving process), so it needs no lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gatekeeper.interfaces.proxy.errors import ProxyError

#: Seconds a client refused for want of a slot is asked to wait.
RETRY_AFTER = 1


class Slots:
    """At most ``limit`` slots held at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """A slot for the block (503 when none is free), given back at its end unless the block
        hands it over (:meth:`Slot.hand_over`) to the answer that still streams."""
        if self.held >= self.limit:
            raise ProxyError(
                503,
                f"too many passed-through requests at once (server.max_passthrough: "
                f"{self.limit}); retry in a moment",
                code="passthrough_busy",
                kind="server_error",
                headers={"retry-after": str(RETRY_AFTER)},
            )
        self.held += 1
        held = Slot(self)
        try:
            yield held
        finally:
            if not held.handed_over:
                held.release()


class Slot:
    """One slot taken; released once."""

    def __init__(self, slots: Slots) -> None:
        self._slots: Slots | None = slots
        self.handed_over = False

    def hand_over(self) -> Callable[[], None]:
        """The slot's release, for what outlives the block that took it."""
        self.handed_over = True
        return self.release

    def release(self) -> None:
        if self._slots is not None:
            self._slots.held -= 1
            self._slots = None


class HeldStream(StreamingResponse):
    """A streamed answer that gives its slot back once sent (or broken off)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        status_code: int,
        headers: Mapping[str, str],
        background: BackgroundTask,
        release: Callable[[], None],
    ) -> None:
        super().__init__(content, status_code, headers=headers, background=background)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


__all__ = ["RETRY_AFTER", "HeldStream", "Slot", "Slots"]
