"""OpenAI-style error answers of the proxy: :class:`ProxyError` and its JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

#: Hop-by-hop headers (RFC 9110 §7.6.1 and the usual extras): never passed on in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

Json = dict[str, Any]


class ProxyError(Exception):
    """An answer with an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.kind, self.headers)


def error_response(
    status: int,
    message: str,
    code: str,
    kind: str = "invalid_request_error",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """``{"error": {"message", "type", "code"}}`` with ``status``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def upstream_failure(
    status: int, message: str, code: str, headers: Mapping[str, str]
) -> ProxyError:
    return ProxyError(status, message, code=code, kind="upstream_error", headers=headers)


def internal_error_response() -> JSONResponse:
    return error_response(
        500, "internal error in the gatekeeper proxy (logged)", "internal_error", "server_error"
    )
