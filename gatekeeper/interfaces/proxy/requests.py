"""Checks on an incoming request: the client's key, the body's size, the chat request's shape."""

from __future__ import annotations

import hmac
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request
from pydantic import SecretStr

from gatekeeper._rows import DuplicateKeyError, unique_pairs
from gatekeeper.conversation import (
    TEXT_PARTS,
    attachment_types,
    chat_shaped,
    part_text,
    role_error,
    text_part,
)
from gatekeeper.errors import InputError
from gatekeeper.interfaces.proxy.errors import Json, ProxyError
from gatekeeper.interfaces.proxy.state import Proxy
from gatekeeper.interfaces.proxy.tool_turns import tool_outputs

#: Bodies larger than this are parsed in a worker thread: an 11 MB chat of 300,000 messages
#: took the event loop for about a second (every other request, /healthz too, waited).
THREADED_PARSE_BYTES = 1_000_000

_Parsed = TypeVar("_Parsed")


def authorize(proxy: Proxy, request: Request) -> None:
    """401 unless the request carries one of ``server.api_keys`` (when any are configured)."""
    refusal = key_refusal(proxy.settings.server.api_keys, request.headers.get("authorization"))
    if refusal is not None:
        raise refusal


def key_refusal(keys: Sequence[SecretStr], authorization: str | None) -> ProxyError | None:
    """The 401 for an ``Authorization`` header that carries none of ``keys`` (None: let in;
    no keys configured: everyone is let in)."""
    if not keys:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return ProxyError(
            401,
            "missing API key: send it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    given = token.encode()
    if not any(hmac.compare_digest(given, k.get_secret_value().encode()) for k in keys):
        return ProxyError(
            401, "incorrect API key", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
        )
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 415 for a compressed one (:func:`encoding_refusal`), 413 as soon as
    it is longer than ``limit`` bytes."""
    refusal = encoding_refusal(request.headers.get("content-encoding"))
    if refusal is not None:
        raise refusal
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


def encoding_refusal(encoding: str | None) -> ProxyError | None:
    """The 415 for a request body sent compressed (``Content-Encoding`` other than
    ``identity``): the gate reads, and forwards, the body as sent, and decompressing a small
    body into a huge one is a way to run the proxy out of memory."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return None
    return ProxyError(
        415,
        "compressed request bodies are not accepted (Content-Encoding): send the JSON body "
        "uncompressed",
        code="unsupported_content_encoding",
    )


async def parse_request(parse: Callable[[bytes], _Parsed], body: bytes) -> _Parsed:
    """``parse(body)``: on the event loop for a small body (most: no thread hand-off), in a
    worker thread for one over :data:`THREADED_PARSE_BYTES`."""
    if len(body) <= THREADED_PARSE_BYTES:
        return parse(body)
    return await anyio.to_thread.run_sync(parse, body)


def parse_chat_request(body: bytes) -> Json:
    """The JSON of a chat request, checked for the shape the gate needs.

    Strict, because the raw body is what goes upstream: it must be exactly what was judged.
    UTF-8 only (RFC 8259), no lone surrogates in any string (escaped ``\\ud800`` included), no
    duplicate keys at any depth, no ``NaN``/``Infinity`` and no number too large to convert:
    each is a 400, never a request the gate reads one way and the upstream another.
    """
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ProxyError(422, "the request body must be a JSON object", code="invalid_type")
    if "messages" not in payload:
        raise ProxyError(
            422, "missing required parameter: 'messages'", code="missing_required_parameter"
        )
    check_messages(payload["messages"])
    check_fields(payload)
    n = payload.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise ProxyError(422, "'n' must be an integer from 1 to 128", code="invalid_value")
    check_format(payload.get("response_format"), "response_format")
    return payload


def check_fields(payload: Json) -> None:
    """422 for a ``stream`` that is no boolean or a ``model`` that is no string (null: as if
    not given): the client's type error, refused before the gate decides (a local answer
    echoed ``"model": 5`` with a 200)."""
    if "stream" in payload and not isinstance(payload["stream"], bool | None):
        raise ProxyError(422, "'stream' must be a boolean", code="invalid_type")
    if "model" in payload and not isinstance(payload["model"], str | None):
        raise ProxyError(422, "'model' must be a string", code="invalid_type")


def check_format(response_format: Any, where: str) -> None:
    """422 for an output format (``response_format``, ``text.format``) that is not an object,
    or whose ``type`` is not a string: checked before the gate decides, so that a request the
    proxy cannot answer is neither decided nor counted."""
    if response_format is None:
        return
    if not isinstance(response_format, dict):
        raise ProxyError(422, f"'{where}' must be an object", code="invalid_type")
    if "type" in response_format and not isinstance(response_format["type"], str):
        raise ProxyError(422, f"'{where}.type' must be a string", code="invalid_type")


class _Refused(ValueError):
    """A JSON construct the proxy refuses (raised from inside ``json.loads``)."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:20]}... is out of range")
    return value


def _unique_in_any_case(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys differ in more than case: Go's ``encoding/json`` (Ollama's API,
    among others) matches keys case-insensitively and keeps the last, so ``"Messages"`` beside
    ``"messages"`` would be the conversation it answers while the gate judged the other."""
    obj = unique_pairs(pairs)
    folded: dict[str, str] = {}
    for key in obj:
        other = folded.setdefault(key.casefold(), key)
        if other != key:
            raise DuplicateKeyError(
                f"the keys {other[:50]!r} and {key[:50]!r} differ only in case in one object"
            )
    return obj


def parse_json(body: bytes) -> Any:
    """Strict JSON from request bytes (see :func:`parse_chat_request`); 400 on anything else."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(
            text,
            object_pairs_hook=_unique_in_any_case,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError as exc:
        raise ProxyError(
            400, f"the request body is not valid UTF-8 JSON: {exc}", code="invalid_json"
        ) from exc
    except (_Refused, DuplicateKeyError) as exc:
        raise ProxyError(400, f"the request body is refused: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise ProxyError(400, "the request body is nested too deeply", code="invalid_json") from exc
    except ValueError as exc:  # JSONDecodeError, and integers over the int conversion limit
        problem = (
            f"a number has more than {sys.get_int_max_str_digits()} digits"
            if "integer string conversion" in str(exc)
            else _short(exc)
        )
        raise ProxyError(
            400, f"the request body is not valid JSON: {problem}", code="invalid_json"
        ) from exc
    if "\\u" in text:  # only an escape can make a lone surrogate out of valid UTF-8
        _refuse_lone_surrogates(payload)
    return payload


def _short(exc: Exception) -> str:
    message = str(exc)
    return message if len(message) <= 200 else message[:200] + "..."


_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _refuse_lone_surrogates(payload: Any) -> None:
    """400 if any string (key or value) holds a lone surrogate: it is not Unicode text, so it
    can be neither judged nor echoed (nor encoded to UTF-8 on the way back)."""
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise ProxyError(
                400,
                "the request body holds a lone UTF-16 surrogate escape (e.g. \\ud800): "
                "strings must be valid Unicode",
                code="invalid_unicode",
            )


def check_messages(messages: Any) -> None:
    """422 unless ``messages`` is a non-empty list of ``{"role": str, "content": ...}``
    (the gate's own chat validator, :func:`gatekeeper.conversation.chat_shaped`) whose roles
    are chat roles, as OpenAI requires: an upstream whose chat template prints any role (``User``,
    ``user ``) would otherwise read a turn the gate took for no customer's."""
    try:
        shaped = chat_shaped(messages)
    except InputError as exc:
        raise ProxyError(422, str(exc), code="invalid_type") from exc
    why = role_error(shaped)
    if why:
        raise ProxyError(422, why, code="invalid_value")


def parse_responses_request(body: bytes) -> tuple[Json, list[Json]]:
    """The JSON of a Responses API request (read as strictly as a chat request, see
    :func:`parse_chat_request`), and the chat messages the gate judges.

    ``input`` is a string (one user message) or a list of input items: messages
    ``{"role", "content"}`` (``"type": "message"`` optional) whose content is a string or a list
    of parts (``input_text``/``output_text`` give text; images and files none). Other items
    (tool calls and outputs, reasoning, references) are no customer turn and are skipped.
    ``instructions`` becomes a system message: a system prompt, never a user turn. An input
    with no customer message is a 400, unless it carries tool results
    (:mod:`~gatekeeper.interfaces.proxy.tool_turns`): then the messages may hold no user turn,
    or none at all.
    """
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ProxyError(422, "the request body must be a JSON object", code="invalid_type")
    if "input" not in payload:
        raise ProxyError(
            422, "missing required parameter: 'input'", code="missing_required_parameter"
        )
    check_fields(payload)
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ProxyError(422, "'instructions' must be a string", code="invalid_type")
    text = payload.get("text")
    if text is not None and not isinstance(text, dict):
        raise ProxyError(422, "'text' must be an object", code="invalid_type")
    check_format((text or {}).get("format"), "text.format")
    messages: list[Json] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages.extend(_input_messages(payload["input"]))
    if not any(m["role"] == "user" for m in messages) and not tool_outputs(payload["input"]):
        # nothing to judge: refused like a chat without a user turn
        raise ProxyError(400, "the input has no user message to judge", code="empty_message")
    if messages:
        check_messages(messages)
    return payload, messages


def _input_messages(items: Any) -> list[Json]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise ProxyError(
            422, "'input' must be a string or a list of input items", code="invalid_type"
        )
    messages = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProxyError(422, f"input[{index}] must be an object", code="invalid_type")
        kind = item.get("type", "message")
        _check_message_item(item, kind, index)
        if "role" not in item or kind != "message":
            continue  # function_call, function_call_output, reasoning, item_reference, ...
        role = item["role"]
        if not isinstance(role, str):
            raise ProxyError(422, f"input[{index}].role must be a string", code="invalid_type")
        messages.append({"role": role, "content": _content(item.get("content"), index)})
    return messages


def _check_message_item(item: Json, kind: Any, index: int) -> None:
    """422 for an item that reads as a message but is not one as OpenAI spells it (type
    ``"Message"``, a message without a role, a bare ``input_text``): an upstream that reads it
    as the customer's would answer text the gate skipped."""
    looks_like = isinstance(kind, str) and (kind in TEXT_PARTS or kind.strip().lower() == "message")
    if looks_like and (kind != "message" or "role" not in item):
        raise ProxyError(
            422,
            f"input[{index}]: a message item is {{'type': 'message', 'role': ..., "
            f"'content': ...}} (type {kind!r})",
            code="invalid_value",
        )


def _content(content: Any, index: int) -> str | list[Json]:
    """An input item's content as the gate reads chat content: its text, or, when it has
    parts without text (images, files, audio), chat parts that keep them in view beside the
    text (a turn of attachments only follows the conversation, and one with text gets no fixed
    reply, see :mod:`gatekeeper.conversation`)."""
    text = _content_text(content, index)
    others = [{"type": kind} for kind in attachment_types(content)]
    if others:
        return [{"type": "text", "text": text}, *others]
    return text


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ProxyError(
            422,
            f"input[{index}].content must be a string or a list of content parts",
            code="invalid_type",
        )
    texts = []
    for part in content:
        if not isinstance(part, dict):
            raise ProxyError(
                422, f"input[{index}].content parts must be objects", code="invalid_type"
            )
        kind = part.get("type")
        text_typed = (isinstance(kind, str) and kind in TEXT_PARTS) or "text" in part
        if text_typed and not isinstance(part.get("text"), str):
            raise ProxyError(
                422,
                f"input[{index}].content: a text part needs a string 'text'",
                code="invalid_type",
            )
        # text under an unexpected type (a refusal, thinking) is judged too, never taken for
        # an attachment
        if text_part(part):
            texts.append(part_text(part))
    return "\n".join(texts)
