"""Edges of forwarded streams that the stream fuzz tests (``tests/fuzz``) found: odd upstream
answers the proxy reads while relaying them, and where a stream's end is."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gatekeeper.interfaces.proxy.stream_ends import DoneEnd, ResponseEnd
from tests.support.fake_upstream import FakeUpstream, sse_answer


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"/v1/{path}", content=json.dumps(body), headers={"content-type": "application/json"}
    )


def completed_stream(response: Any) -> bytes:
    """A Responses stream whose ``response.completed`` carries ``response``."""
    event = {"type": "response.completed", "response": response}
    return f"event: response.completed\ndata: {json.dumps(event)}\n\n".encode()


ODD_OUTPUT = {"id": "resp_up_1", "output": [{"type": "message", "content": 1}]}


async def test_an_odd_completed_response_is_relayed_whole(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An upstream's response.completed whose message content is no list is relayed whole."""
    body = completed_stream(ODD_OUTPUT)
    upstream.handler = sse_answer(body)
    answer = await post(client, "responses", {"input": "where is my order", "stream": True})
    assert answer.status_code == 200 and answer.content == body


async def test_an_odd_response_is_relayed(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """An upstream's response whose message content is no list is relayed, not a 500."""
    upstream.handler = lambda request: httpx.Response(200, json=ODD_OUTPUT)
    answer = await post(client, "responses", {"input": "where is my order"})
    assert answer.status_code == 200 and answer.json() == ODD_OUTPUT


CHAT_CHUNK = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}
STREAMS = {
    "chat/completions": f"data: {json.dumps(CHAT_CHUNK)}\n\ndata: [DONE]\n\n",
    "responses": completed_stream({"id": "resp_up_2", "output": []}).decode(),
}


@pytest.mark.parametrize("path", sorted(STREAMS))
async def test_a_stream_with_cr_line_ends_is_relayed_unchanged(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """A whole stream whose lines end in CR alone (as SSE allows) gets no error event."""
    body = STREAMS[path].replace("\n", "\r").encode()
    upstream.handler = sse_answer(body)
    messages = {"messages": [{"role": "user", "content": "where is my order"}]}
    request = {"input": "where is my order"} if path == "responses" else messages
    answer = await post(client, path, {**request, "stream": True})
    assert answer.content == body


async def test_a_stream_cut_inside_its_last_event_ends_with_an_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A Responses stream cut after ``event: response.completed``, before its data is whole,
    ends with the SSE error event (it was taken for a whole stream)."""
    whole = STREAMS["responses"].encode()
    cut = whole[: whole.index(b"data:") + len(b"data: {")]
    upstream.handler = sse_answer(cut)
    answer = await post(client, "responses", {"input": "where is my order", "stream": True})
    assert b"event: response.completed" not in answer.content
    last = answer.text.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_stream_truncated"


@pytest.mark.parametrize("eol", ["\r", "\r\n", "\n"])
def test_stream_ends_are_found_byte_by_byte_with_any_line_end(eol: str) -> None:
    """Fed one byte at a time, a whole stream with any line end is complete; cut, it is not."""
    for path, end_of in (("responses", ResponseEnd), ("chat/completions", DoneEnd)):
        whole = STREAMS[path].replace("\n", eol).encode()
        for body, complete in ((whole, True), (whole[: whole.rindex(b"data:") + 7], False)):
            end = end_of()
            for byte in body:
                end.feed(bytes([byte]))
            assert end.complete() is complete, (path, body)


@pytest.mark.parametrize("path", sorted(STREAMS))
async def test_a_stream_cut_mid_event_never_passes_half_an_event(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    """A stream cut inside an event passes its whole events, then only the error event."""
    first = f"data: {json.dumps(CHAT_CHUNK)}\n\n".encode()  # any whole event
    whole = STREAMS[path].encode()
    upstream.handler = sse_answer(first + whole[: whole.index(b"\n\n") - 3])
    messages = {"messages": [{"role": "user", "content": "where is my order"}]}
    request = {"input": "where is my order"} if path == "responses" else messages
    answer = await post(client, path, {**request, "stream": True})
    assert answer.content.startswith(first)
    error = json.loads(answer.content[len(first) :].strip().removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_stream_truncated"


async def test_an_event_after_the_completed_one_ended_by_a_last_cr_ends_with_an_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """With CR line ends, an event after response.completed ends the stream: an error follows."""
    after = "event: response.output_text.delta\ndata: {not json\n\n"
    body = (STREAMS["responses"] + after).replace("\n", "\r").encode()
    upstream.handler = sse_answer(body)
    answer = await post(client, "responses", {"input": "where is my order", "stream": True})
    assert answer.content.startswith(body)
    last = answer.text.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_stream_truncated"
