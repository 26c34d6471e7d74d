"""What a :class:`~gatekeeper.interfaces.langchain.GatekeeperRunnable` accepts, and the message
the gate judges for it.

What it accepts, and what the gate judges:

* a string: that text;
* a list of messages (``BaseMessage`` objects, OpenAI-style ``{"role", "content"}`` dicts, or
  ``("human", "...")`` tuples) or a single message: the conversation, mapped to OpenAI roles
  (``HumanMessage`` → ``user``, ``AIMessage`` → ``assistant``, ``SystemMessage`` → ``system``); the
  gate judges the last user message in the light of the user turns before it
  (:mod:`gatekeeper.conversation`);
* a ``PromptValue`` (what a prompt template produces): its messages, as above;
* a dict: the value under ``input_key`` (itself any of the above); with ``history_key`` set, the
  messages under that key are the earlier turns of the conversation.

What an admitted input is forwarded as (:func:`forwarded_input`), the same rule whether the
message is admitted or refused, so an input that works for one works for the other:

* a single message goes on as a one-message list (what chat models take);
* a dict goes on as it is, to a runnable that can take one (a chain starting with a prompt, a
  function); to one that cannot (a chat model, whose declared input type has no dict) it is an
  :class:`~gatekeeper.errors.InputError` before the gate judges it: put a prompt in front of
  the model, or pass the messages themselves;
* anything else goes on unchanged;
* but never with a turn the gate refused: a chat (messages, a chat prompt value, or the lists
  under ``input_key`` and ``history_key``) goes on without each of the gate's refusals and the
  customer's messages right before it (:func:`without_refused_input`), so the chain is never
  handed the request the gate turned away.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.runnables import Runnable
from pydantic import Field

from gatekeeper.conversation import chat_roles_hint
from gatekeeper.errors import InputError
from gatekeeper.interfaces.langchain_types import declared_input, may_take_mapping
from gatekeeper.refusals import refused_positions
from gatekeeper.types import Message

#: What :class:`GatekeeperRunnable` accepts (see the module docstring).
GateInput = str | PromptValue | BaseMessage | Sequence[Any] | Mapping[str, Any]

#: :data:`GateInput` as its input schema validates it (LangServe-style hosts): concrete classes
#: only (the abstract ``PromptValue`` cannot be built), tried in order, so a dict stays a dict as
#: it does at run time, and a prompt value or message object is kept as it is.
GateInputSchema = Annotated[
    dict[str, Any] | str | StringPromptValue | ChatPromptValue | BaseMessage | list[Any],
    Field(union_mode="left_to_right"),
]


_ROLES: dict[str, str] = {"human": "user", "ai": "assistant"}
_COERCION_ERRORS = (ValueError, TypeError, NotImplementedError, KeyError)


def gate_message(value: GateInput, input_key: str, history_key: str | None) -> Message:
    """What the gate judges for ``value``: a text, or a conversation in OpenAI format."""
    if isinstance(value, Mapping):
        if input_key not in value:
            raise InputError(
                f"the input dict has no key {input_key!r} (input_key); "
                f"its keys: {sorted(map(str, value))}"
            )
        message = _message(value[input_key], input_key)
        if history_key is None or value.get(history_key) is None:
            return message
        history = _message(value[history_key], history_key)
        if isinstance(history, str):
            history = [{"role": "user", "content": history}]
        if isinstance(message, str):
            message = [{"role": "user", "content": message}]
        return [*history, *message]
    return _message(value, "input")


def forwarded_input(value: GateInput, runnable: Runnable[Any, Any]) -> Any:
    """What ``runnable`` gets for ``value`` if the gate admits it (see the module docstring)."""
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Mapping) and not may_take_mapping(declared_input(runnable)):
        name = runnable.get_name()
        raise InputError(
            f"{name} does not take a dict (a chat model takes a string, messages or a "
            f"PromptValue): put a prompt in front of it, GatekeeperRunnable(runnable=prompt | "
            f"model, input_key=<the key of the customer's message>), or pass the messages "
            f"instead of a dict"
        )
    return value


def without_refused_input(
    value: Any, refusals: Collection[str], input_key: str, history_key: str | None
) -> Any:
    """``value`` without the turns the gate refused (each refusal, one of ``refusals``, and the
    customer's messages right before it: :func:`~gatekeeper.refusals.refused_positions`),
    in a list of messages, a chat prompt value, or a dict's lists under ``input_key`` and
    ``history_key`` (the earlier turns, which the input follows); anything else, or a chat
    without a refusal, as it is."""
    if isinstance(value, ChatPromptValue):
        kept = _kept(value.messages, refusals)
        return value if kept is None else ChatPromptValue(messages=kept)
    if isinstance(value, Mapping):
        lists = {input_key: _kept(value.get(input_key), refusals)}
        if history_key is not None:
            lists[history_key] = _kept(value.get(history_key), refusals, followed=True)
        changed = {key: items for key, items in lists.items() if items is not None}
        return {**value, **changed} if changed else value
    items = _kept(value, refusals)
    return value if items is None else items


def _kept(items: Any, refusals: Collection[str], *, followed: bool = False) -> list[Any] | None:
    """``items`` (a list of messages) without its refused turns; None when it is no list of
    messages or has none. ``followed``: the customer's turn comes after the list (a history)."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        return None
    try:
        messages = convert_to_messages(items)
    except _COERCION_ERRORS:
        return None  # judging it raises the InputError that says why
    chat = [_openai_message(m, calls=True) for m in messages]
    after = [{"role": "user", "content": ""}] if followed else []
    refused = refused_positions([*chat, *after], refusals)
    return [item for i, item in enumerate(items) if i not in refused] if refused else None


def _message(value: Any, where: str) -> Message:
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return [_openai_message(m) for m in value.to_messages()]
    if isinstance(value, BaseMessage):
        return [_openai_message(value)]
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        try:
            messages: list[BaseMessage] | None = convert_to_messages(value)
        except _COERCION_ERRORS:
            messages = None
        if messages is None:
            # Raised outside the handler: LangChain's error, quoting the customer's text, must
            # not travel along as the context. Say what is wrong by position and type instead.
            raise InputError(f"{where}{_bad(value)}")
        return [_openai_message(m) for m in messages]
    raise InputError(
        f"{where}: expected a string, a list of messages, a PromptValue or a dict, "
        f"not {type(value).__name__}"
    )


def _bad(messages: Sequence[Any]) -> str:
    """Which message LangChain cannot read and why, by position and type, never by content."""
    for i, item in enumerate(messages):
        try:
            convert_to_messages([item])
        except _COERCION_ERRORS:
            return f"[{i}] {_why(item)}"
    return ": not a list of chat messages"


def _why(item: Any) -> str:
    if isinstance(item, Mapping):
        role = item.get("role", item.get("type"))
        if not isinstance(role, str):
            return "is an object without a string 'role' (or 'type')"
        if "content" not in item:
            return "is an object without 'content'"
        if role == "tool" and "tool_call_id" not in item:
            return "is a tool message without a 'tool_call_id'"
        return f"is an object whose role is not a chat role ({chat_roles_hint()})"
    if isinstance(item, tuple | list):
        roles = chat_roles_hint()
        return f"is a sequence that is not a (role, content) pair with a chat role ({roles})"
    return f"is of type {type(item).__name__}, not a chat message"


def _openai_message(message: BaseMessage, *, calls: bool = False) -> dict[str, Any]:
    """``message`` as an OpenAI chat message: role and content (and, with ``calls``, an AI
    message's ``tool_calls``)."""
    if isinstance(message, HumanMessage):
        role = "user"
    elif isinstance(message, AIMessage):
        role = "assistant"
    elif isinstance(message, SystemMessage):
        role = "system"
    elif isinstance(message, ToolMessage):
        role = "tool"
    elif isinstance(message, ChatMessage):
        role = _ROLES.get(message.role, message.role)
    else:
        role = _ROLES.get(message.type, message.type)
    out: dict[str, Any] = {"role": role, "content": message.content}
    if calls and isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = message.tool_calls
    return out
