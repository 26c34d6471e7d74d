"""Checks on an incoming request: the client's key, the body's size, the chat request's shape."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Request

from gatekeeper.interfaces.proxy.errors import Json, ProxyError
from gatekeeper.interfaces.proxy.state import Proxy


def authorize(proxy: Proxy, request: Request) -> None:
    """401 unless the request carries one of ``server.api_keys`` (when any are configured)."""
    keys = proxy.settings.server.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ProxyError(
            401,
            "missing API key: send it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    given = token.encode()
    if not any(hmac.compare_digest(given, k.get_secret_value().encode()) for k in keys):
        raise ProxyError(
            401, "incorrect API key", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is longer than ``limit`` bytes."""
    too_large = ProxyError(
        413,
        f"the request body is larger than {limit} bytes (server.max_body_bytes)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_chat_request(body: bytes) -> Json:
    """The JSON of a chat request, checked for the shape the gate needs."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProxyError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(payload, dict):
        raise ProxyError(422, "the request body must be a JSON object", code="invalid_type")
    if "messages" not in payload:
        raise ProxyError(
            422, "missing required parameter: 'messages'", code="missing_required_parameter"
        )
    check_messages(payload["messages"])
    if "stream" in payload and not isinstance(payload["stream"], bool | None):
        raise ProxyError(422, "'stream' must be a boolean", code="invalid_type")
    n = payload.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise ProxyError(422, "'n' must be an integer from 1 to 128", code="invalid_value")
    return payload


def check_messages(messages: Any) -> None:
    """422 unless ``messages`` is a non-empty list of ``{"role": str, "content": ...}``."""
    if not isinstance(messages, list) or not messages:
        raise ProxyError(
            422, "'messages' must be a non-empty list of chat messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProxyError(
                422, f"messages[{i}] must be an object with a string 'role'", code="invalid_type"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ProxyError(
                422,
                f"messages[{i}].content must be a string or a list of content parts",
                code="invalid_type",
            )
