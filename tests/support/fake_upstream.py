"""The fake upstream of the in-process proxy tests: :class:`FakeUpstream`, served through
``httpx.MockTransport`` (no sockets), and the answers it is given."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def completion(text: str = "echo") -> dict[str, Any]:
    """A ``chat.completion`` answering ``text``."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


def sse(*events: str, done: bool = True) -> bytes:
    """A chat completion stream of ``events`` (``data:`` lines), ending in ``[DONE]`` if
    ``done``."""
    chunks = [f"data: {e}\n\n" for e in events]
    if done:
        chunks.append("data: [DONE]\n\n")
    return "".join(chunks).encode()


CHUNK = json.dumps(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
)


class FakeUpstream:
    """Records the requests it receives; answers with ``handler`` (default: a completion)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = self.default

    def default(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        if json.loads(request.content).get("stream"):
            return httpx.Response(
                200, content=sse(CHUNK), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=completion())

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    @property
    def bodies(self) -> list[bytes]:
        return [r.content for r in self.requests if r.url.path.endswith("/chat/completions")]


def sse_answer(body: bytes) -> Handler:
    """A handler answering every request with ``body`` as an event stream."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return handler


class CutStream(httpx.AsyncByteStream):
    """Sends ``head``, then fails as httpcore does when the peer closes before content-length."""

    def __init__(self, head: bytes, error: Exception | None = None) -> None:
        self.head = head
        self.error = error or httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body: "
            "received 40 bytes, expected 775"
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise self.error
