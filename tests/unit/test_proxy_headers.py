"""What the proxy relays of the headers between a client and the upstream (in-process, the app
and fake upstream of ``tests/support``): upstream header values as the bytes received, whatever
their encoding."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from gatekeeper.gate import Gatekeeper
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import CLIENT_KEY, ORDER, serving

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


FORGED = [
    (f"x-gatekeeper-{name}".encode(), b"forged")
    for name in ("route", "shadow", "gate-error", "followup", "nearest-intent", "message-id")
]


async def test_the_upstream_cannot_forge_the_gates_headers(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """x-gatekeeper-* headers from the upstream never reach the client (gated or passed-through
    answer), and the request log reads the proxy's own values, not the upstream's."""
    with_headers(upstream, [(b"X-Gatekeeper-Intent", b"forged"), *FORGED])
    with capture_logs() as logs:
        gated = await client.post("/v1/chat/completions", json={"model": "m", "messages": ORDER})
        passed = await client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert gated.headers["x-gatekeeper-route"] == "llm"
    assert gated.headers["x-gatekeeper-intent"] == "order_status"
    for answer in (gated, passed):
        assert answer.status_code == 200
        assert b"forged" not in b"".join(value for _, value in answer.headers.raw)
    lines = [e for e in logs if e["event"] == "http.request"]
    assert [line["route"] for line in lines] == ["llm", None]
    assert lines[1]["message_id"] is None
    assert "forged" not in repr(logs)


async def test_no_client_credential_header_is_passed_upstream(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A passed-through request's key headers (x-api-key, api-key, ... also spelt with _) never
    reach the upstream; the proxy's own Authorization does."""
    keys = {
        "x-api-key": "sk-client-x",
        "api-key": "sk-client-azure",
        "api_key": "sk-client-cgi",
        "x-goog-api-key": "client-goog",
        "Ocp-Apim-Subscription-Key": "client-apim",
        "x-auth-token": "client-token",
        "authorization": "Bearer sk-client-bearer",
    }
    response = await client.post("/v1/embeddings", json={"input": "x"}, headers=keys)
    assert response.status_code == 200
    [sent] = upstream.requests
    assert sent.headers["authorization"] == "Bearer sk-upstream-key"
    assert "client" not in repr(sent.headers.raw)


@pytest.mark.parametrize(
    "given",
    [
        "shopbot-INBOUND-77",
        "req-shopbot-INBOUND-77",
        "sk-client-0001",
        "id-sk-client-0001",
        "client-0001",
        "upstream-key",
    ],
)
async def test_a_request_id_holding_a_configured_key_is_not_logged(
    gate: Gatekeeper, upstream: FakeUpstream, given: str
) -> None:
    """An x-request-id equal to, holding, or a long piece of an inbound key or the upstream key
    is not logged (whatever its shape); an ordinary id still is."""
    keys = [SecretStr(CLIENT_KEY), SecretStr("shopbot-INBOUND-77")]
    async with serving(gate, upstream, api_keys=keys) as proxied:
        auth = {"authorization": f"Bearer {CLIENT_KEY}"}
        with capture_logs() as logs:
            for request_id in (given, "lb-7:01"):
                await proxied.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": ORDER},
                    headers={**auth, "x-request-id": request_id},
                )
    lines = [e for e in logs if e["event"] == "http.request"]
    assert [line["request_id"] for line in lines] == [None, "lb-7:01"]
    assert given not in repr(logs)
