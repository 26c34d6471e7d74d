"""Settings validators, and pydantic validation errors said in the terms of the file they came
from."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr, ValidationError

from gatekeeper._variables import PREFIX


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
    """``value`` if it is an http(s) URL with a host (and a valid port), else ValueError.

    Credentials in the URL (``http://user:pass@host``) are refused: the HTTP clients send
    the key in the ``Authorization`` header and fail on every request when the URL holds a
    second one, and a URL is printed in logs and hints. Messages never show a password."""
    if value is None:
        return None
    parts = urlsplit(value)  # raises ValueError on a malformed IPv6 host
    _ = parts.port  # raises ValueError on a bad port
    shown = repr(shown_url(value))
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{shown} is not an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{shown} holds credentials: give the key as api_key (sent as a bearer token) "
            "and the URL without 'user:password@'"
        )
    return value


def shown_url(url: str) -> str:
    """``url`` as a message or a log line shows it (the one place URLs are formatted for them):
    a password and every query-string value as ``***`` (``?api-key=***``: a key passed in the
    query), no fragment."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an unreadable URL>"
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1) if password else parts.netloc
    query = "&".join(_masked(piece) for piece in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _masked(parameter: str) -> str:
    """A query parameter with its value as ``***`` (a bare one, which may be a key, all of it)."""
    name, equals, _ = parameter.partition("=")
    return f"{name}=***" if equals else "***" if parameter else ""


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


def describe_invalid(
    exc: ValidationError,
    root: type[BaseModel],
    path: Path | None,
    overrides: Mapping[str, Any],
    dotenv: Mapping[str, Any],
) -> str:
    """Every problem of ``exc`` (validating the settings class ``root``), each with the field,
    where its value came from (an option, the environment, ``.env``, the file ``path``) and a
    plain message."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "<root>"
        message = plain_type_error(err) or str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = _unknown_key(loc, root)
        source = _source(loc, path, overrides, dotenv)
        problems.append(f"  {field} ({source}): {message}")
    return "invalid settings:\n" + "\n".join(problems)


def _unknown_key(loc: list[str], root: type[BaseModel]) -> str:
    section: Any = root
    for part in loc[:-1]:
        field = section.model_fields.get(part) if hasattr(section, "model_fields") else None
        section = field.annotation if field is not None else None
    allowed = sorted(getattr(section, "model_fields", {}))
    hint = difflib.get_close_matches(loc[-1], allowed, n=1)
    return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _source(
    loc: list[str], path: Path | None, overrides: Mapping[str, Any], dotenv: Mapping[str, Any]
) -> str:
    """Where the value at ``loc`` came from, highest priority first."""
    if loc and loc[0] in overrides:
        return "given as an option"
    for depth in range(len(loc), 0, -1):
        name = PREFIX + "__".join(loc[:depth]).upper()
        if any(k.upper() == name for k in os.environ):
            return f"environment variable {name}"
        if any(k.upper() == name for k in dotenv):
            return f".env variable {name}"
    return f"settings file {path}" if path is not None else "defaults"
