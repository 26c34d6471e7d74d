"""Tool results: the app's own turn, continuing one the gate admitted.

An agent's tool loop hands the LLM back what its tools returned: a chat ending in ``tool`` (or
legacy ``function``) messages, or a Responses request whose ``input`` holds a
``function_call_output`` (or another tool's output, :data:`TOOL_OUTPUTS`) and, with
``previous_response_id``, often nothing else. The gate's own answers never call a tool, so a
tool result answers a call the upstream made, on a turn the gate admitted.

Such a request is judged on the last customer turn the gate can see: the chat sent (and in the
Responses API the conversation held for ``previous_response_id`` before it), which gives the
decision the request that caused the call got. When it can see none (a chat trimmed down to the
tool call, an answer another process gave or one no longer held), it is forwarded as a
follow-up of that turn: :func:`continuation`. A request with neither a customer message nor a
tool result stays an empty message (400).

Like any text in a request, a tool result is the client's to write: this is no security
boundary against a client that forges one (it could as well put any request in a system
message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatekeeper.decision import Decision, Route

#: Chat roles of a tool's result (``function``: the legacy function-calling API).
TOOL_ROLES = frozenset({"tool", "function"})
#: Responses API input items that hand back what a tool the model called returned (or the
#: app's answer to an MCP approval request the model made).
TOOL_OUTPUTS = frozenset(
    {
        "function_call_output",
        "custom_tool_call_output",
        "computer_call_output",
        "local_shell_call_output",
        "shell_call_output",
        "apply_patch_call_output",
        "mcp_approval_response",
        "tool_search_output",
    }
)


def tool_results(messages: Any) -> bool:
    """Whether chat ``messages`` carry a tool's result (a ``tool`` or ``function`` message)."""
    return _any_item(messages, "role", TOOL_ROLES)


def tool_outputs(items: Any) -> bool:
    """Whether a Responses ``input`` carries a tool's output (:data:`TOOL_OUTPUTS`)."""
    return _any_item(items, "type", TOOL_OUTPUTS)


def _any_item(chat: Any, key: str, values: frozenset[str]) -> bool:
    """Whether a list ``chat`` holds an object whose ``key`` is one of ``values``."""
    if not isinstance(chat, list):
        return False
    return any(
        isinstance(item, Mapping) and isinstance(value := item.get(key), str) and value in values
        for item in chat
    )


def customer_message(chat: Any) -> bool:
    """Whether ``chat`` (chat messages) holds a customer's (``user``) message to judge."""
    if not isinstance(chat, list):
        return True  # not a chat: the gate's validation says what is wrong with it
    return any(isinstance(m, Mapping) and m.get("role") == "user" for m in chat)


def continuation(threshold: float, *, shadow: bool) -> Decision:
    """The decision on tool results with no customer turn in sight: forwarded as a follow-up
    of the admitted turn whose tool call they answer (nothing is scored: score 0, no intent,
    no message id; ``threshold``: the gate's)."""
    return Decision(
        route=Route.LLM,
        intent=None,
        score=0.0,
        threshold=threshold,
        reason=(
            "follow-up (tool results, no customer message to judge): the app's own turn "
            "continuing an admitted one (the gate's answers call no tool), forwarded"
        ),
        followup=True,
        shadow=shadow,
    )
