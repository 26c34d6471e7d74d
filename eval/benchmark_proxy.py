"""What the gating proxy adds to a chat request, measured on loopback.

    .venv/bin/python eval/benchmark_proxy.py [--n 200] [--concurrency 8]

Starts a ``RecordingUpstream`` (an instant OpenAI-compatible upstream, in this process) and the
real proxy (``gatekeeper serve``, its own process, as deployed) with the default model and shop
catalog, both on 127.0.0.1, and times the official ``openai`` client, one request at a time:

* ``direct``: straight to the upstream (the baseline: HTTP + JSON only);
* ``admitted``: through the proxy, an in-domain message (gate + forward);
* ``blocked``: through the proxy, an off-topic message (gate + local answer, no upstream call);
* ``gate``: ``Gatekeeper.check`` of the admitted message in this process (no HTTP), after the
  proxy has stopped.

What the proxy's HTTP path adds to a decision is then ``admitted - direct - gate`` (p50s).

Then ``--concurrency`` client threads send requests at once, for throughput: every request a
different message (the bundled test split's texts, cycled), so the proxy's micro-batches cannot
collapse repeated texts into one forward pass. The clients run on the proxy's cores, so the
figure is a floor, not the proxy's ceiling (``benchmark_throughput.py`` measures the ceiling).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
from benchmark_latency import NO_TURN_CACHE
from benchmark_throughput import free_port, start_proxy

from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import load_settings
from gatekeeper.testing import RecordingUpstream

REPO = Path(__file__).resolve().parent.parent
ADMITTED = "hi, my parcel still hasn't arrived, can you check where it is?"
BLOCKED = "who won the football match last night?"


def _time(client: openai.OpenAI, text: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _time_gate(gate: Gatekeeper, text: str, n: int) -> list[float]:
    """``Gatekeeper.check(text)`` one at a time, in ms (after 10 warm-up calls)."""
    for _ in range(10):
        gate.check(text)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        gate.check(text)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _texts() -> list[str]:
    """Varied customer messages: the bundled test split, in file order."""
    import json

    path = REPO / "eval" / "datasets" / "shop_test.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def _line(name: str, samples: list[float]) -> str:
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return f"{name:9s} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, RecordingUpstream() as upstream:
        data_dir = Path(tmp)
        gate = Gatekeeper.from_settings(load_settings(None, data_dir=data_dir, gate=NO_TURN_CACHE))
        gate.ready()  # builds the index the proxy serves
        port = free_port()
        server = start_proxy(data_dir, upstream.base_url, port)
        try:
            direct = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
            gated = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
            )
            for client, text in [(direct, ADMITTED), (gated, ADMITTED), (gated, BLOCKED)]:
                _time(client, text, 10)  # warm-up
            upstream.reset()
            rows = {
                "direct": _time(direct, ADMITTED, args.n),
                "admitted": _time(gated, ADMITTED, args.n),
                "blocked": _time(gated, BLOCKED, args.n),
            }
            upstream_calls = len(upstream.calls)
            total = args.n * args.concurrency // 2
            texts = _texts()
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                loaded = list(
                    pool.map(lambda i: _time(gated, texts[i % len(texts)], 1)[0], range(total))
                )
            seconds = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=60)
        rows["gate"] = _time_gate(gate, ADMITTED, args.n)

    print(f"{args.n} sequential requests each, default model, loopback")
    for name, samples in rows.items():
        print(_line(name, samples))
    print(f"upstream saw {upstream_calls} calls (direct + admitted = {2 * args.n})")
    print(
        f"{total} requests (varied messages) from {args.concurrency} concurrent clients: "
        f"{total / seconds:.0f} requests/s"
    )
    print(_line("loaded", loaded))
    added = np.percentile(rows["admitted"], 50) - np.percentile(rows["direct"], 50)
    gate_p50 = np.percentile(rows["gate"], 50)
    print(
        f"the proxy adds {added:.2f} ms (p50) to a direct call, of which the gate's own check "
        f"{gate_p50:.2f} ms: the HTTP path {added - gate_p50:.2f} ms"
    )


if __name__ == "__main__":
    main()
