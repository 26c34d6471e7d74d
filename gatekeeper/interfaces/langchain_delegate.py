"""What a gated chat model passes on to the model it wraps: ``bind_tools`` and
``with_structured_output``, so a :class:`~gatekeeper.interfaces.langchain.GatekeeperRunnable`
can be given where a chat model is expected (an agent: LangGraph's ``create_react_agent(gated,
tools)`` binds the tools to the model it is given).

Each returns a new gated runnable, the same gate and settings around what the wrapped runnable
returns (``model.bind_tools(tools)``, ``model.with_structured_output(schema)``), so the gate
still answers off-topic messages without calling the model. Those answers keep their shape: an
``AIMessage`` without tool calls (an agent ends its loop on it) or, for structured output, an
``AIMessage`` too, not an instance of the schema (nor, with ``include_raw=True``, the
``{"raw", "parsed", "parsing_error"}`` dict).
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable


def delegated(runnable: Runnable[Any, Any], method: str, /, *args: Any, **kwargs: Any) -> Any:
    """``runnable.<method>(*args, **kwargs)``; an ``AttributeError`` saying what to wrap when
    ``runnable`` has no such method (a chain, a function). Its own two parameters are
    positional-only, so every keyword reaches the wrapped method, ``method=`` and
    ``runnable=`` too (``with_structured_output(T, method="json_mode")``)."""
    call = getattr(runnable, method, None)
    if not callable(call):
        raise AttributeError(
            f"GatekeeperRunnable.{method}: the wrapped runnable ({runnable.get_name()}) has no "
            f"{method}; wrap the chat model itself (GatekeeperRunnable(runnable=model)) to "
            f"call {method} on the gated model, or call it on the model before wrapping"
        )
    return call(*args, **kwargs)
