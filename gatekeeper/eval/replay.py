"""``eval --replay``: every message through a real gating proxy on loopback, calls counted
upstream."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gatekeeper.decision import Decision, Route
from gatekeeper.errors import DatasetError
from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.gates import check_lengths, judge_all
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.run import measure_latency
from gatekeeper.eval.schema import EvalOptions, EvalRun, Outcome

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper


REPLAY_METHOD = (
    "requests the RecordingUpstream received, each message sent as a chat request to the "
    "gating proxy (uvicorn on loopback) in front of it; llm_calls_saved = n_queries - llm_calls"
)


def run_replay(
    gate: Gatekeeper,
    dataset: Dataset,
    options: EvalOptions | None = None,
    task: TaskFactory = no_progress,
) -> EvalRun:
    """Every example as a chat request through a real gating proxy in front of a recording
    upstream, both on loopback; ``llm_calls`` is what the upstream recorded. Decisions are read
    from the proxy's ``x-gatekeeper-*`` headers (scores to 4 decimals)."""
    import httpx

    from gatekeeper.interfaces.openai_backend import as_chat_messages
    from gatekeeper.interfaces.proxy.app import create_app
    from gatekeeper.testing import LoopbackServer, RecordingUpstream

    options = options or EvalOptions()
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    advance, set_total = task(f"replaying {dataset.name} through the proxy")
    set_total(len(dataset))
    outcomes: list[Outcome] = []
    judged = judge_all(gate, dataset, chunk_size=options.chunk_size)  # for the sweep
    started = time.perf_counter()
    with RecordingUpstream() as upstream:
        proxied = _replay_gate(gate, upstream.base_url)
        app = create_app(proxied.settings, gate=proxied)
        with LoopbackServer(app) as proxy, httpx.Client(base_url=proxy.url, timeout=120) as http:
            for example, turns in zip(dataset.examples, judged, strict=True):
                before = len(upstream.calls)
                body = {"model": "replay", "messages": as_chat_messages(example.as_input())}
                response = http.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    raise DatasetError(
                        f"dataset {example.where}: the proxy answered {response.status_code}: "
                        f"{response.text[:200]}"
                    )
                decision = decision_from_headers(response.headers)
                outcomes.append(
                    Outcome(example, decision, len(upstream.calls) > before, tuple(turns))
                )
                advance(1)
        llm_calls = len(upstream.calls)
    run = EvalRun(
        outcomes=outcomes,
        llm_calls=llm_calls,
        seconds=time.perf_counter() - started,
        counting_method=REPLAY_METHOD,
    )
    run.gate_ms, run.embed_ms = measure_latency(gate, dataset, options, task)
    return run


def _replay_gate(gate: Gatekeeper, upstream_url: str) -> Gatekeeper:
    """``gate`` (model and store shared) configured to forward to ``upstream_url``, no auth."""
    from pydantic import SecretStr

    from gatekeeper.gate import Gatekeeper

    upstream = gate.settings.upstream.model_copy(
        update={"base_url": upstream_url, "api_key": SecretStr("replay")}
    )
    server = gate.settings.server.model_copy(update={"api_keys": []})
    settings = gate.settings.model_copy(update={"upstream": upstream, "server": server})
    return Gatekeeper(
        settings=settings, catalog=gate.catalog, embedder=gate.embedder, store=gate.store
    )


def decision_from_headers(headers: Mapping[str, str]) -> Decision:
    """The decision a proxy answer's ``x-gatekeeper-*`` headers describe: every header
    :func:`~gatekeeper.interfaces.proxy.answers.decision_headers` writes, the follow-up flag
    (a chat's turn forwarded although it would be refused alone) and the nearest intent of a
    refused message included (the replayed report counted no follow-up at all)."""
    from urllib.parse import unquote

    intent = unquote(headers.get("x-gatekeeper-intent", "none"))
    served = None if intent == "none" else intent
    nearest = headers.get("x-gatekeeper-nearest-intent")  # only when it differs from the intent
    route = Route(headers["x-gatekeeper-route"])
    return Decision(
        route=route,
        intent=served,
        score=float(headers["x-gatekeeper-score"]),
        threshold=float(headers["x-gatekeeper-threshold"]),
        reason=f"replayed through the proxy: {route.value}",
        nearest_intent=unquote(nearest) if nearest is not None else served,
        followup=headers.get("x-gatekeeper-followup") == "true",
        shadow=headers.get("x-gatekeeper-shadow") == "true",
        gate_error=headers.get("x-gatekeeper-gate-error"),
        message_id=headers.get("x-gatekeeper-message-id"),
    )
