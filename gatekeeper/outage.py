"""A run of failures (the model or Chroma down, a build copy that will not reload), logged as
an operator reads it.

Each failed decision is still counted (``gatekeeper_gate_failures_total``) and carries
``gate_error`` in its own ``gate.decided`` line; what this module limits is the ``gate.failed``
ERROR line, which a Chroma outage under load wrote once per request (1,087 lines in ten
seconds, an operator's walkthrough). The first failure of a run is logged at once, repeats at
most every ``every`` seconds with how many failed since, and the first success after it logs
``gate.recovered`` with the run's length. The same rule, under other event names, logs a copy
of a build that keeps failing to reload (:mod:`gatekeeper.build_copy`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from gatekeeper.errors import EmbeddingError

#: Seconds between two ``gate.failed`` lines of one outage.
REPEAT_EVERY = 10.0


class Outage:
    """The current run of failures, if any (thread-safe), logged as ``failed`` (at ``level``)
    and ``recovered`` events."""

    def __init__(
        self,
        log: Any,
        *,
        every: float = REPEAT_EVERY,
        clock: Callable[[], float] = time.monotonic,
        failed: str = "gate.failed",
        recovered: str = "gate.recovered",
        level: str = "error",
    ) -> None:
        self._log, self._every, self._clock = log, every, clock
        self._events, self._level = (failed, recovered), level
        self._lock = threading.Lock()
        self._started: float | None = None
        self._logged_at = 0.0
        self._failures = 0
        self._unlogged = 0
        self._cause: type[Exception] | None = None

    @property
    def cause(self) -> type[Exception] | None:
        """The class of the run's last failure (None when no run is going on)."""
        return self._cause

    @property
    def going_on(self) -> bool:
        """Whether a run of failures is going on (no success since the last failure)."""
        return self._started is not None

    def failed(self, exc: Exception, policy: str | None = None, **fields: Any) -> None:
        """One failure: logged (with ``policy`` and ``fields``) when it starts a run, or
        ``every`` seconds after the last line."""
        now = self._clock()
        with self._lock:
            self._failures += 1
            self._cause = type(exc)
            first = self._started is None
            if not first and now - self._logged_at < self._every:
                self._unlogged += 1
                return
            if first:
                self._started = now
            repeated, self._unlogged, self._logged_at = self._unlogged, 0, now
        fields = {"error": str(exc), "error_type": type(exc).__name__, **fields}
        if policy is not None:
            fields["policy"] = policy
        if not first:
            fields["repeated"] = repeated + 1  # failures since the last line, this one included
        getattr(self._log, self._level)(self._events[0], **fields)

    def succeeded(self, **fields: Any) -> None:
        """A success: ends the run, if one is going on (logged with ``fields``)."""
        if self._started is None:  # the usual case, without the lock
            return
        with self._lock:
            if self._started is None:
                return
            seconds, failures = self._clock() - self._started, self._failures
            self._started, self._failures, self._unlogged = None, 0, 0
            self._cause = None
        self._log.info(self._events[1], failures=failures, seconds=round(seconds, 3), **fields)


def ends_outage(cause: type[Exception] | None, calls: Collection[str]) -> bool:
    """Whether a decision that called ``calls`` (``embedder``, ``store``) ends a gate's run of
    failures of class ``cause``: it called what had failed (a turn the turn cache answered
    called no embedder: no sign that the model is back)."""
    if cause is None:
        return True
    return ("embedder" if issubclass(cause, EmbeddingError) else "store") in calls
