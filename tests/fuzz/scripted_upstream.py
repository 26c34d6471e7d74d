"""A scripted OpenAI-compatible upstream for the stream fuzz tests: a real HTTP server on
loopback (asyncio sockets, no framework), so an answer can be anything a socket can carry: any
status, content type and framing, SSE events good or broken, a stream cut mid-event, a
connection closed before the end of a chunked or length-framed body.

Each request is answered by the current :class:`Script` (set by the test before it sends);
the request bodies received are kept in :attr:`ScriptedUpstream.bodies`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

#: The text a healthy scripted stream says, one delta per word.
UPSTREAM_TEXT = "upstream says hello"

#: The event kinds a script is made of (rendered per endpoint by :func:`render`).
HEALTHY = ("created", "text", "text", "text", "done")


@dataclass(frozen=True)
class Script:
    """How to answer the next request.

    ``events`` are event kinds (:func:`render`), joined by ``separator``; the bytes are cut at
    ``truncate`` (None: whole) and sent in pieces at ``cuts``. ``framing``: ``chunked``,
    ``close`` (no length: the body ends when the connection closes) or ``length``; with
    ``abort`` a chunked body has no last chunk and a length-framed one is short."""

    status: int = 200
    content_type: str = "text/event-stream"
    events: tuple[str, ...] = HEALTHY
    separator: bytes = b"\n\n"
    truncate: int | None = None
    cuts: tuple[int, ...] = ()
    framing: str = "chunked"
    abort: bool = False
    completed: Any = None  # the ``response`` of a ``bad_completed`` event

    @property
    def healthy(self) -> bool:
        """A 200 stream that ends as it must, whole, nothing odd in it."""
        return (
            self.status == 200
            and self.content_type == "text/event-stream"
            and self.events == HEALTHY
            and self.truncate is None
            and not self.abort
        )


def _chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


def _response(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    message = {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": ident,
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "up",
        "output": [message] if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def _chat_event(kind: str, word: str) -> str:
    events = {
        "created": lambda: f"data: {json.dumps(_chunk({'role': 'assistant', 'content': ''}))}",
        "text": lambda: f"data: {json.dumps(_chunk({'content': word}))}",
        "done": lambda: "data: [DONE]",
        "error": lambda: 'data: {"error": {"message": "overloaded", "type": "server_error"}}',
        "garbage": lambda: "data: {not json",
        "comment": lambda: ": keep-alive",
        "empty_data": lambda: "data:",
    }
    return events.get(kind, events["garbage"])()


def _responses_event(kind: str, word: str, ident: str, completed: Any) -> str:
    def event(name: str, payload: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}"

    events = {
        "created": lambda: event(
            "response.created", {"response": _response(ident, "", "in_progress")}
        ),
        "text": lambda: event(
            "response.output_text.delta",
            {"item_id": "msg_up", "output_index": 0, "content_index": 0, "delta": word},
        ),
        "done": lambda: event("response.completed", {"response": _response(ident, UPSTREAM_TEXT)}),
        "error": lambda: event("error", {"code": "server_error", "message": "overloaded"}),
        "garbage": lambda: "event: response.output_text.delta\ndata: {not json",
        "comment": lambda: ": keep-alive",
        "empty_data": lambda: "data:",
        "bad_completed": lambda: event("response.completed", {"response": completed}),
    }
    return events.get(kind, events["garbage"])()


def render(script: Script, path: str, ident: str) -> bytes:
    """The body of ``script`` for a request to ``path``; a Responses answer has id ``ident``."""
    words = iter(re.findall(r"\S+\s*", UPSTREAM_TEXT))
    texts = []
    for kind in script.events:
        word = next(words, "") if kind == "text" else ""
        if path.endswith("/responses"):
            texts.append(_responses_event(kind, word, ident, script.completed))
        else:
            texts.append(_chat_event(kind, word))
    sep = script.separator
    body = b"".join(t.encode().replace(b"\n", sep[: len(sep) // 2]) + sep for t in texts)
    if script.content_type != "text/event-stream" and script.status == 200:
        body = json.dumps(_response(ident, UPSTREAM_TEXT)).encode()
    if script.status >= 400:
        body = json.dumps({"error": {"message": "scripted failure", "code": "x"}}).encode()
    return body if script.truncate is None else body[: script.truncate]


def _pieces(body: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    return [piece for piece in pieces if piece]


class ScriptedUpstream:
    """The scripted server, on 127.0.0.1 in a thread of its own; ``with`` starts and stops it."""

    def __init__(self) -> None:
        self.script = Script()
        self.bodies: list[Any] = []
        self.answered = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            path, body = await _read_request(reader)
            self.bodies.append(_json_or_raw(body))
            self.answered += 1
            await self._answer(writer, self.script, path, f"resp_up_{self.answered}")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, script: Script, path: str, ident: str
    ) -> None:
        body = render(script, path, ident)
        head = [f"HTTP/1.1 {script.status} X", f"content-type: {script.content_type}"]
        head.append("connection: close")
        if script.framing == "chunked":
            head.append("transfer-encoding: chunked")
        elif script.framing == "length":
            head.append(f"content-length: {len(body) + (7 if script.abort else 0)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for piece in _pieces(body, script.cuts):
            framed = b"%x\r\n%s\r\n" % (len(piece), piece) if script.framing == "chunked" else piece
            writer.write(framed)
            await writer.drain()
        if script.framing == "chunked" and not script.abort:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return path, await reader.readexactly(length)


def _json_or_raw(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body
