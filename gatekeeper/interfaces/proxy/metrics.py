"""Prometheus metrics of the gating proxy, in a registry of their own (one per app, no globals).

=============================================  =============================================
``gatekeeper_decisions_total``                 decisions by ``route``, ``intent``, ``mode``
                                               (``enforce`` or ``shadow``)
``gatekeeper_llm_calls_saved_total``           requests answered without calling the LLM
``gatekeeper_gate_seconds``                    histogram: time the proxy spent deciding
``gatekeeper_upstream_errors_total``           upstream failures by ``kind``
``gatekeeper_gate_failures_total``             gate failures (model, Chroma) by ``policy``
                                               and ``error``
``gatekeeper_requests_total``                  HTTP answers by ``path`` (the proxy's own
                                               paths; ``/v1/other`` for the passed-through
                                               API, ``other`` for the rest) and ``status``
``gatekeeper_requests_in_flight``              requests being answered now
``gatekeeper_upstream_seconds``                histogram: time until the upstream's answer
                                               began (its headers), by ``path``
``gatekeeper_build_info``                      1, labelled with ``version``, ``model``,
                                               ``rule`` and ``catalog`` (its content hash)
=============================================  =============================================
"""

from __future__ import annotations

import os
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
        self._serving: dict[str, str] | None = None

    def serving(self, *, version: str, model: str, rule: str, catalog: str) -> None:
        """Record what the proxy serves (``gatekeeper_build_info``); what it served before
        (a catalog it has since followed) drops to 0."""
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
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        # Several serving processes (server.processes): every process's counters, summed.
        from prometheus_client.multiprocess import MultiProcessCollector

        shared = CollectorRegistry()
        MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
        return generate_latest(shared), CONTENT_TYPE_LATEST
