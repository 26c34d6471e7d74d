"""Fuzzing the gating proxy: hypothesis-generated hostile requests against the ASGI app
in-process (raw ASGI messages, so headers and bodies can be anything a socket could carry), the
upstream faked by ``httpx.MockTransport``. Whatever the request, the answer is never a 5xx.

Run it alone with ``pytest -m fuzz tests/fuzz``; ``GATEKEEPER_FUZZ_EXAMPLES=10000`` raises the
number of examples per test (default: a CI-sized run).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import UpstreamSettings
from gatekeeper.testing import make_gate
from tests.support.proxy import http_scope, request_messages, with_upstream

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("GATEKEEPER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CLIENT_KEY = "sk-fuzz"
UPSTREAM = "http://upstream.test/v1"
MAX_BODY = 64_000


# -- the app under test, one per module -----------------------------------------------------------


def upstream_answer(request: httpx.Request) -> httpx.Response:
    """A healthy upstream: a completion, an SSE stream, or a model list; anything else (passed
    through: other methods and /v1/ paths, any body) a 404."""
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
    gated = request.url.path.endswith(("/chat/completions", "/responses"))
    if request.method != "POST" or not gated:
        return httpx.Response(404, json={"error": {"message": "no such route"}})
    body = json.loads(request.read())
    if body.get("stream") is True:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        sse = f"data: {json.dumps({**chunk, 'choices': []})}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": []})


class App:
    """The proxy with its lifespan running on a loop of its own."""

    def __init__(self, gate: Gatekeeper) -> None:
        self.runner = asyncio.Runner()
        self.upstream = httpx.AsyncClient(transport=httpx.MockTransport(upstream_answer))
        proxy_settings = with_upstream(
            gate.settings,
            UpstreamSettings(base_url=UPSTREAM, max_retries=0, timeout=5),
            api_keys=[SecretStr(CLIENT_KEY)],
            max_body_bytes=MAX_BODY,
        )
        self.app = create_app(proxy_settings, gate=gate, upstream_client=self.upstream)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.runner.run(self.lifespan.__aenter__())

    def close(self) -> None:
        self.runner.run(self.lifespan.__aexit__(None, None, None))
        self.runner.run(self.upstream.aclose())
        self.runner.close()

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
        *,
        disconnect: bool = False,
    ) -> int:
        """Send one request as raw ASGI messages; the answer's status (after its whole body)."""
        return self.runner.run(self._request(method, path, headers, chunks, disconnect))

    async def _request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
        disconnect: bool,
    ) -> int:
        incoming = request_messages(chunks, disconnect=disconnect)
        statuses: list[int] = []
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop(0)
            await complete.wait()  # as a server does: disconnect only once the answer is sent
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete.set()

        scope = http_scope(method, path, path.encode("utf-8", "surrogateescape"), headers)
        await asyncio.wait_for(self.app(scope, receive, send), timeout=30)
        assert len(statuses) == 1, statuses
        return statuses[0]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    gate: Gatekeeper = make_gate(Path(tmp_path_factory.mktemp("fuzz")))
    gate.index()
    served = App(gate)
    yield served
    served.close()


# -- strategies ------------------------------------------------------------------------------------

WORDS = ["where is my order", "tell me a joke", "hello", "i want a refund", "write a poem", "NW-1"]
KEYS = ["messages", "role", "content", "model", "stream", "n", "type", "text", "x"]

scalar_text = st.one_of(
    st.sampled_from(
        [
            "null",
            "true",
            "false",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e400",
            "-0",
            "0.1",
            "1E+2",
            '"\\ud800"',
            '"a\\udfffb"',
            '"\\ud83d\\ude00"',
            '"\\u0000"',
            "9" * 4301,
            '"' + "x" * 5000 + '"',
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=30).map(json.dumps),
    st.sampled_from(WORDS).map(json.dumps),
)


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


# JSON-like text, hostile on purpose: duplicate keys, non-finite numbers, lone surrogates, huge
# integers, long strings.
json_text = st.recursive(
    scalar_text,
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), children), max_size=5).map(
            _object
        ),
    ),
    max_leaves=20,
)

any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)
texts = st.sampled_from(WORDS) | st.text(max_size=60) | st.just("order " * 1000)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio"]) | any_json},
    optional={"text": texts | any_json, "image_url": any_json},
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | any_json},
    optional={
        "content": texts | st.lists(part | texts, max_size=3) | any_json,
        "name": st.text(max_size=10) | any_json,
        "tool_calls": any_json,
    },
)
chat = st.fixed_dictionaries(
    {"messages": st.lists(message, max_size=5) | any_json},
    optional={
        "model": st.text(max_size=20) | any_json,
        "stream": st.booleans() | any_json,
        "n": st.integers(-3, 200) | any_json,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | any_json})
        | any_json,
        "temperature": st.floats() | any_json,
        "tools": any_json,
        "user": st.text(max_size=10),
    },
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """Chat requests of the right rough shape with wrong types and odd values inside."""
    payload = draw(chat)
    return json.dumps(payload, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> bytes:
    """A body with bytes inserted, replaced or cut: invalid UTF-8, broken JSON, cut escapes."""
    body = bytearray(draw(bodies))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "replace", "cut"]))
        noise = draw(st.binary(min_size=1, max_size=4))
        if action == "insert":
            body[at:at] = noise
        elif action == "replace":
            body[at : at + len(noise)] = noise
        else:
            del body[at : at + draw(st.integers(1, 8))]
    return bytes(body)


deep = st.integers(100, 50_000).flatmap(
    lambda depth: st.sampled_from(
        [
            b'{"messages":' + b"[" * depth + b"]" * depth + b"}",
            b'{"messages":[{"role":"user","content":"hi","x":'
            + b'{"a":' * depth
            + b"1"
            + b"}" * depth
            + b"}]}",
            b"[" * depth,
        ]
    )
)
bodies = st.one_of(
    chat_bodies(),
    json_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda inner, extra: f'{{"messages":{inner},"x":{extra}}}'.encode("utf-8", "surrogatepass"),
        json_text,
        json_text,
    ),
    mutated(chat_bodies()),
    st.binary(max_size=200),
    deep,
)

header_value = st.binary(max_size=40) | st.sampled_from(
    [b"application/json", b"text/plain", b"application/json; charset=utf-16", b"", b"\xff\xfe"]
)
auth = st.sampled_from(
    [
        f"Bearer {CLIENT_KEY}".encode(),
        f"bearer   {CLIENT_KEY}  ".encode(),
        b"Bearer",
        b"Bearer sk-wrong",
        b"Basic abc",
        b"Bearer \xff\xfe\x00",
        b"",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[bytes, bytes]], list[bytes], bool]:
    body = draw(bodies)
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "HEAD", "OPTIONS", "DELETE"]))
    path = draw(
        st.sampled_from(
            ["/v1/chat/completions"] * 6
            + ["/v1/responses"] * 4
            + ["/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/"]
            + ["/v1/embeddings", "/v1/files/f-1?limit=2", "/v1/completions", "/v1/../x"]
        )
        | st.text(max_size=20).map(lambda p: "/" + p)
    )
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 9)):
        headers.append((b"authorization", draw(auth)))
    headers.append((b"content-type", draw(header_value)))
    length = draw(st.sampled_from(["exact", "none", "short", "long", "junk"]))
    declared = {
        "exact": str(len(body)).encode(),
        "short": str(max(0, len(body) - 3)).encode(),
        "long": str(len(body) + 1000).encode(),
        "junk": draw(st.sampled_from([b"-1", b"abc", b"99999999999999999999", b" 12"])),
    }.get(length)
    if declared is not None:
        headers.append((b"content-length", declared))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.binary(min_size=1, max_size=12).map(bytes.lower))
        headers.append((name, draw(header_value)))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    disconnect = draw(st.integers(0, 19)) == 0
    return method, path, headers, chunks, disconnect


# -- the properties --------------------------------------------------------------------------------


@FUZZ
@given(request=requests())
def test_no_request_is_ever_a_5xx(app: App, request: Any) -> None:
    """Any method, path, headers and body (chunked anyhow, or cut by a disconnect): < 500."""
    method, path, headers, chunks, disconnect = request
    status = app.request(method, path, headers, chunks, disconnect=disconnect)
    assert status < 500 or (disconnect and status == 499), status


@FUZZ
@given(body=chat_bodies())
def test_chat_shaped_requests_are_never_a_5xx(app: App, body: bytes) -> None:
    """Chat requests with valid keys and JSON but arbitrary values inside: < 500."""
    headers = [
        (b"authorization", f"Bearer {CLIENT_KEY}".encode()),
        (b"content-type", b"application/json"),
    ]
    assert app.request("POST", "/v1/chat/completions", headers, [body]) < 500


@FUZZ
@given(text=json_text)
def test_hostile_json_anywhere_is_never_a_5xx(app: App, text: str) -> None:
    """Hostile JSON (duplicate keys, NaN, surrogates, huge numbers) in messages or beside them."""
    headers = [(b"authorization", f"Bearer {CLIENT_KEY}".encode())]
    for body in (
        f'{{"messages":[{{"role":"user","content":"where is my order","x":{text}}}]}}',
        f'{{"messages":[{{"role":"user","content":{text}}}],"stream":true}}',
        f'{{"messages":{text}}}',
        # echoed back in the gate's own answer (plain and streamed)
        f'{{"model":{text},"messages":[{{"role":"user","content":"tell me a joke"}}]}}',
        f'{{"model":{text},"messages":[{{"role":"user","content":"hello"}}],"stream":true,'
        f'"stream_options":{text},"n":{text}}}',
    ):
        status = app.request(
            "POST", "/v1/chat/completions", headers, [body.encode("utf-8", "surrogatepass")]
        )
        assert status < 500, (status, body[:200])
