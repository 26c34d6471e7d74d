"""The conversation behind recent Responses API answers, for ``previous_response_id``.

A Responses API client that keeps its state on the server sends only the new turn with the id
of the answer before it. Judged alone, a customer's "Alessandro Phoenix" (after "May I have
your name?") would be refused mid-service. So the proxy remembers, per answer it passed on or
gave, the conversation up to that answer (its last :data:`KEPT_MESSAGES` messages), and judges
a request that names it as the whole chat.

The proxy's own answers (refusals, canned replies; ids ``resp_gk_...``) never reached the
upstream, which cannot continue from them. A forwarded request that names one is therefore sent
with the ``previous_response_id`` the upstream knows (the last forwarded answer's, or none) and
the turns the upstream has not seen put before its ``input``: the upstream answers the chat the
gate judged.

A refusal is never put before a forwarded request: the off-topic turn it refused and the refusal
stay out of what the upstream sees (they would hand the LLM the very request the gate turned
away, with "now do what I asked first" after it); canned replies and the turns they answered are.

A Responses ``input`` may also give one of the proxy's answers back as an ``item_reference`` to
its output message (``msg_gk_...``, which the upstream cannot resolve), or to the answer itself
(``resp_gk_...``): while the answer is held, :meth:`ResponseThreads.resolved` puts that answer's
message in its place, so a refusal given by reference is taken out with the turn it refused, as
its text is (:mod:`gatekeeper.refusals`). A client that gives the answer back inline
(``input += response.output``) sends its output message with that ``msg_gk_...`` id:
:func:`unnamed` forwards it as a plain assistant message, held or not.

Held in memory only, per serving process, the most recent ``server.response_threads`` answers
(least recently used out; 0 keeps none), and no more than ``server.response_threads_bytes`` of
them in all: a client sending many large items cannot grow the process without bound; a single
answer over that budget is not remembered. Each turn and item is held as its compact JSON in
UTF-8 bytes (decoded again when it is read), and the budget counts those bytes objects as they
sit in memory: parsed objects would have cost more than their JSON (16,000 empty objects are
48 KB of JSON and 1.2 MB of dicts), which a budget of JSON sizes let grow 20-fold. It holds customer
text, like any request in flight, and is never logged. Only what the gate reads is kept of the
judged chat: the customer's and the assistant's turns as text, each cut to
``gate.max_message_chars`` (an attachment by its type alone), so a request of 15 MB of
instructions costs no more memory than any other. The turns a local answer keeps for the
upstream are kept as the client sent them (photos, files and tool items included), each up to
:data:`MAX_KEPT_ITEM` characters; a larger one by its text. A request naming an answer it does
not hold (another process, evicted, a restart) is judged on what it carries.

Each turn and item is encoded once, when it is first remembered: an answer continuing a
remembered one shares the bytes of the turns the two have in common (each held answer counts
them in full), so remembering a long conversation costs the time its new turns cost.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.conversation import attachment_types, content_text
from gatekeeper.interfaces.local_answers import answer_of_item
from gatekeeper.interfaces.proxy.errors import Json
from gatekeeper.refusals import is_item_reference, turns_answered
from gatekeeper.types import blank

#: Messages kept per conversation: the conversation rule reads the last few customer turns.
KEPT_MESSAGES = 16
#: The prefix of the proxy's own response ids (``local_answers.response_id``).
LOCAL_PREFIX = "resp_gk_"


@dataclass(frozen=True)
class Thread:
    """The chat up to one answer; for the proxy's own answer, what the upstream has not seen."""

    messages: tuple[Json, ...]
    local: bool = False
    upstream_previous: str | None = None  # a local answer's last id the upstream knows
    unseen: tuple[Json, ...] = ()  # a local answer's turns the upstream has not seen
    # the compact JSON each of ``messages`` then ``unseen`` is held as (set by
    # ResponseThreads.get: a thread it gave)
    blobs: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class _Kept:
    """A thread as :class:`ResponseThreads` holds it: its turns and items as compact JSON."""

    turns: tuple[bytes, ...]
    items: tuple[bytes, ...]
    local: bool
    upstream_previous: str | None
    size: int  # the memory of ``turns`` and ``items`` (:func:`_held_size`)

    def thread(self) -> Thread:
        """The thread, decoded (fresh objects: a caller may change them)."""
        return Thread(
            messages=tuple(_decoded(blob) for blob in self.turns),
            local=self.local,
            upstream_previous=self.upstream_previous,
            unseen=tuple(_decoded(blob) for blob in self.items),
            blobs=(*self.turns, *self.items),
        )

    def answer(self) -> Json | None:
        """The last turn (a local answer's own message), decoded."""
        return _decoded(self.turns[-1]) if self.turns else None


class ResponseThreads:
    """A bounded, thread-safe LRU of response id → :class:`Thread`."""

    def __init__(self, size: int, max_chars: int = 10_000, max_bytes: int = 256 * 2**20) -> None:
        self.size = size
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self._threads: OrderedDict[str, _Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """The memory of the turns and items held now (their bytes objects)."""
        return self._bytes

    def get(self, response_id: Any) -> Thread | None:
        """The thread of ``response_id`` (any JSON value: only a known string finds one)."""
        if not isinstance(response_id, str):
            return None
        with self._lock:
            kept = self._threads.get(response_id)
            if kept is None:
                return None
            self._threads.move_to_end(response_id)
        return kept.thread()

    def remember(self, response_id: Any, thread: Thread, previous: Thread | None = None) -> None:
        """Keep ``thread`` as the chat behind ``response_id`` (a string id, else nothing).

        ``previous``: the remembered thread (as :meth:`get` gave it) that ``thread`` continues;
        the turns and items ``thread`` took over from it are kept as the bytes held for them,
        and only the new ones are cut down and encoded."""
        if self.size <= 0 or not isinstance(response_id, str) or not response_id:
            return
        held_turns, held_items = _held(previous)
        turns = tuple(
            _blob(m, held_turns) or _encoded(_slim(m, self.max_chars))
            for m in thread.messages
            if _turn(m)
        )
        items = tuple(_blob(i, held_items) or _encoded(i) for i in thread.unseen)
        size = sum(_held_size(blob) for blob in (*turns, *items))
        kept = _Kept(turns, items, thread.local, thread.upstream_previous, size)
        with self._lock:
            self._forget(response_id)
            if size > self.max_bytes:
                return
            self._threads[response_id] = kept
            self._bytes += size
            while len(self._threads) > self.size or self._bytes > self.max_bytes:
                self._forget(next(iter(self._threads)))

    def resolved(self, items: list[Any]) -> list[Any]:
        """``items`` (a Responses ``input``) with each ``item_reference`` to the output message
        of one of this process's own answers it still holds replaced by that message: the
        upstream never stored it, so it could not resolve the reference."""
        with self._lock:
            return [self._answer_message(item) or item for item in items]

    def _answer_of(self, item: Any) -> _Kept | None:
        """The held answer of this process's own that ``item`` references (by its output
        message's id, or its own), if it is held (the lock is held)."""
        answer = _answer_named(item.get("id")) if is_item_reference(item) else None
        kept = self._threads.get(answer) if answer is not None else None
        return kept if kept is not None and kept.local else None

    def _answer_message(self, item: Any) -> Json | None:
        """The answer message an ``item_reference`` names, if this process holds it (the lock
        is held)."""
        kept = self._answer_of(item)
        return kept.answer() if kept is not None else None  # answered()

    def _forget(self, response_id: str) -> None:
        """Drop ``response_id``'s thread, if held (the lock is held)."""
        kept = self._threads.pop(response_id, None)
        if kept is not None:
            self._bytes -= kept.size


#: Fields of the proxy's own output message that name it as an item the upstream never stored.
_LOCAL_ITEM_FIELDS = ("id", "status")


def unnamed(items: list[Any]) -> list[Any]:
    """``items`` (a Responses ``input``) with each of the proxy's own output messages given back
    inline (``"id": "msg_gk_..."``, as ``input += response.output`` sends it) without its id
    and status: an assistant message of its role and content, which the upstream takes (it
    never stored the item, and failed a request naming it: "Item with id ... not found")."""
    return [_unnamed(item) for item in items]


def _unnamed(item: Any) -> Any:
    if not isinstance(item, dict) or is_item_reference(item) or "role" not in item:
        return item  # a reference is :meth:`ResponseThreads.resolved`'s
    if answer_of_item(item.get("id")) is None:
        return item
    return {key: value for key, value in item.items() if key not in _LOCAL_ITEM_FIELDS}


def _answer_named(item_id: Any) -> str | None:
    """The id of the proxy's own answer an item reference's ``item_id`` names: its output
    message's (``msg_gk_...``) or its own (``resp_gk_...``, which is no item but names the
    refusal as surely)."""
    if isinstance(item_id, str) and item_id.startswith(LOCAL_PREFIX):
        return item_id
    return answer_of_item(item_id)


#: The bytes held for the turns and items of a thread :meth:`ResponseThreads.get` gave, by the
#: ``id()`` of the object decoded from them (:func:`_held`).
_Held = dict[int, tuple[Json, bytes]]


def _held(thread: Thread | None) -> tuple[_Held, _Held]:
    """The turns (``messages``) and the items (``unseen``) of a thread
    :meth:`ResponseThreads.get` gave, each with the bytes held for it (none for any other
    thread)."""
    if thread is None or len(thread.blobs) != len(thread.messages) + len(thread.unseen):
        return {}, {}
    cut = len(thread.messages)
    turns = zip(thread.messages, thread.blobs[:cut], strict=True)
    items = zip(thread.unseen, thread.blobs[cut:], strict=True)
    return (
        {id(turn): (turn, blob) for turn, blob in turns},
        {id(item): (item, blob) for item, blob in items},
    )


def _blob(item: Json, held: _Held) -> bytes | None:
    """The bytes held for ``item`` when it is one of the turns or items in ``held`` (that very
    object), else None."""
    entry = held.get(id(item))
    return entry[1] if entry is not None and entry[0] is item else None


def _encoded(item: Json) -> bytes:
    """``item`` (a turn, an input item) as held: its compact JSON in UTF-8."""
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "surrogatepass")


def _decoded(blob: bytes) -> Json:
    """A turn or item from the bytes held for it."""
    item: Json = json.loads(blob.decode("utf-8", "surrogatepass"))
    return item


def _held_size(blob: bytes) -> int:
    """The memory ``blob`` takes: its bytes and the object around them (``sys.getsizeof``)."""
    return sys.getsizeof(blob)


def _turn(message: Json) -> bool:
    """A customer's or the assistant's turn: what the conversation rule reads."""
    return message.get("role") in ("user", "assistant")


def _slim(message: Json, limit: int) -> Json:
    """A turn as the gate reads it: its text cut to ``limit``, and its attachments' types."""
    content = message.get("content")
    text = content_text(content)[:limit]
    kinds = [{"type": kind} for kind in attachment_types(content)]
    if not kinds:
        return {"role": message["role"], "content": text}
    said = [] if blank(text) else [{"type": "text", "text": text}]
    return {"role": message["role"], "content": said + kinds}


def answered(messages: list[Json], answer: str) -> tuple[Json, ...]:
    """``messages`` and the assistant's ``answer``, the last :data:`KEPT_MESSAGES` of them.

    Assistant turns without text in a row (tool calls: the rounds of an agent's tool loop) are
    kept as one: 16 rounds of them pushed the customer's turn out of the thread (a text turn
    was then judged without its context), and one still tells the conversation rule that the
    assistant spoke since its last question, as the whole chat sent again would."""
    chat: list[Json] = []
    for message in (*messages, {"role": "assistant", "content": answer}):
        if not (_silent(message) and chat and _silent(chat[-1])):
            chat.append(message)
    return tuple(chat[-KEPT_MESSAGES:])


def _silent(message: Json) -> bool:
    """An assistant turn with no text and no attachment (a tool call's turn)."""
    content = message.get("content")
    return (
        message.get("role") == "assistant"
        and blank(content_text(content))
        and not attachment_types(content)
    )


def local_thread(
    judged: list[Json],
    new: list[Json],
    answer: str,
    previous: Thread | None,
    previous_id: Any,
    *,
    refused: bool,
) -> Thread:
    """The thread of the proxy's own ``answer`` to a request judged as ``judged``, whose
    ``new`` input items (as the client sent them, refused exchanges taken out) continue
    ``previous`` (named ``previous_id``). The upstream will be shown those items, images,
    files and tool items included, and a canned answer; of a ``refused`` request, neither the
    customer's last turn nor the refusal."""
    items = _customer_turn_dropped(new) if refused else new
    turns = [kept for item in items if (kept := _kept_item(item)) is not None]
    shown = [] if refused else [{"role": "assistant", "content": answer}]
    if previous is not None and previous.local:
        upstream_previous, unseen = previous.upstream_previous, previous.unseen
    else:
        known = isinstance(previous_id, str) and not previous_id.startswith(LOCAL_PREFIX)
        upstream_previous, unseen = (previous_id if known else None), ()
    return Thread(
        messages=answered(judged, answer),
        local=True,
        upstream_previous=upstream_previous,
        unseen=(*unseen, *turns, *shown)[-KEPT_MESSAGES:],
    )


#: An input item larger than this (bytes of its compact JSON: a photo inline) is kept for the
#: upstream as its text alone, so a remembered answer costs little memory.
MAX_KEPT_ITEM = 65_536


def _kept_item(item: Json) -> Json | None:
    """An input item as kept for the upstream: as sent; one larger than
    :data:`MAX_KEPT_ITEM` by its text (none when it has no text: it is left out)."""
    if not isinstance(item, dict) or item.get("role") == "system":
        return None
    if len(_encoded(item)) <= MAX_KEPT_ITEM:
        return item
    text = content_text(item.get("content")) if "role" in item else ""
    return {"role": item["role"], "content": text} if not blank(text) else None


def _customer_turn_dropped(items: list[Json]) -> list[Json]:
    """``items`` without the customer's messages at their end (the turn that was refused; a
    system message or item reference after it stays)."""
    refused = turns_answered(items, len(items))
    return [item for i, item in enumerate(items) if i not in refused]


def input_items(value: Any) -> list[Json]:
    """A Responses request's ``input`` as a list of items (a string is one user message)."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def upstream_payload(payload: Json, previous: Thread) -> Json:
    """A forwarded request that continues the proxy's own answer (``previous``), as the
    upstream can take it: its ``previous_response_id`` the last one the upstream knows (or
    none), the turns it has not seen before its ``input``."""
    given = input_items(payload["input"])
    rewritten = {k: v for k, v in payload.items() if k != "previous_response_id"}
    if previous.upstream_previous is not None:
        rewritten["previous_response_id"] = previous.upstream_previous
    rewritten["input"] = [*(dict(m) for m in previous.unseen), *given]
    return rewritten


def output_text(response: Any) -> str | None:
    """The text of a Responses API ``response`` object's output messages; None if it is no
    such object."""
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        return None
    texts = [
        part["text"]
        for item in response["output"]
        if isinstance(item, dict) and item.get("type") == "message"
        for part in _parts(item.get("content"))
        if isinstance(part, dict)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)


def _parts(content: Any) -> list[Any]:
    """An output message's content parts (an upstream may send anything there: none then)."""
    return content if isinstance(content, list) else []
