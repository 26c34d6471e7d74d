"""What a wrapped runnable declares it takes and returns, read from its ``InputType`` and
``OutputType``: whether it outputs text, whether its outputs include messages, whether it could
take a dict.

Declared types are unions, ``Annotated`` wrappers, generics and sometimes strings (a function
annotated ``-> str`` under ``from __future__ import annotations``); each question is answered on
the plain types they stand for, and a runnable that cannot say is taken to accept anything.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable

#: Values that are never a dict: what a chat model takes, and other plain values.
_NOT_A_MAPPING = (str, bytes, int, float, PromptValue, BaseMessage, list, tuple, Sequence)


def declared_input(runnable: Runnable[Any, Any]) -> Any:
    """``runnable.InputType``, or ``Any`` when it cannot say."""
    try:
        return runnable.InputType
    except TypeError:  # a generic runnable without type arguments
        return Any


def declared_output(runnable: Runnable[Any, Any]) -> Any:
    """``runnable.OutputType``, or ``Any`` when it cannot say (it raises, or it is ``None``,
    as a LangGraph graph's is: no type, not a runnable that returns ``None``)."""
    try:
        declared = runnable.OutputType
    except TypeError:
        return Any
    return Any if declared is None else declared


def type_members(tp: Any) -> list[Any]:
    """The plain types a (possibly ``Annotated``, possibly union) type stands for."""
    if tp == "str":
        return [str]
    origin = get_origin(tp)
    if origin is Annotated:
        return type_members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(tp) for m in type_members(arg)]
    return [tp]


def is_text(tp: Any) -> bool:
    """Whether every value of ``tp`` is a ``str``."""
    members = type_members(tp)
    return bool(members) and all(isinstance(m, type) and issubclass(m, str) for m in members)


def holds_message(tp: Any) -> bool:
    """Whether some values of ``tp`` are chat messages."""
    return any(isinstance(m, type) and issubclass(m, BaseMessage) for m in type_members(tp))


def may_take_mapping(tp: Any) -> bool:
    """Whether a dict could be a value of ``tp`` (yes unless every member is surely no dict)."""
    return not all(_never_a_mapping(m) for m in type_members(tp))


def _never_a_mapping(tp: Any) -> bool:
    plain = get_origin(tp) or tp
    return isinstance(plain, type) and issubclass(plain, _NOT_A_MAPPING)
