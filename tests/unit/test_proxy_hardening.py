"""Hardening found by a security walkthrough, in-process (the app and fake upstream of
``tests/support``): what a passed-through request may not carry to the upstream with the proxy's
key (a body where stored objects are only read, a method override in the query, a rewrite or
billing header, a dot segment in any spelling), and the proxy's key in any spelling an upstream
error may echo it in."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy import endpoints
from gatekeeper.interfaces.proxy.state import build_upstream_client
from gatekeeper.settings import load_settings
from tests.support.fake_upstream import FakeUpstream, completion
from tests.support.proxy import ORDER, raw_call, serving, status_of

CHAT = b'{"model":"m","messages":[{"role":"user","content":"write me a poem"}]}'


@pytest.fixture
def upstream() -> FakeUpstream:
    upstream = FakeUpstream()
    upstream.handler = lambda request: httpx.Response(200, json={"id": "x", "object": "list"})
    return upstream


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/chat/completions", CHAT),
        ("DELETE", "/v1/chat/completions", CHAT),
        ("HEAD", "/v1/chat/completions", CHAT),
        ("GET", "/v1/chat/completions/chatcmpl-1", CHAT),
        ("GET", "/v1/responses", b'{"model":"m","input":"write me a poem"}'),
        ("POST", "/v1/responses/resp_1/cancel", b'{"input":"write me a poem"}'),
        ("GET", "/v1/models/m", b'{"contents":"write me a poem"}'),
        ("GET", "/v1/models", b'{"contents":"write me a poem"}'),
    ],
)
async def test_a_body_on_a_stored_object_path_is_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream, method: str, path: str, body: bytes
) -> None:
    """A body sent where stored objects are only read, deleted or cancelled is a 400, never
    forwarded (a lenient upstream reads a chat in it as a generation request)."""
    response = await client.request(method, path, content=body)
    assert response.status_code == 400, response.text
    if method != "HEAD":
        assert response.json()["error"]["code"] == "unexpected_body"
    chunked = await client.request(method, path, content=chunks(body))  # no content-length
    assert chunked.status_code == 400
    assert upstream.requests == []


async def test_stored_objects_are_still_read_deleted_and_cancelled(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """The official client's calls on stored objects (no body, or an empty one) still pass."""
    sdk = openai.AsyncOpenAI(
        base_url="http://localhost/v1", api_key="unused", http_client=client, max_retries=0
    )
    await sdk.responses.with_raw_response.retrieve("resp_1")
    await sdk.responses.with_raw_response.delete("resp_1")
    await sdk.responses.with_raw_response.cancel("resp_1")
    await sdk.chat.completions.with_raw_response.list()
    await sdk.models.with_raw_response.retrieve("m")
    assert (await client.request("GET", "/v1/models/m", content=b"")).status_code == 200
    assert [(r.method, r.url.path, r.content) for r in upstream.requests] == [
        ("GET", "/v1/responses/resp_1", b""),
        ("DELETE", "/v1/responses/resp_1", b""),
        ("POST", "/v1/responses/resp_1/cancel", b""),
        ("GET", "/v1/chat/completions", b""),
        ("GET", "/v1/models/m", b""),
        ("GET", "/v1/models/m", b""),
    ]


@pytest.mark.parametrize(
    "query", ["_method=POST", "a=1&_METHOD=post", "%5Fmethod=POST", "x-http-method-override=POST"]
)
async def test_a_method_override_in_the_query_is_refused(
    client: httpx.AsyncClient, upstream: FakeUpstream, query: str
) -> None:
    """``?_method=POST`` (which frameworks read as the method) is a 400 on any passed-through
    path, never forwarded; other query strings pass as sent."""
    for path in ("/v1/chat/completions", "/v1/files", "/v1/models"):
        response = await client.get(f"{path}?{query}")
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "method_override"
    assert upstream.requests == []
    assert (await client.get("/v1/files?purpose=assistants&method=x")).status_code == 200


async def test_rewrite_and_billing_headers_are_not_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Headers by which a server serves another path than the request's (``X-Original-URL``,
    ``X-Rewrite-URL``, also spelt with ``_``) and the client's choice of the OpenAI
    organization or project billed on the proxy's key never reach the upstream."""
    dropped = {
        "x-original-url": "/v1/chat/completions",
        "X-Rewrite-URL": "/v1/chat/completions",
        "x_original_url": "/v1/chat/completions",
        "x-forwarded-prefix": "/v1/chat",
        "OpenAI-Organization": "org-client",
        "OpenAI-Project": "proj_client",
        "openai_project": "proj_client",
        "x_http_method_override": "POST",
    }
    response = await client.get("/v1/models/m", headers={**dropped, "openai-beta": "x"})
    assert response.status_code == 200
    [sent] = upstream.requests
    assert sent.headers["openai-beta"] == "x"
    forwarded = {name.lower().replace("_", "-") for name in sent.headers}
    assert not forwarded & {name.lower().replace("_", "-") for name in dropped}


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/files/..;/chat/completions",
        b"/v1/files/%2e%2e%3b/chat/completions",
        b"/v1/files/..%3Bx/chat/completions",
        b"/v1/files/..%00/chat/completions",
        b"/v1/files/..%20/chat/completions",
        b"/v1/files/%20../chat/completions",
        b"/v1/files/..%09/chat/completions",
        b"/v1/files/%E2%80%8B../chat/completions",
        b"/v1/files/.%E2%80%8B./chat/completions",
        b"/v1/files/%C0%AE%C0%AE/chat/completions",  # overlong UTF-8 for '..'
        b"/v1/files/%C0%AE/chat/completions",
        b"/v1/files/%FF/x",  # not UTF-8 at all
        b"/v1/files/%252e%252e/chat/completions",  # decoded twice by some upstreams
        b"/v1/files/..%5Cchat/completions",  # a backslash read as a slash
        b"/v1/files/...;x/chat/completions",
    ],
)
async def test_dot_segments_in_any_spelling_never_pass(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    path: bytes,
) -> None:
    """A segment an upstream may read as ``..`` (after the clean-up of canonical_path, an
    overlong or invalid UTF-8 percent-encoding, a second decoding, a backslash) is a 400,
    never forwarded with the proxy's key."""
    sent, _ = await raw_call(gate, upstream, path, [CHAT])
    assert status_of(sent) == 400
    assert upstream.requests == []


@pytest.mark.parametrize("path", [b"/v1/models%ff", b"/v1/files/%FF/x", b"/v1/files/%C0%AE/x"])
async def test_a_path_that_is_not_utf8_is_refused_as_such(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    path: bytes,
) -> None:
    """A percent-escape that is not UTF-8 is a 400 invalid_path saying so (it said "dot
    segments are not allowed", which the path has none of)."""
    sent, _ = await raw_call(gate, upstream, path, [CHAT])
    assert status_of(sent) == 400
    error = json.loads(b"".join(m.get("body", b"") for m in sent))["error"]
    assert error["code"] == "invalid_path"
    assert "not UTF-8" in error["message"] and "dot" not in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "gzip, identity"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_compressed_body_is_refused_unread(
    gate: Gatekeeper, upstream: FakeUpstream, encoding: str, path: str
) -> None:
    """A gated request whose body is compressed (Content-Encoding) is a 415
    unsupported_content_encoding, never decompressed nor forwarded (it was a 400 about the
    body's UTF-8); an identity encoding is read as usual."""
    import gzip

    body = {"model": "m", "messages": ORDER, "input": ORDER}
    packed = gzip.compress(json.dumps(body).encode())
    headers = {"content-type": "application/json", "content-encoding": encoding}
    async with serving(gate, upstream) as client:
        answer = await client.post(path, content=packed, headers=headers)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"]["code"] == "unsupported_content_encoding"
        assert "compressed" in answer.json()["error"]["message"]
        assert upstream.requests == []
        plain = {**headers, "content-encoding": "identity"}
        sent = await client.post(path, content=json.dumps(body).encode(), headers=plain)
        assert sent.status_code == 200


@pytest.mark.parametrize(
    "path", [b"/v1/files/file-1..x", b"/v1/files/.hidden", b"/v1/files/%C3%A9t%C3%A9"]
)
async def test_names_with_dots_or_utf8_still_pass(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    path: bytes,
) -> None:
    """Dots inside a name and valid UTF-8 are no dot segment."""
    sent, _ = await raw_call(gate, upstream, path, [b"{}"])
    assert status_of(sent) == 200
    assert [r.url.raw_path for r in upstream.requests] == [path]


KEY = "sk-proj/Ab+c=d_e-f~9"


def _json_slashes(key: str) -> str:
    return key.replace("/", "\\/")


def _unicode_escapes(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in key)


@pytest.mark.parametrize(
    "spell",
    [
        _json_slashes,  # PHP's json_encode
        lambda key: json.dumps(key, ensure_ascii=True)[1:-1].replace("/", "\\u002F"),
        _unicode_escapes,
        lambda key: quote(key, safe=""),
        lambda key: "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in key),
        lambda key: "".join(f"%{ord(c):02X}" for c in key),
        lambda key: key.replace("/", "&#x2F;"),
    ],
    ids=["json-slash", "json-u", "u-all", "percent", "percent-lower", "percent-all", "html"],
)
async def test_an_upstream_error_echoing_an_encoded_key_does_not_return_it(
    gate: Gatekeeper,
    upstream: FakeUpstream,
    spell: Callable[[str], str],
) -> None:
    """An upstream 4xx whose body repeats the proxy's key JSON-escaped, percent-encoded or as
    character references reaches the client with the key replaced by ***."""
    echoed = spell(KEY)
    assert echoed != KEY
    upstream.handler = lambda request: httpx.Response(
        400,
        content=b'{"error": {"message": "bad key ' + echoed.encode() + b'"}}',
        headers={"content-type": "application/json", "x-echo": echoed},
    )
    async with serving(gate, upstream, upstream_key=KEY) as client:
        answers = [
            await client.get("/v1/files/file-1"),
            await client.post("/v1/chat/completions", json={"model": "m", "messages": ORDER}),
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert echoed not in answer.text and "bad key ***" in answer.text
        assert answer.headers["x-echo"] == "***"


async def test_an_upstream_error_body_is_passed_on_up_to_its_limit(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """A 4xx error body of MAX_ERROR_BYTES reaches the client as sent; one byte more is replaced
    by the proxy's error JSON under the same status, the upstream's other headers kept."""
    from gatekeeper.interfaces.proxy.upstream import MAX_ERROR_BYTES

    async with serving(gate, upstream) as client:
        for size in (MAX_ERROR_BYTES, MAX_ERROR_BYTES + 1):
            upstream.handler = lambda request, size=size: httpx.Response(
                429, content=b"x" * size, headers={"content-type": "text/plain", "retry-after": "7"}
            )
            answer = await client.post(
                "/v1/chat/completions", json={"model": "m", "messages": ORDER}
            )
            assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
            if size == MAX_ERROR_BYTES:
                assert answer.content == b"x" * size
            else:
                assert answer.headers["content-type"] == "application/json"
                assert answer.json()["error"]["code"] == "upstream_error_too_long"


async def test_passed_through_requests_cannot_take_every_upstream_connection(
    gate: Gatekeeper,
    upstream: FakeUpstream,
) -> None:
    """Beyond server.max_passthrough passed-through requests in progress, another is a 503
    with Retry-After at once, while gated chats are still forwarded; a slot is given back when
    its answer is sent, also after an upstream failure or a client's 4xx."""
    release, both_held, hung = asyncio.Event(), asyncio.Event(), []

    async def hanging(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/hang"):
            hung.append(request)
            if len(hung) == 2:
                both_held.set()
            await release.wait()
        if request.url.path.endswith("/fail"):
            raise httpx.ConnectError("refused", request=request)
        if request.url.path.endswith("/missing"):
            return httpx.Response(404, json={"error": {"message": "no"}})
        return httpx.Response(200, json=completion())

    upstream.handler = hanging  # type: ignore[assignment]  # MockTransport awaits it
    async with serving(gate, upstream, max_passthrough=2) as client:
        held = [asyncio.create_task(client.get("/v1/files/hang")) for _ in range(2)]
        await asyncio.wait_for(both_held.wait(), 5)
        for busy in [client.get("/v1/files/x"), client.get("/v1/models")]:
            refused = await asyncio.wait_for(busy, 5)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "passthrough_busy"
        chat = await client.post("/v1/chat/completions", json={"model": "m", "messages": ORDER})
        assert chat.status_code == 200 and chat.headers["x-gatekeeper-route"] == "llm"
        release.set()
        assert [(await task).status_code for task in held] == [200, 200]
        for path, status in [("fail", 502), ("missing", 404)] * 2 + [("x", 200)] * 3:
            assert (await client.get(f"/v1/files/{path}")).status_code == status
        assert (await client.get("/v1/models")).status_code == 200


async def test_the_passthrough_cap_leaves_room_in_the_upstream_pool() -> None:
    """upstream.max_connections sizes the pool; server.max_passthrough must stay below it."""
    settings = load_settings(None, upstream={"max_connections": 300})
    assert settings.server.max_passthrough < settings.upstream.max_connections == 300
    pooled = build_upstream_client(settings.upstream)
    assert pooled._transport._inner.limits.max_connections == 300  # type: ignore[attr-defined]
    await pooled.aclose()
    with pytest.raises(ConfigError, match=r"max_passthrough \(300\) must be below"):
        load_settings(None, server={"max_passthrough": 300}, upstream={"max_connections": 300})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_large_body_is_parsed_off_the_event_loop(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """A gated body of 2 MB (over requests.THREADED_PARSE_BYTES) is parsed in a worker thread
    (an 11 MB chat took the event loop for a second), a small one on the loop; both are decided
    the same."""
    parsed_in: list[int] = []
    for name in ("parse_chat_request", "parse_responses_request"):
        parse = getattr(endpoints, name)
        monkeypatch.setattr(endpoints, name, _spied(parse, parsed_in))
    key = "messages" if path.endswith("completions") else "input"
    small = {"model": "m", key: ORDER}
    large = {"model": "m", key: ORDER * 50_000}
    for body in (small, large):
        content = json.dumps(body).encode()
        response = await client.post(path, content=content)
        assert response.status_code == 200, response.text
        assert response.headers["x-gatekeeper-route"] == "llm"
    assert len(content) > 2_000_000
    assert parsed_in[0] == threading.get_ident() != parsed_in[1]


def _spied(parse: Callable[[bytes], Any], threads: list[int]) -> Callable[[bytes], Any]:
    def spied(body: bytes) -> Any:
        threads.append(threading.get_ident())
        return parse(body)

    return spied
