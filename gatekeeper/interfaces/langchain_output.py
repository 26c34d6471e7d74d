"""What a :class:`~gatekeeper.interfaces.langchain.GatekeeperRunnable` returns: the gate's reply
in the wrapped runnable's output shape, and the output type that describes both.

The rule, read from the wrapped runnable's declared ``OutputType``:

* it outputs text (``str``, e.g. ``prompt | model | StrOutputParser()``, or a function annotated
  ``-> str``): the reply is a :class:`ReplyText`, a ``str`` (JSON, f-strings and templates show
  the reply itself), with the decision in its ``response_metadata["gatekeeper"]``; when
  streaming, one ``ReplyText`` chunk;
* anything else (a chat model, a chain ending in one, and any runnable whose output type cannot
  be read, such as an unannotated function): an ``AIMessage`` (one ``AIMessageChunk`` when
  streaming) with the decision in ``response_metadata["gatekeeper"]``.

So admitted and refused messages come back as the same kind of value whenever the wrapped
runnable says what it returns.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

from gatekeeper.interfaces.langchain_types import declared_output, holds_message, is_text

#: How the gate's reply is returned: a ``str`` or a chat message.
OutputShape = Literal["text", "message"]


class ReplyText(str):
    """The gate's reply as text, the decision attached as on an ``AIMessage``.

    A ``str`` in every way (equality, JSON, formatting); ``response_metadata["gatekeeper"]``
    holds the decision, ``Decision.model_dump(mode="json")``.
    """

    response_metadata: dict[str, Any]

    def __new__(cls, text: str, response_metadata: dict[str, Any] | None = None) -> ReplyText:
        value = super().__new__(cls, text)
        value.response_metadata = dict(response_metadata or {})
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReplyText, (str(self), self.response_metadata))


def output_shape(runnable: Runnable[Any, Any]) -> OutputShape:
    """``text`` when ``runnable`` declares a ``str`` output, else ``message``."""
    declared = declared_output(runnable)
    return "text" if is_text(declared) else "message"


def shaped(reply: BaseMessage, shape: OutputShape) -> Any:
    """The reply run's message (or chunk) as ``shape``: unchanged, or a :class:`ReplyText`."""
    if shape == "message":
        return reply
    return ReplyText(reply.text, reply.response_metadata)


def output_type(runnable: Runnable[Any, Any]) -> Any:
    """What the gated runnable returns: ``runnable``'s output type, with ``AIMessage`` added
    when a reply would not already be one of its values."""
    declared = declared_output(runnable)
    if declared is Any or is_text(declared) or holds_message(declared):
        return declared
    return Union[declared, AIMessage]  # noqa: UP007 (a runtime type, not an annotation)
