"""What a web browser may do with the proxy (in-process, the app and fake upstream of
``tests/support``): nothing by default (no CSRF from a page, no DNS rebinding of a proxy on
loopback); a listed origin gets CORS; a listed host name is served."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ORDER, sdk, serving

CHAT = b'{"model":"m","messages":[{"role":"user","content":"where is my order"}]}'
EVIL = "http://evil.example"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": EVIL, "content-type": "text/plain"},
        {"origin": EVIL, "content-type": "application/x-www-form-urlencoded"},
        {"origin": "null"},
        {"host": "evil.example", "content-type": "text/plain"},
        {"host": "evil.example:8080"},
        {"host": "127.0.0.1.evil.example"},
    ],
)
async def test_a_browser_page_cannot_use_the_default_proxy(
    client: httpx.AsyncClient, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    """With no settings, a request with an Origin, or a Host that is not loopback (a rebound
    name), is a 403 in OpenAI's shape naming the setting; nothing is decided or forwarded."""
    for path in ("/v1/chat/completions", "/v1/embeddings", "/metrics"):
        answer = await client.post(path, content=CHAT, headers=headers)
        assert answer.status_code == 403, answer.text
        error = answer.json()["error"]
        assert error["code"] in {"origin_not_allowed", "host_not_allowed"}
        assert "server.allowed_" in error["message"]
        assert "x-gatekeeper-route" not in answer.headers
    assert upstream.requests == []


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "127.0.0.2:1", "[::1]:8080"])
async def test_api_clients_on_loopback_are_served(
    client: httpx.AsyncClient, upstream: FakeUpstream, host: str
) -> None:
    """A loopback Host (any port) without Origin is served, as the openai SDK sends it."""
    answer = await client.post("/v1/chat/completions", content=CHAT, headers={"host": host})
    assert answer.status_code == 200, answer.text
    completion = await sdk(client).chat.completions.create(model="m", messages=ORDER)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo"


async def test_options_is_answered_by_the_proxy_not_the_upstream(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """OPTIONS never reaches the upstream: a 405 without Origin, a 403 from a page; an
    upstream's access-control-* headers are dropped from its answers."""

    def cors(request: httpx.Request) -> httpx.Response:
        plain = upstream.default(request)
        headers = {**plain.headers, "access-control-allow-origin": "*"}
        return httpx.Response(200, content=plain.content, headers=headers)

    upstream.handler = cors
    plain = await client.options("/v1/models")
    assert plain.status_code == 405 and plain.json()["error"]["code"] == "method_not_allowed"
    preflight = {"origin": EVIL, "access-control-request-method": "POST"}
    page = await client.options("/v1/chat/completions", headers=preflight)
    assert page.status_code == 403 and "access-control-allow-origin" not in page.headers
    assert upstream.requests == []
    for answer in (
        await client.post("/v1/chat/completions", content=CHAT),
        await client.get("/v1/models"),
    ):
        assert answer.status_code == 200
        assert not [name for name in answer.headers if name.startswith("access-control-")]


async def test_a_listed_origin_gets_cors_and_its_preflight_answered(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """server.allowed_origins: that origin's preflight is a 204 with CORS headers and its
    requests are served with access-control-allow-origin; other origins stay refused."""
    shop = "https://shop.example"
    async with serving(gate, upstream, allowed_origins=[shop]) as proxied:
        asked = {
            "origin": shop,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        preflight = await proxied.options("/v1/chat/completions", headers=asked)
        served = await proxied.post("/v1/chat/completions", content=CHAT, headers={"origin": shop})
        refused = await proxied.post("/v1/chat/completions", content=CHAT, headers={"origin": EVIL})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == shop
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert served.status_code == 200 and served.headers["access-control-allow-origin"] == shop
    assert served.headers["vary"] == "Origin"
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("options", "host", "status"),
    [
        ({"allowed_hosts": ["gk.internal"]}, "gk.internal:443", 200),
        ({"allowed_hosts": ["GK.Internal"]}, "gk.INTERNAL", 200),  # names are caseless
        ({"allowed_hosts": ["gk.internal"]}, "evil.example", 403),
        ({"host": "0.0.0.0"}, "evil.example", 200),  # serving the network: names vary
        ({"host": "0.0.0.0", "allowed_hosts": ["gk.internal"]}, "evil.example", 403),
        ({"host": "0.0.0.0", "allowed_hosts": ["gk.internal"]}, "localhost:8080", 200),
    ],
)
async def test_host_names_follow_the_settings(
    gate: Gatekeeper, upstream: FakeUpstream, options: dict[str, Any], host: str, status: int
) -> None:
    """server.allowed_hosts adds names to loopback's; off loopback no Host is checked unless
    names are listed."""
    async with serving(gate, upstream, **options) as proxied:
        answer = await proxied.post("/v1/chat/completions", content=CHAT, headers={"host": host})
    assert answer.status_code == status, answer.text


def test_origin_and_host_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEKEEPER_SERVER__ALLOWED_ORIGINS/HOSTS are comma-separated; an origin with a path or
    without a scheme, or a host with a port, is a settings error."""
    from gatekeeper.errors import ConfigError

    monkeypatch.setenv("GATEKEEPER_SERVER__ALLOWED_ORIGINS", "https://Shop.example/, http://a:3000")
    monkeypatch.setenv("GATEKEEPER_SERVER__ALLOWED_HOSTS", "GK.internal, [fd00::1]")
    server = load_settings(None).server
    assert server.allowed_origins == ["https://shop.example", "http://a:3000"]
    assert server.allowed_hosts == ["gk.internal", "[fd00::1]"]
    for name, value in [
        ("ORIGINS", "https://shop.example/chat"),
        ("ORIGINS", "shop.example"),
        ("ORIGINS", "*"),
        ("HOSTS", "gk.internal:8080"),
        ("HOSTS", "http://gk.internal"),
    ]:
        monkeypatch.setenv(f"GATEKEEPER_SERVER__ALLOWED_{name}", value)
        with pytest.raises(ConfigError, match=f"allowed_{name.lower()}"):
            load_settings(None)
        monkeypatch.delenv(f"GATEKEEPER_SERVER__ALLOWED_{name}")


def test_the_served_address_decides_the_host_check() -> None:
    """`serve --host` overrides server.host in the settings the app is built with, so a proxy
    started on 127.0.0.1 checks Host headers whatever its settings file says."""
    from gatekeeper.interfaces.proxy.runner import serving_settings
    from gatekeeper.settings import Settings

    settings = Settings(server={"host": "0.0.0.0", "port": 9000})
    assert serving_settings(settings, "127.0.0.1", None).server.host == "127.0.0.1"
    assert serving_settings(settings, None, 8081).server.model_dump(include={"host", "port"}) == {
        "host": "0.0.0.0",
        "port": 8081,
    }
