"""The scale-out topology on loopback: one real Chroma server (`chroma run`), two stateless
proxy replicas (uvicorn) serving the same catalog file from it, a recording upstream, and an
``index --rebuild`` while both serve concurrent clients: no 5xx, the same decisions everywhere."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy import create_app
from gatekeeper.interfaces.proxy.state import build_gate
from gatekeeper.settings import Settings, UpstreamSettings
from gatekeeper.testing import HashingEmbedder, LoopbackServer, RecordingUpstream
from tests.integration._processes import chroma_server

pytestmark = pytest.mark.integration

TINY = {
    "domain": "a small test shop",
    "intents": [
        {"name": "order_status", "exemplars": ["where is my order", "track my order"]},
        {"name": "refund_request", "exemplars": ["i want a refund", "refund my money"]},
        {"name": "greeting", "reply": "Hello! How can I help?", "exemplars": ["hello", "hi"]},
    ],
    "off_topic": {
        "reply": "Sorry, I only help with orders.",
        "exemplars": ["tell me a joke", "what is the weather today", "write a poem"],
    },
}
EXPECTED = {
    "where is my order": "llm",
    "i want a refund": "llm",
    "tell me a joke": "off_topic",
    "write a poem please": "off_topic",
    "hello": "canned",
}


def replica_settings(tmp_path: Path, port: int, upstream: str) -> Settings:
    """What every replica (and the indexer) is given: the same catalog path, the same Chroma
    server, the same embedder (the store name derives from the first and the last)."""
    catalog = tmp_path / "catalog.yaml"
    if not catalog.exists():
        catalog.write_text(json.dumps(TINY))
    settings = Settings(
        data_dir=tmp_path / "unused",
        catalog=catalog,
        store={"host": "127.0.0.1", "port": port, "auto_sync": False},
        gate={
            "threshold": 0.35,
            "rule": "contrast",
            "on_error": "fail_closed",
            "allow_uncalibrated": True,
        },
    )
    return settings.model_copy(
        update={"upstream": UpstreamSettings(base_url=upstream, api_key=SecretStr("sk-up"))}
    )


def ask(url: str, text: str, kind: str, stream: bool) -> tuple[int, str | None, str | None]:
    if kind == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": text}]}
    else:
        path, body = "/v1/responses", {"input": text}
    body.update(model="m", stream=stream)
    response = httpx.post(url + path, json=body, timeout=30)
    if stream and response.status_code == 200:  # a cut stream ends with an error event
        assert '"code": "upstream_' not in response.text, response.text
    return (
        response.status_code,
        response.headers.get("x-gatekeeper-route"),
        response.headers.get("x-gatekeeper-gate-error"),
    )


def test_two_replicas_one_chroma_server_through_rebuilds(tmp_path: Path) -> None:
    with chroma_server(tmp_path / "chroma") as port, RecordingUpstream() as upstream:
        settings = replica_settings(tmp_path, port, upstream.base_url)
        indexer = Gatekeeper.from_settings(settings, embedder=HashingEmbedder())
        indexer.index()  # index once, before the replicas start (auto_sync is off)

        replicas = [
            LoopbackServer(create_app(settings, gate=build_gate(settings, embedder=emb)))
            for emb in (HashingEmbedder(), HashingEmbedder())
        ]
        for replica in replicas:
            replica.start()
        try:
            stop = threading.Event()
            rebuilds = []

            def rebuild() -> None:
                while not stop.is_set() and len(rebuilds) < 3:
                    rebuilds.append(indexer.index(rebuild=True).rebuilt)

            jobs = [
                (replica.url, text, kind, stream)
                for _ in range(6)
                for replica in replicas
                for text in EXPECTED
                for kind in ("chat", "responses")
                for stream in (False, True)
            ]
            rebuilder = threading.Thread(target=rebuild)
            rebuilder.start()
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda job: (job, ask(*job)), jobs))
            stop.set()
            rebuilder.join(60)
        finally:
            for replica in replicas:
                replica.stop()

    assert rebuilds and all(rebuilds)
    failures = [(job, got) for job, got in results if got[0] >= 500 or got[2] is not None]
    assert failures == []
    decisions: dict[str, set[Any]] = {}
    for (_, text, _, _), (_, route, _) in results:
        decisions.setdefault(text, set()).add(route)
    assert decisions == {text: {route} for text, route in EXPECTED.items()}
    forwarded = [c for c in upstream.calls if c.get("messages") or c.get("input")]
    assert len(forwarded) == sum(1 for _, got in results if got[1] == "llm")
