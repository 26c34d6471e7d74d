"""What the proxy's handlers share (:class:`Proxy`), and the pooled upstream HTTP client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from fastapi import Request

from gatekeeper._version import __version__
from gatekeeper.batching import DecisionBatcher
from gatekeeper.decision import Decision
from gatekeeper.embedding import Embedder
from gatekeeper.errors import (
    EmbeddingError,
    EmptyMessageError,
    GatekeeperError,
    IndexMismatchError,
    IndexMissingError,
    InputError,
    MessageTooLongError,
    ModelNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.drain import Drain
from gatekeeper.interfaces.proxy.errors import HOP_BY_HOP, Json, ProxyError, upstream_failure
from gatekeeper.interfaces.proxy.health import Health
from gatekeeper.interfaces.proxy.metrics import Metrics
from gatekeeper.interfaces.proxy.scrubbing import Scrubber
from gatekeeper.interfaces.proxy.slots import Slots
from gatekeeper.interfaces.proxy.threads import ResponseThreads
from gatekeeper.interfaces.proxy.tool_turns import continuation, customer_message
from gatekeeper.logging import get_logger
from gatekeeper.settings import EmbeddingSettings, Settings, UpstreamSettings

#: How often an idle proxy loads a changed build into memory (``index`` run elsewhere).
WARM_SECONDS = 5.0
_KNOWN_URLS = 64  # parsed upstream URLs kept (paths: the gated ones and the passed-through)
_PRINTABLE = re.compile(rb"[\x20-\x7e]+")
_USER_AGENT = "gatekeeper-proxy"

#: Method-override header names (also refused as query parameters of a passed-through request,
#: see :mod:`gatekeeper.interfaces.proxy.passthrough`): one would turn a passed-through GET into
#: what the upstream judges it to be.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})

#: Headers that carry a client's credential in one API or another (OpenAI's ``Authorization``,
#: Anthropic's ``x-api-key``, Azure OpenAI's ``api-key``, Gemini's ``x-goog-api-key``, Azure API
#: Management's subscription key): the proxy's upstream key replaces the client's, so none is
#: passed upstream.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-auth-token",
    }
)

#: Client request headers never passed upstream (names compared in lower case, ``_`` read as
#: ``-`` as CGI-style servers do): hop-by-hop ones, the client's keys and cookies, what httpx sets
#: itself, method overrides, the headers by which a server behind a reverse proxy serves another
#: path than the request line's, and the OpenAI organization and project to bill (the operator's
#: key's, never the client's choice).
_NOT_FORWARDED = (
    HOP_BY_HOP
    | METHOD_OVERRIDES
    | CREDENTIAL_HEADERS
    | {
        "cookie",
        "host",
        "accept-encoding",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-forwarded-uri",
        "x-forwarded-server",
        "x-real-ip",
        "x-original-url",
        "x-original-uri",
        "x-original-path",
        "x-original-host",
        "x-rewrite-url",
        "x-envoy-original-path",
        "x-host",
        "x-http-host-override",
        "openai-organization",
        "openai-project",
    }
)


@dataclass
class Proxy:
    """What the handlers share; built in the app's lifespan."""

    settings: Settings
    gate: Gatekeeper
    client: httpx.AsyncClient
    metrics: Metrics
    log: Any = field(default_factory=get_logger)
    drain: Drain = field(default_factory=Drain)  # started by the server's shutdown
    batcher: DecisionBatcher = field(init=False)
    threads: ResponseThreads = field(init=False)
    passthrough_slots: Slots = field(init=False)
    health: Health = field(init=False)
    _urls: dict[str, httpx.URL] = field(init=False, default_factory=dict)
    _scrubber: Scrubber = field(init=False)

    def scrub(self, data: bytes) -> bytes:
        """``data`` (an upstream's error body, a header) with the proxy's keys, in any spelling,
        replaced by ``***``: an upstream may echo the key it was sent, and its errors reach the
        client (see :mod:`~gatekeeper.interfaces.proxy.scrubbing`; a successful answer's body is
        relayed as sent)."""
        return self._scrubber(data)

    def record_serving(self) -> None:
        """``gatekeeper_build_info``: the version, model, rule and catalog served now."""
        self.metrics.serving(
            version=__version__,
            model=self.gate.embedder.identity,
            rule=self.gate.rule.name,
            catalog=self.gate.catalog.content_hash(),
        )

    def __post_init__(self) -> None:
        keys = [self.settings.upstream.api_key, *self.settings.server.api_keys]
        self._scrubber = Scrubber(k.get_secret_value() for k in keys if k is not None)
        self.health = Health(self.metrics, self.log)
        server, limit = self.settings.server, self.settings.gate.max_message_chars
        self.passthrough_slots = Slots(server.max_passthrough)
        self.threads = ResponseThreads(
            server.response_threads, limit, max_bytes=server.response_threads_bytes
        )
        self.batcher = DecisionBatcher(
            self.gate,
            on_error=self.settings.gate.on_error,
            workers=self.settings.server.decision_workers,
            max_batch=self.settings.server.max_batch,
        )

    def upstream_url(self, path: str, headers: Mapping[str, str], query: str = "") -> httpx.URL:
        """``upstream.base_url``/``path``[?``query``]; parsed once per path (gated requests
        have no query; a passed-through one with a query is parsed each time, not kept)."""
        if not query and (known := self._urls.get(path)) is not None:
            return known
        base = self.settings.upstream.base_url
        if not base:
            raise upstream_failure(
                502,
                "no upstream is configured: set GATEKEEPER_UPSTREAM__BASE_URL",
                "upstream_not_configured",
                headers,
            )
        url = httpx.URL(f"{base.rstrip('/')}/{path}" + (f"?{query}" if query else ""))
        if not query and len(self._urls) < _KNOWN_URLS:
            self._urls[path] = url
        return url

    def upstream_headers(self, accept: str | None) -> dict[str, str]:
        """Headers sent upstream: the proxy's own key, never the client's."""
        headers = {
            "content-type": "application/json",
            "accept": accept or "application/json",
            "accept-encoding": "identity",
            "user-agent": _USER_AGENT,
        }
        key = self.settings.upstream.api_key
        if key is not None and key.get_secret_value():
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return headers

    def forwarded_headers(self, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Headers of a passed-through request: the client's end-to-end ones (content type,
        ``OpenAI-Beta``, ...; printable ASCII only, others are dropped rather than re-encoded;
        never one of :data:`_NOT_FORWARDED`), with the proxy's own key instead of the client's."""
        headers = [
            (k, v)
            for k, v in raw
            if _PRINTABLE.fullmatch(k)
            and _PRINTABLE.fullmatch(v or b" ")
            and k.decode().lower().replace("_", "-") not in _NOT_FORWARDED
        ]
        headers.append((b"accept-encoding", b"identity"))
        key = self.settings.upstream.api_key
        if key is not None and key.get_secret_value():
            headers.append((b"authorization", f"Bearer {key.get_secret_value()}".encode()))
        return headers

    async def decide(self, messages: Any, *, tool_results: bool = False) -> Decision:
        """The gate's decision on ``messages``; input mistakes become 4xx. With
        ``tool_results`` (the request carries some), ``messages`` without a customer turn are
        the app's own turn continuing an admitted one, forwarded as a follow-up
        (:mod:`~gatekeeper.interfaces.proxy.tool_turns`), not an empty message."""
        policy = self.settings.gate.on_error
        started = time.perf_counter()
        try:
            if tool_results and not customer_message(messages):
                gate = self.settings.gate
                decision = continuation(gate.threshold, shadow=gate.shadow)
            else:
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
        """The gate's readiness (:meth:`gate_readiness`; blocking: run in a thread), and an
        upstream to forward to: without one every admitted request would get a 502, so the
        proxy is ``not_ready`` (``reason: upstream_not_configured``; it still serves, so a
        local try-out shows its refusals)."""
        ready = self.gate_readiness()
        if not self.settings.upstream.base_url:
            return {"status": "not_ready", "reason": "upstream_not_configured"}
        return ready

    def gate_readiness(self) -> Json:
        """Model loaded and collection reachable (blocking: run in a thread). While Chroma is
        unreachable, a gate that decides on its in-memory copy of the build is still ready
        (``status: degraded``): taking it out of a load balancer would refuse customers the
        gate can serve. So is one whose copy is not of the store's build (its reload pending or
        failing): it names the copy it serves, and under ``indexed`` the store's build. During
        an outage of the model (an embeddings server down), the model is probed: not ready
        while it fails, and its first answer ends the outage, with or without traffic. An index
        gone from Chroma while a copy answers is ``degraded`` too (``reason: index_missing``)."""
        self.gate.ready()
        self.gate.probe_embedder()
        store = self.gate.store
        try:
            info = store.info()
        except StoreUnavailableError as exc:
            if (copy := store.serving_copy()) is None:
                raise
            self.health.store_unreachable(str(exc))  # logged when the status changes
            return self._ready("degraded", copy.key[0], len(copy.ids)) | {
                "reason": "StoreUnavailableError"
            }
        if info is None:  # gone from Chroma: ridden out on a copy, if one is held
            if (copy := store.serving_copy()) is None:
                command = self.gate.settings.index_command()
                raise IndexMissingError.for_collection(store.name, command)
            return self._ready("degraded", copy.key[0], len(copy.ids)) | {"reason": "index_missing"}
        if (copy := store.copy_behind()) is not None:
            return self._ready("degraded", copy.key[0], len(copy.ids)) | {
                "reason": "reload_failed" if store.reload_failing else "reload_pending",
                "indexed": {"collection": info.collection, "exemplars": info.count},
            }
        return self._ready("ready", info.collection, info.count)

    def _ready(self, status: str, collection: str, count: int) -> Json:
        return {
            "status": status,
            "collection": collection,
            "model": self.gate.embedder.identity,  # what ready() checked the build against
            "runtime": self.gate.embedder.runtime,
            "exemplars": count,
        }


def proxy_of(request: Request) -> Proxy:
    state: Proxy = request.app.state.proxy
    return state


def build_upstream_client(settings: UpstreamSettings) -> httpx.AsyncClient:
    """The pooled HTTP client used to reach the upstream (connect failures retried).

    It keeps no cookies: one client serves every customer, so a cookie the upstream (or a load
    balancer in front of it) set in one customer's answer would otherwise ride along with every
    later customer's request."""
    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    from gatekeeper.interfaces.proxy.transport import UpstreamTransport

    # The limits belong to the transport: an AsyncClient given a transport ignores its own.
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=min(64, settings.max_connections),
    )
    transport = UpstreamTransport(limits=limits, retries=settings.max_retries)
    return _CookielessClient(timeout=timeout, transport=transport)


class _NoCookies(httpx.Cookies):
    """A cookie store that takes none: an answer's headers are not even parsed for them (5% of
    the event loop under load, for a jar that kept nothing)."""

    def __init__(self) -> None:
        super().__init__(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An :class:`httpx.AsyncClient` that keeps and sends no cookies (see
    :func:`build_upstream_client`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._none = _NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("the upstream client keeps no cookies")


def model_settings(settings: Settings) -> EmbeddingSettings:
    """The embedding settings the proxy runs: a local model's forward passes get
    ``cores / (server.processes * server.decision_workers)`` threads each unless
    ``embedding.threads`` is set (a second local model, ``embedding.ensemble``, too)."""
    embedding = settings.embedding
    local = embedding.provider == "local" or embedding.ensemble != "none"
    if not local or embedding.threads is not None:
        return embedding
    from gatekeeper.embedding.local import available_cores

    share = settings.server.processes * settings.server.decision_workers
    threads = max(1, available_cores() // share)
    return embedding.model_copy(update={"threads": threads})


def build_gate(settings: Settings, *, embedder: Embedder | None = None) -> Gatekeeper:
    """The gate the proxy serves (:meth:`Gatekeeper.from_settings`, its model's threads split
    between the serving processes and decision workers, :func:`model_settings`), its Chroma
    client opened lazily (see :class:`LazyClient`); ``gate.close()`` releases both.

    Its store is the one ``gatekeeper index`` fills for the same settings: the catalog's own
    (:func:`~gatekeeper.store.collection_name` of ``settings.catalog`` and the embedder's
    identity). A bad catalog or settings raise here; nothing is loaded or connected yet."""
    served = settings.model_copy(update={"embedding": model_settings(settings)})
    return Gatekeeper.from_settings(served, embedder=embedder)


def prepare_gate(gate: Gatekeeper, policy: str | None = None, log: Any = None) -> Gatekeeper:
    """Load the model and check the index before serving.

    A misconfiguration (model not found, an index built with another model) raises: never a
    proxy that forwards everything. An unavailable gate (Chroma down, the model failing) is
    logged loudly and served per ``gate.on_error``: ``fail_open`` forwards, ``fail_closed``
    refuses, ``/readyz`` answers 503, and the next requests retry until the gate recovers.
    """
    log = log or get_logger()
    try:
        gate.ready()
    except (IndexMismatchError, ModelNotFoundError):
        raise
    except (EmbeddingError, StoreError) as exc:
        unavailable = isinstance(exc, StoreUnavailableError | EmbeddingError)
        log.error(
            "gate.not_ready",
            error=str(exc),
            error_type=type(exc).__name__,
            policy=policy or gate.settings.gate.on_error,
            hint="serving per gate.on_error; /readyz answers 503 until the gate recovers"
            + ("" if unavailable else "; run `gatekeeper index`"),
        )
    return gate


async def keep_warm(proxy: Proxy, every: float = WARM_SECONDS) -> None:
    """Until cancelled: every ``every`` seconds, :meth:`Gatekeeper.refresh` (a build synced by
    another process loaded into memory, its catalog followed), so that an idle proxy does not
    make its next request wait for that load. A failure (Chroma down) is left to the
    decisions, which report it."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(proxy.gate.refresh)
        except GatekeeperError:
            continue
        except Exception as exc:  # a bug: said, and tried again (decisions refresh too)
            proxy.log.error("server.refresh_failed", error_type=type(exc).__name__, exc_info=exc)
