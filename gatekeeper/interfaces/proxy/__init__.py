"""The OpenAI-compatible gating proxy (``gatekeeper serve``).

Point a chatbot's ``base_url`` at the proxy and it keeps working, minus the off-topic calls:

``POST /v1/chat/completions``
    The gate decides the request's ``messages`` (the last user turn, read with the turns before
    it). Admitted requests are forwarded to ``upstream.base_url`` with the raw body unchanged and
    the proxy's own upstream key; the upstream's answer comes back unchanged (streams chunk by
    chunk). Off-topic and canned requests get a locally built ``chat.completion`` (or, with
    ``stream: true``, ``chat.completion.chunk`` events ending in ``data: [DONE]``). Every answer
    carries ``x-gatekeeper-route``, ``x-gatekeeper-intent`` and ``x-gatekeeper-score``.
``GET /v1/models``
    Passed through to the upstream.
``GET /healthz`` · ``GET /readyz`` · ``GET /metrics``
    Alive; model loaded and collection reachable; Prometheus text (see :mod:`gatekeeper.metrics`).

Forwarding uses ``httpx`` rather than the ``openai`` client: the body goes upstream byte for byte
(tools, vendor fields and all, nothing re-serialised), and the answer's bytes, status and SSE
events come back as the upstream sent them.

Errors are OpenAI-style bodies ``{"error": {"message", "type", "code"}}``:

====  ===================================================================================
401   ``server.api_keys`` set and the request's ``Authorization: Bearer`` key missing/wrong
400   body is not JSON; the judged user message is empty or over ``gate.max_message_chars``
413   body over ``server.max_body_bytes``
422   JSON of the wrong shape: no ``messages``, wrong types
502   upstream unreachable, answered 5xx, or refused the proxy's key (other 4xx pass through)
504   upstream timed out (``upstream.timeout``)
500   a bug: logged, answered with a generic body, never a traceback
====  ===================================================================================

When the gate itself fails (model or Chroma), ``gate.on_error`` decides: ``fail_open`` forwards,
``fail_closed`` refuses; both are counted. With ``gate.shadow`` every request is decided, logged
and counted, then forwarded.
"""

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.errors import ProxyError
from gatekeeper.interfaces.proxy.runner import run_server

__all__ = ["ProxyError", "create_app", "run_server"]
