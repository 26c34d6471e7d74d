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
* a dict: the value under ``input_key`` (itself any of the above, or one role/content dict,
  a single message as a message object is); with ``history_key`` set, the messages under that
  key are the earlier turns of the conversation. Without it, the gate
  judges the turn alone; a dict holding chat messages under another key is most likely a
  history the gate should read (:func:`unread_history_key`: the runnable warns once).

What an admitted input is forwarded as (:func:`forwarded_input`), the same rule whether the
message is admitted or refused, so an input that works for one works for the other:

* a single message goes on as a one-message list (what chat models take);
* a dict goes on as it is, to a runnable that can take one (a chain starting with a prompt, a
  function); to one that cannot (a chat model, whose declared input type has no dict) it is an
  :class:`~gatekeeper.errors.InputError` before the gate judges it: put a prompt in front of
  the model, or pass the messages themselves;
* anything else goes on unchanged;
* but never with a turn the gate refused: a chat (messages, a chat prompt value, or those
  under ``history_key`` and ``input_key``, read as one chat however it is split between them)
  goes on without each of the gate's refusals and the customer's messages right before it
  (:func:`without_refused_input`), so the chain is never handed the request the gate turned
  away.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
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
#: What the runnable reads for a message, under a dict's key and given itself.
_EXPECTED_UNDER_A_KEY = (
    "a string, a message (or role/content dict), a list of messages or a PromptValue"
)
_EXPECTED = "a string, a message, a list of messages, a PromptValue or a dict"


def added(total: Any, chunk: Any) -> Any:
    """Input chunks added up the way LangChain does: ``+`` when they support it, else the last."""
    if total is None:
        return chunk
    try:
        return total + chunk
    except TypeError:
        return chunk


def collected(chunks: Iterator[Any]) -> Any:
    """A streamed input, its chunks added up (:func:`added`)."""
    total: Any = None
    for chunk in chunks:
        total = added(total, chunk)
    return total


def gate_message(value: GateInput, input_key: str, history_key: str | None) -> Message:
    """What the gate judges for ``value``: a text, or a conversation in OpenAI format."""
    if isinstance(value, Mapping):
        if input_key not in value:
            raise InputError(
                f"the input dict has no key {input_key!r} (input_key); "
                f"its keys: {sorted(map(str, value))}"
            )
        message = _message(value[input_key], input_key, in_dict=True)
        if history_key is None or value.get(history_key) is None:
            return message
        history = _message(value[history_key], history_key, in_dict=True)
        if isinstance(history, str):
            history = [{"role": "user", "content": history}]
        if isinstance(message, str):
            message = [{"role": "user", "content": message}]
        return [*history, *message]
    return _message(value, "input")


def unread_history_key(value: Any, input_key: str, history_key: str | None) -> str | None:
    """With no ``history_key``, the first key of a dict input other than ``input_key`` whose
    value is a non-empty list of chat messages (message objects or role/content dicts): most
    likely the conversation's earlier turns (``MessagesPlaceholder("history")``), which the
    gate does not read then; else None."""
    if history_key is not None or not isinstance(value, Mapping):
        return None
    return next((str(k) for k, v in value.items() if k != input_key and _is_chat(v)), None)


def _is_chat(value: Any) -> bool:
    if not isinstance(value, list | tuple) or not value:
        return False
    return all(
        isinstance(m, BaseMessage) or (isinstance(m, Mapping) and "role" in m and "content" in m)
        for m in value
    )


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
    in a list of messages, a chat prompt value, or a dict's values under ``history_key`` and
    ``input_key`` (one chat split in two: taken out as from the same chat given whole);
    anything else, or a chat without a refusal, as it is."""
    if not isinstance(value, Mapping):
        kept = _without_refused_parts([value], refusals)
        return value if kept is None else kept[0]
    keys = [k for k in dict.fromkeys((history_key, input_key)) if k is not None]
    keys = [key for key in keys if value.get(key) is not None]
    kept = _without_refused_parts([value[key] for key in keys], refusals)
    return value if kept is None else {**value, **dict(zip(keys, kept, strict=True))}


def _without_refused_parts(parts: Sequence[Any], refusals: Collection[str]) -> list[Any] | None:
    """``parts`` (the pieces of one chat, in order: a history and the input) each without the
    refused turns of the chat they make up; None when it has none or a part is no chat."""
    chats = [_part_chat(part) for part in parts]
    if any(chat is None for chat in chats):
        return None  # judging it raises the InputError that says why
    readable = [chat for chat in chats if chat is not None]
    refused = refused_positions([m for chat in readable for m in chat], refusals)
    if not refused:
        return None
    kept: list[Any] = []
    start = 0
    for part, chat in zip(parts, readable, strict=True):
        here = {i - start for i in refused if start <= i < start + len(chat)}
        kept.append(_part_without(part, here) if here else part)
        start += len(chat)
    return kept


def _part_chat(part: Any) -> list[dict[str, Any]] | None:
    """A piece of a chat (a text, a prompt value, a message or a list of messages) as the
    OpenAI-format messages it stands for, one per item of a list; None when it is none."""
    if isinstance(part, str):
        return [{"role": "user", "content": part}]
    if isinstance(part, BaseMessage):
        return [_openai_message(part, calls=True)]
    if isinstance(part, PromptValue):
        part = part.messages if isinstance(part, ChatPromptValue) else part.to_messages()
    if isinstance(part, Mapping):  # one role/content dict under a key: one message
        part = [part]
    if not isinstance(part, Sequence) or isinstance(part, bytes):
        return None
    try:
        return [_openai_message(m, calls=True) for m in convert_to_messages(part)]
    except _COERCION_ERRORS:
        return None


def _part_without(part: Any, refused: set[int]) -> Any:
    """``part`` (read by :func:`_part_chat`) without its items at the ``refused`` positions:
    a list or chat prompt value without them, a text or a single message gone ("" or [])."""
    if isinstance(part, ChatPromptValue):
        return ChatPromptValue(messages=_part_without(part.messages, refused))
    if isinstance(part, StringPromptValue):
        return StringPromptValue(text="")
    if isinstance(part, Sequence) and not isinstance(part, str):
        return [item for i, item in enumerate(part) if i not in refused]
    return "" if isinstance(part, str) else []


def _message(value: Any, where: str, *, in_dict: bool = False) -> Message:
    """What the gate judges for ``value``, given itself or (``in_dict``) under the key ``where``
    of an input dict, where one role/content dict is one message (and no input dict)."""
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
    if in_dict and isinstance(value, Mapping):
        return [_openai_message(_one_message(value, where))]
    expected = _EXPECTED_UNDER_A_KEY if in_dict else _EXPECTED
    raise InputError(f"{where}: expected {expected}, not {type(value).__name__}")


def _one_message(value: Mapping[str, Any], where: str) -> BaseMessage:
    """A role/content dict as the message it stands for; else an InputError saying why, by
    type, never quoting its text."""
    try:
        message: BaseMessage | None = convert_to_messages([dict(value)])[0]
    except _COERCION_ERRORS:
        message = None
    if message is None:  # raised outside the handler, as in _message
        raise InputError(f"{where} {_why(value)}: expected {_EXPECTED_UNDER_A_KEY}")
    return message


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
    message's ``tool_calls`` and structured-output ``refusal``)."""
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
    if calls and isinstance(message, AIMessage):
        out.update(_calls_and_refusal(message))
    return out


def _calls_and_refusal(message: AIMessage) -> dict[str, Any]:
    """An AI message's tool calls and its structured-output ``refusal`` (which
    langchain-openai keeps in ``additional_kwargs``), as OpenAI-format message fields, so
    :func:`~gatekeeper.refusals.calls_tools` reads them as it reads an OpenAI message: parsed
    ``tool_calls``, ``invalid_tool_calls`` (arguments that are no JSON), the raw
    ``additional_kwargs["tool_calls"]`` and a legacy ``additional_kwargs["function_call"]``."""
    fields: dict[str, Any] = {}
    calls = [*message.tool_calls, *message.invalid_tool_calls]
    raw = message.additional_kwargs.get("tool_calls")
    if calls or raw:
        fields["tool_calls"] = calls or raw
    function_call = message.additional_kwargs.get("function_call")
    if function_call:
        fields["function_call"] = function_call
    refusal = message.additional_kwargs.get("refusal")
    if isinstance(refusal, str):
        fields["refusal"] = refusal
    return fields
