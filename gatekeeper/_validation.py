"""Pydantic validation errors said in the terms of the file they came from."""

from __future__ import annotations

from typing import Any


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
