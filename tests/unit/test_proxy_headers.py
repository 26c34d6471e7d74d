"""What the proxy relays of the headers between a client and the upstream (in-process, the app
and fake upstream of ``tests/support``): upstream header values as the bytes received, whatever
their encoding."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ORDER

NOTE = "café € 😀".encode()


def with_headers(upstream: FakeUpstream, headers: list[tuple[bytes, bytes]]) -> None:
    """``upstream`` answers as it would, with ``headers`` added to every answer."""

    def answer(request: httpx.Request) -> httpx.Response:
        plain = upstream.default(request) if "chat" in request.url.path else None
        content = plain.content if plain is not None else b'{"object": "list", "data": []}'
        kind = plain.headers["content-type"] if plain is not None else "application/json"
        return httpx.Response(
            200, content=content, headers=[(b"content-type", kind.encode()), *headers]
        )

    upstream.handler = answer


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_header_value_in_utf8_is_relayed_as_sent(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    """A header value that is not Latin-1 text (UTF-8 bytes) reaches the client byte for byte,
    on a gated answer (streamed or not) and a passed-through one: never a 500."""
    with_headers(upstream, [(b"x-note", NOTE)])
    answers = [
        await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": ORDER, "stream": stream}
        ),
        await client.post("/v1/embeddings", json={"model": "e", "input": "x"}),
        await client.get("/v1/models"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert dict(answer.headers.raw)[b"x-note"] == NOTE
