"""Decisions per second: the gate alone, then the real proxy under many keep-alive clients.

    .venv/bin/python eval/benchmark_throughput.py [--clients 64] [--seconds 30] [--rate R]
        [--processes N] [--profile F]

One run, side by side, default model and shop catalog:

1. **gate alone**: ``Gatekeeper.check_many`` in batches of 32 (the proxy's micro-batch size) on
   2,000 varied customer messages (the bundled test split's texts, cycled): the ceiling the
   proxy is measured against.
2. **proxy**: ``gatekeeper serve`` started as its own process (uvicorn, as deployed), in front of
   an instant OpenAI-compatible upstream (``RecordingUpstream``, in this process), loaded by
   ``--clients`` keep-alive aiohttp clients in this process (not the proxy's) for
   ``--seconds`` after a warm-up; every request is a different message, so micro-batches cannot
   collapse repeats into one forward pass. Reports decisions/s, p50/p95/p99 latency, the share
   of the gate-alone rate, and the proxy's RSS at start and after the load.

By default the clients are a closed loop (each sends its next request as soon as its answer
arrives): the proxy's maximum rate, at which 64 clients wait ``64 / rate`` seconds on average
(Little's law). ``--rate R`` offers R requests/s in all instead (open loop: each client sends at
the times of its own Poisson stream, late if still waiting, with the lateness counted): the
latency a deployment sees at that traffic.

The clients run on the same cores as the proxy (a 2-core machine has no others), so the proxy's
figure is a floor. ``--profile F`` samples the proxy with py-spy during the load and writes the
collapsed stacks to F (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH = 32


def _texts() -> list[str]:
    path = REPO / "eval" / "datasets" / "shop_test.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def gate_alone(data_dir: Path, total: int = 2000) -> float:
    """check_many decisions/s in batches of ``BATCH`` (after one warm-up batch)."""
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.settings import load_settings

    gate = Gatekeeper.from_settings(load_settings(None, data_dir=data_dir, gate={"turn_cache": 0}))
    varied = _texts()
    texts = (varied * (total // len(varied) + 1))[:total]
    gate.check_many(texts[:BATCH])
    start = time.perf_counter()
    for i in range(0, total, BATCH):
        gate.check_many(texts[i : i + BATCH])
    return total / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the serving processes of ``server.processes``)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += _tree(int(child))
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants."""
    return sum(_cpu_seconds(p) for p in _tree(pid))


def _rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (the supervisor, when several serve)."""
    total = 0.0
    for member in _tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def start_proxy(
    data_dir: Path, upstream_url: str, port: int, processes: int = 1
) -> subprocess.Popen[bytes]:
    env = {
        "GATEKEEPER_SERVER__PROCESSES": str(processes),
        **os.environ,
        "GATEKEEPER_DATA_DIR": str(data_dir),
        "GATEKEEPER_UPSTREAM__BASE_URL": upstream_url,
        "GATEKEEPER_UPSTREAM__API_KEY": "sk-upstream",
        "GATEKEEPER_LOGGING__LEVEL": "WARNING",
        # The texts cycle: every decision must be a fresh one, not the cache of recent turns.
        "GATEKEEPER_GATE__TURN_CACHE": "0",
    }
    cmd = [sys.executable, "-m", "gatekeeper.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the proxy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5):
                pass
            if processes > 1:
                time.sleep(3.0)  # every serving process has loaded its model
            return proc
        except (OSError, ValueError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the proxy did not start within 120 s")


async def load(
    url: str, clients: int, seconds: float, warmup: float, rate: float | None = None
) -> tuple[int, list[float], float]:
    """``clients`` keep-alive clients sending varied messages; the errors, the latencies (ms) of
    the requests measured, and the seconds they were measured over.

    Closed loop (``rate`` None): each client sends its next request when its answer arrives; a
    request is measured when it started after ``warmup`` and ended before ``warmup + seconds``.
    Open loop (``rate`` decisions/s offered in all): each client sends at the times of its own
    Poisson stream of ``rate / clients``/s, whether or not the proxy kept up, and a request's
    latency counts from the time it was due (a client still waiting for its previous answer
    sends late, and that wait is counted: no coordinated omission); every request due after
    ``warmup`` and before ``warmup + seconds`` is measured, to its end."""
    import aiohttp

    texts = _texts()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    last_end = stop_at
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int) -> bool:
            body = {"model": "m", "messages": [{"role": "user", "content": texts[i]}]}
            async with session.post(url, json=body) as response:
                await response.read()
                return response.status == 200

        async def closed_client(offset: int) -> None:
            nonlocal errors
            i = offset
            while (now := time.perf_counter()) < stop_at:
                ok = await send(i)
                i = (i + clients) % len(texts)
                end = time.perf_counter()
                if not ok:
                    errors += 1
                elif now >= measure_from and end <= stop_at:
                    latencies.append((end - now) * 1000)

        async def open_client(offset: int) -> None:
            nonlocal errors, last_end
            assert rate is not None
            rng = np.random.default_rng(offset)
            i, due = offset, start + rng.exponential(clients / rate)
            while due < stop_at:
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                ok = await send(i)
                i = (i + clients) % len(texts)
                end = time.perf_counter()
                if not ok:
                    errors += 1
                elif due >= measure_from:
                    latencies.append((end - due) * 1000)
                    last_end = max(last_end, end)
                due += rng.exponential(clients / rate)

        client = closed_client if rate is None else open_client
        await asyncio.gather(*(client(k) for k in range(clients)))
    return errors, latencies, last_end - measure_from


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: no profile")
        return None
    cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-f", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offer this many requests/s in all (open loop, Poisson) instead of each client "
        "sending its next request when its answer arrives",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="server.processes of the proxy (default 1)"
    )
    args = parser.parse_args()

    from gatekeeper.cli._app import app  # noqa: F401  (the CLI's import cost is not measured)
    from gatekeeper.testing import RecordingUpstream

    with tempfile.TemporaryDirectory() as tmp, RecordingUpstream() as upstream:
        data_dir = Path(tmp)
        alone = gate_alone(data_dir)  # also builds the index the proxy serves
        # The load generator's own collector pauses are not the proxy's latency: this process
        # holds the model gate_alone loaded, and a full collection of it stalled every request
        # in flight (p99 164-172 ms at 400/s with int8 before this).
        gc.collect()
        gc.freeze()
        port = free_port()
        proxy = start_proxy(data_dir, upstream.base_url, port, args.processes)
        try:
            rss_start = _rss_mib(proxy.pid)
            spy = None
            if args.profile:
                spy = _profile(proxy.pid, args.warmup + args.seconds, args.profile)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            cpu = (_tree_cpu_seconds(proxy.pid), _cpu_seconds(os.getpid()), time.perf_counter())
            errors, latencies, measured = asyncio.run(
                load(url, args.clients, args.seconds, args.warmup, args.rate)
            )
            wall = time.perf_counter() - cpu[2]
            proxy_cpu = (_tree_cpu_seconds(proxy.pid) - cpu[0]) / wall
            own_cpu = (_cpu_seconds(os.getpid()) - cpu[1]) / wall
            rss_end = _rss_mib(proxy.pid)
            if spy is not None:
                spy.wait(timeout=60)
        finally:
            proxy.terminate()
            proxy.wait(timeout=60)

    rate = len(latencies) / measured
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0, 0, 0)
    print(f"gate alone   check_many x{BATCH}: {alone:.0f} decisions/s")
    print(
        f"proxy        {args.processes} process(es), {args.clients} clients, "
        f"{args.seconds:.0f} s"
        + (f", {args.rate:g}/s offered (open loop)" if args.rate else "")
        + f": {rate:.0f} decisions/s "
        f"({rate / alone:.0%} of gate alone), p50/p95/p99 {p50:.0f}/{p95:.0f}/{p99:.0f} ms, "
        f"{errors} errors, upstream saw {len(upstream.calls)} calls"
    )
    print(f"proxy RSS    {rss_start:.0f} MiB at start, {rss_end:.0f} MiB after the load")
    print(
        f"CPU          proxy {proxy_cpu:.0%}, clients + upstream {own_cpu:.0%} "
        f"(of {os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%)"
    )


if __name__ == "__main__":
    main()
