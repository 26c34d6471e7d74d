"""The proxy on loopback (uvicorn, real sockets) in front of a
:class:`~gatekeeper.testing.RecordingUpstream`: the integration tests' gate, settings, servers and
clients. The fixtures built on it (``upstream``, ``gate``, ``start_proxy``) are in
``tests/integration/conftest.py``; the proxy in-process is :mod:`tests.support.proxy`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy.typing as npt
import openai
from pydantic import SecretStr

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import Settings, UpstreamSettings
from gatekeeper.testing import HashingEmbedder, LoopbackServer, RecordingUpstream, tiny_catalog
from tests.support.proxy import CLIENT_KEY, with_upstream

#: The proxy's own key, the only one the recording upstream accepts.
UPSTREAM_KEY = "sk-upstream-secret-0001"

#: ``start_proxy(with_gate=None, base_url="upstream", **options)``: a started proxy
#: (``options``: of :func:`proxy_settings`).
StartProxy = Callable[..., LoopbackServer]


class BreakableEmbedder(HashingEmbedder):
    """The hashing embedder, with a switch that makes it raise ``failure``."""

    failure: Exception | None = None

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        if self.failure is not None:
            raise self.failure
        return super()._encode(texts)


def tiny_gate_at(data_dir: Path, store: dict[str, Any] | None = None, **gate: Any) -> Gatekeeper:
    """An indexed tiny gate on a breakable hashing embedder (``store`` and ``gate``: settings)."""
    gate = {"threshold": 0.35, "rule": "contrast", **gate}
    settings = Settings(data_dir=data_dir, gate=gate, store=store or {})
    built = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=BreakableEmbedder())
    built.index()
    return built


def proxy_settings(
    gate: Gatekeeper,
    base_url: str | None,
    *,
    api_keys: tuple[str, ...] = (),
    timeout: float = 10.0,
    max_body_bytes: int = 1_000_000,
    server: dict[str, Any] | None = None,
    **gate_settings: Any,
) -> Settings:
    """The gate's settings with an upstream, inbound keys, other ``server`` settings and gate
    policy for the proxy."""
    upstream = UpstreamSettings(
        base_url=base_url, api_key=SecretStr(UPSTREAM_KEY), timeout=timeout, max_retries=0
    )
    return with_upstream(
        gate.settings,
        upstream,
        gate=gate_settings,
        api_keys=[SecretStr(k) for k in api_keys],
        max_body_bytes=max_body_bytes,
        **(server or {}),
    )


@contextmanager
def proxies(gate: Gatekeeper, upstream: RecordingUpstream) -> Iterator[StartProxy]:
    """Start real proxies (uvicorn on loopback), by default with ``gate`` in front of
    ``upstream``; those started are stopped on leaving the block."""
    started: list[LoopbackServer] = []

    def start(
        with_gate: Gatekeeper | None = None, base_url: str | None = "upstream", **options: Any
    ) -> LoopbackServer:
        the_gate = with_gate or gate
        url = upstream.base_url if base_url == "upstream" else base_url
        server = LoopbackServer(create_app(proxy_settings(the_gate, url, **options), gate=the_gate))
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def client_for(server: LoopbackServer, key: str = CLIENT_KEY) -> openai.OpenAI:
    """The official client pointed at the proxy, no retries."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
