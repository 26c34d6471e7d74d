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
runnable says what it returns. An admitted answer that is a chat message (or, streaming, its
first chunk) carries the decision in ``response_metadata["gatekeeper"]`` too.

What that decision record holds (:func:`decision_record`): by default ``Decision.summary()``
(route, intent, nearest intent, score, threshold, followup, shadow, gate error, latency, message
id), which holds no exemplar or customer text; with ``decision_detail="full"``, the whole
decision as JSON (the neighbours' exemplar texts and the reason too): for evals and debugging,
not for answers a host passes on to its users, who could read the catalog out of it.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

from gatekeeper.decision import Decision
from gatekeeper.interfaces.langchain_types import declared_output, holds_message, is_text

#: How the gate's reply is returned: a ``str`` or a chat message.
OutputShape = Literal["text", "message"]
#: How much of the decision an answer carries: see :func:`decision_record`.
DecisionDetail = Literal["summary", "full"]
#: Where the decision is in an answer's ``response_metadata``.
METADATA_KEY = "gatekeeper"


def decision_record(decision: Decision, detail: DecisionDetail) -> dict[str, Any]:
    """The decision as an answer carries it: ``Decision.summary()`` (no exemplar or customer
    text), or with ``full`` ``Decision.model_dump(mode="json")``."""
    return decision.model_dump(mode="json") if detail == "full" else decision.summary()


def with_decision(output: Any, record: dict[str, Any]) -> Any:
    """An admitted answer with ``record`` in its ``response_metadata``, when it is a chat
    message or chunk (a copy: the wrapped runnable's value is not changed); anything else as
    it is."""
    if not isinstance(output, BaseMessage):
        return output
    metadata = {**output.response_metadata, METADATA_KEY: record}
    return output.model_copy(update={"response_metadata": metadata})


class ReplyText(str):
    """The gate's reply as text, the decision attached as on an ``AIMessage``.

    A ``str`` in every way (equality, JSON, formatting); ``response_metadata["gatekeeper"]``
    holds the decision (:func:`decision_record`).
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
