"""The OpenAI-compatible gating proxy (``gatekeeper serve``).

Point a chatbot's ``base_url`` at the proxy and it keeps working, minus the off-topic calls:

``POST /v1/chat/completions``
    The gate decides the request's ``messages`` (the last user turn, read with the turns before
    it). Admitted requests are forwarded to ``upstream.base_url`` with the raw body unchanged and
    the proxy's own upstream key; the upstream's answer comes back unchanged (streams chunk by
    chunk). Off-topic and canned requests get a locally built ``chat.completion`` (or, with
    ``stream: true``, ``chat.completion.chunk`` events ending in ``data: [DONE]``). Every answer
    carries ``x-gatekeeper-route``, ``x-gatekeeper-intent`` and ``x-gatekeeper-score``.
``POST /v1/responses``
    The Responses API, gated the same way: the gate decides the last user message of ``input``
    (a string, or input items ``{"role", "content"}`` with string or ``input_text`` content;
    tool items are history, ``instructions`` a system prompt, never a user turn). Admitted: the
    raw body to ``upstream/responses``. Refused/canned: a local ``response`` or its SSE events,
    ``response.created`` ... ``response.completed``. A forwarded stream must end with a terminal
    event (``response.completed``/``incomplete``/``failed``, ``error``), else it is cut (below).
``GET /v1/models``
    Passed through to the upstream (read whole).
other ``/v1/...``
    Passed through when ``server.passthrough`` lists the path's first segment (models,
    embeddings, files, moderations, audio, ... and the stored objects of the gated endpoints,
    read or deleted only; see :mod:`~gatekeeper.interfaces.proxy.passthrough`), behind the same
    inbound key: the proxy's upstream key, the raw path, query string and (streamed) body
    unchanged, the answer streamed back (hop-by-hop headers dropped); no decision, no
    ``x-gatekeeper-*`` headers. A non-SSE answer that breaks mid-body is cut for the client too
    (connection closed), an SSE one ends with the SSE error event. Any other path: 403
    ``endpoint_not_gated``. Dot segments in the path: 400.
``GET /healthz`` · ``GET /readyz`` · ``GET /metrics``
    Alive; model loaded and collection reachable; Prometheus text (see :mod:`gatekeeper.metrics`).

Inbound keys: with ``server.api_keys`` set, every path needs ``Authorization: Bearer <key>``
except ``server.public_paths`` (default ``["/healthz"]``: a liveness probe carries no key).
``/metrics``, ``/readyz`` (collection, model, exemplar count) and ``/openapi.json`` are behind
the key unless listed there (env: ``GATEKEEPER_SERVER__PUBLIC_PATHS=/healthz,/readyz``). The API
endpoints (``/v1/...``) always need a key, whatever the list says.

Forwarding uses ``httpx`` rather than the ``openai`` client: the body goes upstream byte for byte
(tools, vendor fields and all, nothing re-serialised), and the answer's bytes, status and SSE
events come back as the upstream sent them. Because the raw body is forwarded, it is read
strictly, so that what the gate judged is exactly what the upstream reads: UTF-8 only, no lone
UTF-16 surrogates (``"\\ud800"``) in any string, no duplicate keys at any depth, no ``NaN`` or
``Infinity``, no number past Python's limits (integers over 4,300 digits, floats that overflow).
Each is a 400 (refused, not sanitised: a surrogate cannot be judged, echoed or encoded).

Errors are OpenAI-style bodies ``{"error": {"message", "type", "code"}}``:

====  ===================================================================================
401   ``server.api_keys`` set and the request's ``Authorization: Bearer`` key missing/wrong
400   body is not strict UTF-8 JSON (above; ``invalid_json``, ``invalid_unicode``); the judged
      user message is empty or over ``gate.max_message_chars``
413   body over ``server.max_body_bytes``
403   an ungated generation endpoint (``/v1/completions``, ``/v1/threads``, ``/v1/realtime``)
422   JSON of the wrong shape: no ``messages`` (``input`` for responses), wrong types
499   (logged and counted only) the client went away or sent a broken body mid-request
502   upstream unreachable, answered 5xx, refused the proxy's key, or cut its answer short
      (other 4xx pass through)
504   upstream timed out (``upstream.timeout``)
500   a bug: logged, answered with a generic body, never a traceback
====  ===================================================================================

A stream that fails once started (the upstream breaks off, times out, or ends without its
``data: [DONE]``, a Responses stream its ``response.completed``) cannot change its status any
more: it ends with an SSE event ``data: {"error": {...}}`` and is counted in
``gatekeeper_upstream_errors_total``.

When the gate itself fails (model or Chroma), ``gate.on_error`` decides: ``fail_open`` forwards,
``fail_closed`` refuses; both are counted. That holds at start-up too: a proxy whose Chroma server
is down starts (logging ``gate.not_ready``, then ``server.started`` with ``status: not_ready``),
serves per ``gate.on_error`` with ``/readyz`` at 503,
and recovers by itself when Chroma is back (requests retry, at most once every 5 s). A
misconfiguration (a bad catalog, a model not found, an index built with another model) still
refuses to start. A Chroma lost after start is ridden out by a search in memory (decisions
from its copy of the build, ``/readyz`` 200 ``degraded``), and so is a copy that is not of the
store's build yet (its reload pending or failing: ``/readyz`` 200 ``degraded`` naming the copy
served; a failing reload logged as ``store.reload_failed``). The status ``/readyz`` answers is
also the gauge ``gatekeeper_ready{status}``, and each change of it is logged once
(``server.degraded``, ``server.not_ready``, ``server.recovered``: :mod:`.health`). With
``gate.shadow`` every request is decided, logged and counted, then forwarded.
"""

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.errors import ProxyError
from gatekeeper.interfaces.proxy.runner import run_server

__all__ = ["ProxyError", "create_app", "run_server"]
