"""Settings validators, and pydantic validation errors said in the terms of the file they came
from."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr


def plain_type_error(err: Any) -> str | None:
    """A pydantic type error (one of ``ValidationError.errors()``) said in the file's terms
    ("must be a list ..., got one text"), not the model's ("Input should be a valid tuple",
    "instance of OffTopic"); None for other errors."""
    got = err.get("input")
    kind = "one text" if isinstance(got, str) else "nothing" if got is None else type(got).__name__
    if err["type"] in {"tuple_type", "list_type", "set_type"}:
        return f"must be a list (one '- item' line each), got {kind}"
    if err["type"] in {"model_type", "dict_type", "model_attributes_type"}:
        return f"must be a mapping ('key: value' lines), got {kind}"
    return None


def http_url(value: str | None) -> str | None:
    """``value`` if it is an http(s) URL with a host (and a valid port), else ValueError."""
    if value is None:
        return None
    parts = urlsplit(value)  # raises ValueError on a malformed IPv6 host
    _ = parts.port  # raises ValueError on a bad port
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    return value


def sendable_key(key: SecretStr | None) -> SecretStr | None:
    """``key`` if an HTTP client can send it in an ``Authorization`` header (printable ASCII, no
    spaces), else ValueError (the message never shows the key)."""
    value = key.get_secret_value() if key is not None else ""
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(
            "the key has a character other than printable ASCII (or a space): it cannot be "
            "sent in an HTTP Authorization header"
        )
    return key
