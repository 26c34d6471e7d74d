"""/readyz of a proxy that cannot forward: no upstream configured."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.settings import UpstreamSettings
from tests.support.proxy import JOKE, OFF_TOPIC_REPLY, ORDER, with_upstream


async def test_readyz_is_503_without_an_upstream_but_refusals_are_served(gate: Gatekeeper) -> None:
    """With no upstream configured, /readyz answers 503 not_ready with reason
    upstream_not_configured (every admitted request would be a 502), while the proxy still
    serves: an off-topic message gets its refusal, an admitted one the 502."""
    settings = with_upstream(gate.settings, UpstreamSettings(api_key=SecretStr("sk-unused")))
    app = create_app(settings, gate=gate)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            ready = await client.get("/readyz")
            refused = await client.post("/v1/chat/completions", json={"messages": JOKE})
            admitted = await client.post("/v1/chat/completions", json={"messages": ORDER})
    assert ready.status_code == 503
    assert ready.json() == {"status": "not_ready", "reason": "upstream_not_configured"}
    assert refused.json()["choices"][0]["message"]["content"] == OFF_TOPIC_REPLY
    assert admitted.status_code == 502
    assert admitted.json()["error"]["code"] == "upstream_not_configured"
