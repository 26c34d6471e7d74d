"""Which ``/v1/...`` requests the proxy passes through ungated (with its own upstream key).

An allowlist, by the path's first segment (``server.passthrough``, default
:data:`gatekeeper.server_settings.PASSTHROUGH`): the endpoints a chatbot uses beside the chat,
none of which generates an answer from the customer's text. Everything else is refused with 403
``endpoint_not_gated``. A list of what to refuse could not keep up: the walkthrough of session 23
got a lenient upstream to generate through ``/v1/v1/chat/completions`` (an upstream base URL
without ``/v1``), ``/v1/deployments/m/chat/completions`` (Azure-style), ``/v1/chat/completion``,
``/v1/fim/completions``, ``/v1/images/generations`` and a dozen more, all with the proxy's key.

Under the gated endpoints' own roots (``chat``, ``responses``) and ``models``, only reading and
deleting stored objects passes (``GET /v1/chat/completions``, ``GET /v1/responses/{id}``,
``DELETE ...``), and ``POST /v1/responses/{id}/cancel``; any other method there is refused,
and another spelling of a gated path (a trailing slash, other case, ``;x``) is a 400
(:func:`canonical_path`). A request there carries no body (the generation request a lenient
upstream would read from ``GET /v1/chat/completions`` with a chat in its body), and no request
passed through says which method it means in its query (``?_method=POST``), nor leaves the
upstream's ``/v1/`` by a dot segment in any spelling an upstream may read as one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

from gatekeeper.interfaces.proxy.errors import ProxyError
from gatekeeper.interfaces.proxy.state import METHOD_OVERRIDES
from gatekeeper.server_settings import NEVER_PASSED

#: The gated endpoints: another spelling of them is refused, never passed through ungated.
GATED = ("chat/completions", "responses")
#: Endpoints whose objects are only read or deleted through the proxy: the gated endpoints'
#: stored completions and responses, and the model list (``POST /v1/models/x:generateContent``
#: is generation on some servers).
_READ_ONLY = ("chat", "responses", "models")
#: Methods that read or delete a stored object (all that passes under :data:`_READ_ONLY`).
_READING = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
#: Query parameters naming the method a framework should take a request for (Rails, Laravel,
#: Symfony: ``_method``) or named as the method-override headers; ``_`` read as ``-``.
_METHOD_PARAMETERS = METHOD_OVERRIDES | {"-method"}


def canonical_path(path: str) -> str:
    """``path`` as a lenient upstream may read it: no empty segments, lower case, no path
    parameters (``;x``), no dots, NUL, white space or invisible format characters (a
    zero-width space) around a segment."""
    segments = (_trimmed(s.split(";", 1)[0]).lower() for s in path.split("/"))
    return "/".join(segment for segment in segments if segment)


def _trimmed(segment: str) -> str:
    start, end = 0, len(segment)
    while start < end and _ignorable(segment[start]):
        start += 1
    while end > start and (_ignorable(segment[end - 1]) or segment[end - 1] == "."):
        end -= 1
    return segment[start:end]


def _ignorable(char: str) -> bool:
    return char.isspace() or char == "\x00" or unicodedata.category(char) == "Cf"


def passthrough_refusal(
    path: str,
    method: str,
    allowed: Sequence[str],
    *,
    raw: bytes = b"",
    query: str = "",
    body: bool = False,
) -> ProxyError | None:
    """The error for passing ``method /v1/<path>`` (decoded, without ``/v1/``; ``raw``: as sent)
    through with ``query`` and a body (``body``), or None when it may pass with ``allowed``
    (``server.passthrough``) first segments."""
    canonical = canonical_path(path)
    if canonical in GATED and path != canonical:
        return _invalid_path(
            f"/v1/{path} is a spelling of /v1/{canonical}: send it to that exact path, "
            "where the gate reads it"
        )
    if not _utf8(raw):  # an overlong %C0%AE is a "." to some servers
        return _invalid_path("the path's percent-escapes are not UTF-8 (e.g. %ff)")
    if _leaves_v1(path):  # never out of the upstream's /v1/ with our key
        return _invalid_path("dot segments are not allowed in the path")
    first = canonical.split("/", 1)[0]
    if first in NEVER_PASSED or first not in allowed:
        return _not_gated(
            f"/v1/{path} is not passed through (server.passthrough lists the /v1/ endpoints "
            "that are)"
            if first not in NEVER_PASSED
            else f"/v1/{path} would reach the LLM without passing the gate"
        )
    if first in _READ_ONLY and not _stored_object_call(canonical, method):
        return _not_gated(f"{method} /v1/{path} is not passed through (stored objects only)")
    return _request_refusal(f"{method} /v1/{path}", first in _READ_ONLY and body, query)


def _request_refusal(call: str, stray_body: bool, query: str) -> ProxyError | None:
    """400 for a body where a stored object is only read, deleted or cancelled (a lenient
    upstream may read a chat in it), or a method named in the query."""
    if stray_body:
        return ProxyError(
            400,
            f"{call} takes no request body: send a chat to POST /v1/chat/completions or "
            "/v1/responses, where the gate reads it",
            code="unexpected_body",
        )
    names = {_query_name(name) for name, _ in parse_qsl(query, keep_blank_values=True)}
    if names & _METHOD_PARAMETERS:
        return ProxyError(
            400,
            f"{call}: a method override in the query string is not passed through; "
            "send the request with the method it means",
            code="method_override",
        )
    return None


def _query_name(name: str) -> str:
    """A (decoded) query parameter's name as a lenient server may read it."""
    return _trimmed(name).lower().replace("_", "-")


def declares_body(headers: Mapping[str, str]) -> bool:
    """Whether a request's headers announce a body that is not empty."""
    length = headers.get("content-length")
    chunked = "transfer-encoding" in headers
    return chunked or (length is not None and length.strip().lstrip("0") != "")


def _utf8(raw: bytes) -> bool:
    """Whether the path ``raw`` (as sent) is UTF-8 once percent-decoded (``%C0%AE``, an
    overlong ``.``, is not; nor ``%ff``)."""
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _leaves_v1(path: str) -> bool:
    """Whether ``path`` has a segment an upstream may read as ``.`` or ``..`` (also after the
    clean-up of :func:`canonical_path`, a second percent-decoding or at a backslash)."""
    segments = path.replace("\\", "/").split("/")
    return any(_dots(s) or _dots(unquote(s)) for s in segments)


def _dots(segment: str) -> bool:
    """Dots, nothing else but invisible characters, before any ``;`` parameter."""
    kept = [c for c in segment.split(";", 1)[0] if not _ignorable(c)]
    return bool(kept) and set(kept) == {"."}


def _invalid_path(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_path")


def _stored_object_call(canonical: str, method: str) -> bool:
    """Reading or deleting a stored completion or response, or cancelling a response."""
    parts = canonical.split("/")
    cancel = parts[0] == "responses" and len(parts) == 3 and parts[2] == "cancel"
    return method.upper() in _READING or (method.upper() == "POST" and cancel)


def _not_gated(what: str) -> ProxyError:
    return ProxyError(
        403,
        f"{what}; use /v1/chat/completions or /v1/responses, where the gate reads the message",
        code="endpoint_not_gated",
        kind="permission_error",
    )


__all__ = ["canonical_path", "declares_body", "passthrough_refusal"]
