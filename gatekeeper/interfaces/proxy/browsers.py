"""What a web browser may do with the proxy: by default nothing.

The proxy serves API clients (the ``openai`` SDK, curl, a chatbot's backend), which send no
``Origin`` header. A page in a browser can still send requests to it: a form or a
``text/plain`` fetch to ``http://127.0.0.1:8080`` needs no CORS preflight (cross-site request
forgery: the page spends the proxy's upstream key, blind), and a page whose own name is made to
resolve to 127.0.0.1 (DNS rebinding) can even read the answers. :class:`BrowserGuard` refuses
both, before the key check:

* a request carrying an ``Origin`` header is refused (403 ``origin_not_allowed``) unless that
  origin is listed in ``server.allowed_origins``; a listed origin's requests are served with
  CORS headers, and its preflights (``OPTIONS``) answered here (204);
* when the proxy listens on a loopback address (the default, ``127.0.0.1``), or when
  ``server.allowed_hosts`` lists any names, a ``Host`` header naming another host than
  ``localhost``, ``127.x.x.x``, ``[::1]`` or those names is refused (403 ``host_not_allowed``):
  a rebound name is not the proxy's;
* ``OPTIONS`` is never passed upstream (without an allowed origin: 405), and an upstream's
  ``access-control-*`` headers are dropped from its answers
  (:func:`~gatekeeper.interfaces.proxy.answers.passthrough_headers`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from gatekeeper.interfaces.proxy.errors import error_response
from gatekeeper.interfaces.proxy.middleware import (
    AsgiMessage,
    Receive,
    Scope,
    Send,
    with_headers,
)

#: The methods a listed origin's preflight is told it may use.
_METHODS = "GET, HEAD, POST, DELETE"
#: Seconds a browser may keep a preflight's answer.
_PREFLIGHT_SECONDS = "600"


def loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on, or a Host header's name) is this machine only."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def host_name(header: str) -> str:
    """A Host header's name, without its port (``[::1]:8080`` -> ``[::1]``), lower case."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    name, _, port = value.rpartition(":")
    return name if name and port.isdigit() else value


class BrowserGuard:
    """ASGI middleware: refuses requests from browser origins and host names not allowed (see
    the module), answers the allowed origins' preflights, and adds CORS headers for them."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        origins: Iterable[str],
        hosts: Iterable[str],
        check_host: bool,
    ) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.hosts = frozenset(host.strip().lower() for host in hosts)  # as Host is read
        self.check_host = check_host or bool(self.hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        origin = headers.get("origin")
        if scope.get("method") == "OPTIONS":
            await self._options(origin, headers)(scope, receive, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                message = with_headers(message, _cors(origin))
            await send(message)

        await self.app(scope, receive, with_cors)

    def _refusal(self, headers: Headers) -> Any:
        """The 403 for a Host or an Origin not allowed, or None."""
        host = headers.get("host")
        if self.check_host and host is not None and not self._host_allowed(host):
            return _forbidden(
                f"the Host {host[:100]!r} is not this proxy's: list the name in "
                "server.allowed_hosts (GATEKEEPER_SERVER__ALLOWED_HOSTS) to serve it",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower().rstrip("/") not in self.origins:
            return _forbidden(
                f"requests from the browser origin {origin[:100]!r} are refused: list it in "
                "server.allowed_origins (GATEKEEPER_SERVER__ALLOWED_ORIGINS) to serve it",
                "origin_not_allowed",
            )
        return None

    def _host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return loopback(name) or name in self.hosts

    def _options(self, origin: str | None, headers: Headers) -> Any:
        """The answer to OPTIONS: an allowed origin's preflight (204), else 405."""
        if origin is None:
            return error_response(
                405,
                "OPTIONS is answered for the browser origins in server.allowed_origins only",
                "method_not_allowed",
                headers={"allow": _METHODS},
            )
        allowed = {
            **_cors(origin),
            "access-control-allow-methods": _METHODS,
            "access-control-max-age": _PREFLIGHT_SECONDS,
        }
        asked = headers.get("access-control-request-headers")
        if asked:
            allowed["access-control-allow-headers"] = asked
        return Response(status_code=204, headers=allowed)


def _cors(origin: str) -> dict[str, str]:
    return {"access-control-allow-origin": origin, "vary": "Origin"}


def _forbidden(message: str, code: str) -> Any:
    return error_response(403, message, code, "permission_error")


__all__ = ["BrowserGuard", "host_name", "loopback"]
