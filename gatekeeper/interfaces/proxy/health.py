"""What the proxy says about its readiness besides ``/readyz``'s answer: the ``gatekeeper_ready``
gauge, and one log line when the status changes.

A Chroma outage that the gate rides out on its in-memory copy answers ``/readyz`` 200
``degraded`` (a load balancer keeps the replica) and fails no decision, so neither a status-code
probe nor ``gatekeeper_gate_failures_total`` sees it: ``gatekeeper_ready{status="degraded"}``
does. The log says each change once, not on every probe (a 3-s probe wrote a warning every 3 s,
and nothing when Chroma came back): ``server.degraded`` (a warning) when the status becomes
``degraded`` or its reason changes, ``server.not_ready`` likewise, and ``server.recovered``
(info) when it is ``ready`` again. The first status, at start-up, is said by ``server.started``
instead. Readiness is checked by each ``/readyz`` and each ``/metrics`` scrape.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from gatekeeper.errors import GatekeeperError
from gatekeeper.interfaces.proxy.errors import Json
from gatekeeper.interfaces.proxy.metrics import Metrics
from gatekeeper.logging import Logger


class Health:
    """The readiness last seen, kept in ``gatekeeper_ready`` and logged when it changes."""

    def __init__(self, metrics: Metrics, log: Logger) -> None:
        self._metrics, self._log = metrics, log
        self._lock = threading.Lock()  # probes and scrapes check in threads of their own
        self._seen: tuple[str, Any] | None = None  # (status, reason)
        self._since = time.monotonic()
        self._store_error: str | None = None
        self._one = asyncio.Lock()  # one readiness check at a time (acheck)
        self._checks = 0  # checks done by acheck
        self._answer: tuple[Json, int] | None = None  # the last one's

    def store_unreachable(self, error: str) -> None:
        """Chroma's error, while the gate decides on its in-memory copy (said by
        ``server.degraded``, not to the unauthenticated probe)."""
        self._store_error = error

    async def acheck(self, readiness: Callable[[], Json]) -> tuple[Json, int]:
        """:meth:`check` in a worker thread, one at a time: callers that arrived while a check
        ran take its answer rather than run their own (a caller after it runs a new one).
        During an embeddings outage a check probes the model and can take the endpoint's
        timeout; 3-s probes and scrapes would each start one, piling up threads and calls."""
        arrived = self._checks
        async with self._one:
            if self._checks != arrived and self._answer is not None:
                return self._answer  # a check ran while this caller waited
            self._answer = await asyncio.to_thread(self.check, readiness)
            self._checks += 1
            return self._answer

    def check(self, readiness: Callable[[], Json]) -> tuple[Json, int]:
        """``/readyz``'s answer and status code from ``readiness`` (blocking: run in a thread),
        recorded. A :class:`GatekeeperError` is ``not_ready``, 503, its detail (hosts, paths)
        in the log only."""
        try:
            answer = readiness()
        except GatekeeperError as exc:
            kind = type(exc).__name__
            self._record("not_ready", kind, {"error": str(exc), "error_type": kind})
            return {"status": "not_ready", "reason": kind}, 503
        status, reason = answer["status"], answer.get("reason")
        fields: dict[str, Any] = {
            "collection": answer.get("collection"),
            "exemplars": answer.get("exemplars"),
        }
        if reason == "StoreUnavailableError":
            fields["error"] = self._store_error
        elif "indexed" in answer:
            fields["indexed"] = answer["indexed"]
        self._record(status, reason, fields)
        return answer, 503 if status == "not_ready" else 200  # e.g. no upstream configured

    def _record(self, status: str, reason: Any, fields: dict[str, Any]) -> None:
        with self._lock:
            seen, self._seen = self._seen, (status, reason)
            self._metrics.readiness(status)
            if seen == self._seen:
                return
            now = time.monotonic()
            seconds, self._since = round(now - self._since, 3), now
        if seen is None:
            return  # the first status: server.started says it
        if status == "ready":
            self._log.info("server.recovered", was=seen[0], seconds=seconds, **fields)
        else:
            self._log.warning(f"server.{status}", reason=reason, **fields)


__all__ = ["Health"]
