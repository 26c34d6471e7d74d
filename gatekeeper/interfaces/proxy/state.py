"""What the proxy's handlers share (:class:`Proxy`), and the pooled upstream HTTP client."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from gatekeeper.batching import DecisionBatcher
from gatekeeper.decision import Decision
from gatekeeper.errors import (
    EmptyMessageError,
    IndexMissingError,
    InputError,
    MessageTooLongError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.errors import Json, ProxyError, upstream_failure
from gatekeeper.interfaces.proxy.metrics import Metrics
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings, UpstreamSettings


@dataclass
class Proxy:
    """What the handlers share; built in the app's lifespan."""

    settings: Settings
    gate: Gatekeeper
    client: httpx.AsyncClient
    metrics: Metrics
    log: Any = field(default_factory=get_logger)
    batcher: DecisionBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = DecisionBatcher(self.gate, on_error=self.settings.gate.on_error)

    def upstream_url(self, path: str, headers: Mapping[str, str]) -> str:
        base = self.settings.upstream.base_url
        if not base:
            raise upstream_failure(
                502,
                "no upstream is configured: set GATEKEEPER_UPSTREAM__BASE_URL",
                "upstream_not_configured",
                headers,
            )
        return f"{base.rstrip('/')}/{path}"

    def upstream_headers(self, accept: str | None) -> dict[str, str]:
        """Headers sent upstream: the proxy's own key, never the client's."""
        headers = {
            "content-type": "application/json",
            "accept": accept or "application/json",
            "accept-encoding": "identity",
        }
        key = self.settings.upstream.api_key
        if key is not None and key.get_secret_value():
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return headers

    async def decide(self, messages: Any) -> Decision:
        """The gate's decision on ``messages``; input mistakes become 4xx."""
        policy = self.settings.gate.on_error
        started = time.perf_counter()
        try:
            # Concurrent requests share forward passes (see gatekeeper.batching).
            decision = await self.batcher.decide(messages)
        except EmptyMessageError as exc:
            raise ProxyError(400, str(exc), code="empty_message") from exc
        except MessageTooLongError as exc:
            raise ProxyError(400, str(exc), code="message_too_long") from exc
        except InputError as exc:
            raise ProxyError(422, str(exc), code="invalid_messages") from exc
        if self.settings.gate.shadow and not decision.shadow:  # the proxy's own setting
            decision = decision.model_copy(update={"shadow": True})
        self.metrics.observe_decision(
            decision, seconds=time.perf_counter() - started, policy=policy
        )
        return decision

    def readiness(self) -> Json:
        """Model loaded and collection reachable (blocking: run in a thread)."""
        self.gate.ready()
        info = self.gate.store.info()
        if info is None:
            raise IndexMissingError.for_collection(self.gate.store.name)
        return {
            "status": "ready",
            "collection": info.collection,
            "model": info.model,
            "exemplars": info.count,
        }


def proxy_of(request: Request) -> Proxy:
    state: Proxy = request.app.state.proxy
    return state


def build_upstream_client(settings: UpstreamSettings) -> httpx.AsyncClient:
    """The pooled HTTP client used to reach the upstream (connect failures retried)."""
    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    transport = httpx.AsyncHTTPTransport(retries=settings.max_retries)
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, transport=transport, limits=limits)
