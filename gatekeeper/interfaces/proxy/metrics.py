"""Prometheus metrics of the gating proxy, in a registry of their own (one per app, no globals).

=============================================  =============================================
``gatekeeper_decisions_total``                 decisions by ``route``, ``intent``, ``mode``
                                               (``enforce`` or ``shadow``)
``gatekeeper_llm_calls_saved_total``           requests answered without calling the LLM
``gatekeeper_gate_seconds``                    histogram: time the proxy spent deciding
``gatekeeper_upstream_errors_total``           upstream failures by ``kind`` (every kind
                                               of :data:`UPSTREAM_ERROR_KINDS` from 0)
``gatekeeper_gate_failures_total``             gate failures (model, Chroma) by ``policy``
                                               and ``error`` (the policy served with each of
                                               :data:`GATE_ERRORS` from 0)
``gatekeeper_requests_total``                  HTTP answers by ``path`` (the proxy's own
                                               paths; ``/v1/other`` for the passed-through
                                               API, ``other`` for the rest) and ``status``
``gatekeeper_requests_in_flight``              requests being answered now
``gatekeeper_upstream_seconds``                histogram: time until the upstream's answer
                                               began (its headers), by ``path``
``gatekeeper_build_info``                      1, labelled with ``version``, ``model``,
                                               ``rule`` and ``catalog`` (its content hash);
                                               a build no longer served is not shown
``gatekeeper_ready``                           1 for the ``status`` ``/readyz`` answered
                                               last (``ready``, ``degraded``, ``not_ready``),
                                               0 for the others
=============================================  =============================================

No ``_created`` series: one serving process would export them and several
(``server.processes``) cannot, so the series an alert reads would change with the process
count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from gatekeeper.decision import Decision

#: Where prometheus-client's multiprocess mode keeps the serving processes' counters.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: An LLM answers in tenths of a second to a minute.
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
NO_INTENT = "none"
#: The paths counted under their own label.
KNOWN_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/responses", "/v1/models", "/healthz", "/readyz", "/metrics"}
)
#: Every ``kind`` of ``gatekeeper_upstream_errors_total`` (each exported from 0: an alert on
#: its rate reads 0, not "no data", before the first failure).
UPSTREAM_ERROR_KINDS = (
    "unavailable",
    "timeout",
    "auth",
    "status_4xx",
    "status_5xx",
    "malformed",
    "body_interrupted",
    "stream_interrupted",
    "stream_truncated",
)
#: The ``error`` of ``gatekeeper_gate_failures_total`` exported from 0: the gate's failures
#: while serving (an outage of the model or of Chroma; another error is counted when it
#: happens).
GATE_ERRORS = ("EmbeddingError", "StoreError", "StoreUnavailableError", "IndexMissingError")
#: The ``status`` values of ``gatekeeper_ready`` (those of ``/readyz``).
READY_STATUSES = ("ready", "degraded", "not_ready")


def label_value(value: str) -> str:
    """``value`` as a label value: control characters (which the text exposition does not
    escape, but for a line feed) replaced by U+FFFD, so an intent name can never break a line."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() or c == " " else "\ufffd" for c in value)


def path_label(path: str) -> str:
    """A request path as a metrics label: one of :data:`KNOWN_PATHS`, ``/v1/other`` for the rest
    of the API (passed through), ``other`` for anything else (bounded: no label per path)."""
    if path in KNOWN_PATHS:
        return path
    return "/v1/other" if path.startswith("/v1/") else "other"


class Metrics:
    """The proxy's counters and histograms, registered in their own ``CollectorRegistry``."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "gatekeeper_decisions",
            "Gate decisions by route and intent; mode is enforce or shadow.",
            ["route", "intent", "mode"],
            registry=self.registry,
        )
        self.llm_calls_saved = Counter(
            "gatekeeper_llm_calls_saved",
            "Requests answered by the gate (off-topic or canned) without calling the LLM.",
            registry=self.registry,
        )
        self.gate_seconds = Histogram(
            "gatekeeper_gate_seconds",
            "Wall-clock time the proxy spent deciding one request.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "gatekeeper_upstream_errors",
            "Upstream LLM failures by kind (timeout, unavailable, status_5xx, auth, stream, ...).",
            ["kind"],
            registry=self.registry,
        )
        self.gate_failures = Counter(
            "gatekeeper_gate_failures",
            "Requests decided by the failure policy because the gate itself failed.",
            ["policy", "error"],
            registry=self.registry,
        )
        self.requests = Counter(
            "gatekeeper_requests",
            "HTTP answers by path and status code.",
            ["path", "status"],
            registry=self.registry,
        )

        self.in_flight = Gauge(
            "gatekeeper_requests_in_flight",
            "HTTP requests being answered now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upstream_seconds = Histogram(
            "gatekeeper_upstream_seconds",
            "Time until the upstream LLM's answer began (its headers), by path.",
            ["path"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.build_info = Gauge(
            "gatekeeper_build_info",
            "Always 1: what this proxy serves (version, model, rule, catalog content hash).",
            ["version", "model", "rule", "catalog"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            "gatekeeper_ready",
            "1 for the status /readyz answered last (ready, degraded, not_ready), else 0.",
            ["status"],
            registry=self.registry,
            # the process that checked last answers (a dead one's value is dropped)
            multiprocess_mode="livemostrecent",
        )
        self._serving: dict[str, str] | None = None
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind=kind)

    def count_failures_from(self, policy: str) -> None:
        """Export ``gatekeeper_gate_failures_total`` at 0 for ``policy`` (``gate.on_error``)
        and each of :data:`GATE_ERRORS`."""
        for error in GATE_ERRORS:
            self.gate_failures.labels(policy=policy, error=error)

    def readiness(self, status: str) -> None:
        """``gatekeeper_ready``: 1 for ``status``, 0 for the other statuses."""
        for known in READY_STATUSES:
            self.ready.labels(status=known).set(1 if known == status else 0)

    def serving(self, *, version: str, model: str, rule: str, catalog: str) -> None:
        """Record what the proxy serves (``gatekeeper_build_info``); what it served before
        (a catalog it has since followed) drops to 0, which :meth:`render` does not show."""
        named = {"version": version, "model": model, "rule": rule, "catalog": catalog}
        labels = {name: label_value(value) for name, value in named.items()}
        if self._serving not in (None, labels):
            self.build_info.labels(**self._serving).set(0)
        self.build_info.labels(**labels).set(1)
        self._serving = labels

    def upstream_began(self, path: str, seconds: float) -> None:
        """The upstream's answer to ``path`` began after ``seconds``."""
        self.upstream_seconds.labels(path=path).observe(seconds)

    def observe_decision(self, decision: Decision, *, seconds: float, policy: str) -> None:
        """Count one request's decision (and a gate failure, when the policy decided it)."""
        mode = "shadow" if decision.shadow else "enforce"
        intent = label_value(decision.intent or NO_INTENT)
        self.decisions.labels(route=decision.route.value, intent=intent, mode=mode).inc()
        self.gate_seconds.observe(seconds)
        if decision.gate_error:
            self.gate_failures.labels(policy=policy, error=decision.gate_error).inc()

    def saved_call(self) -> None:
        """One LLM call the gate saved."""
        self.llm_calls_saved.inc()

    def upstream_error(self, kind: str) -> None:
        """One upstream failure of ``kind``."""
        self.upstream_errors.labels(kind=kind).inc()

    def answered(self, path: str, status: int) -> None:
        """One HTTP answer."""
        self.requests.labels(path=path, status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not os.environ.get(MULTIPROC_DIR):
            return generate_latest(_Exposed(self.registry)), CONTENT_TYPE_LATEST
        # Several serving processes (server.processes): every process's counters, summed.
        from prometheus_client.multiprocess import MultiProcessCollector

        shared = CollectorRegistry()
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
        return generate_latest(_Exposed(shared)), CONTENT_TYPE_LATEST


class _Exposed:
    """The samples of ``registry`` that ``/metrics`` shows: the same series whatever the
    process count. Without ``_created`` samples (one process's counters and histograms have
    them, the multiprocess collector's never; prometheus-client's own switch,
    ``disable_created_metrics``, is global to the interpreter, for every registry of an
    application that embeds the proxy), and without a ``gatekeeper_build_info`` at 0 (a build
    no longer served: several processes share their values in files, from which a label set
    cannot be removed)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        for metric in self._registry.collect():  # fresh Metric objects on every collect
            created, stale = f"{metric.name}_created", metric.name == "gatekeeper_build_info"
            metric.samples = [
                s for s in metric.samples if s.name != created and not (stale and s.value == 0)
            ]
            yield metric
