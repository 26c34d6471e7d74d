"""``server.processes``: several serving processes on one port, as `gatekeeper serve` runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gatekeeper.testing import RecordingUpstream
from tests.integration._processes import free_port, running

REPO = Path(__file__).resolve().parent.parent.parent


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, "GATEKEEPER_DATA_DIR": str(data_dir), **extra}


def _gatekeeper(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_two_serving_processes_share_the_port_the_metrics_and_the_log(tmp_path: Path) -> None:
    """With processes=2, two processes answer on one port, /metrics counts every process's
    decisions, every log line of both is whole JSON, and one text has one message id
    whichever process served it."""
    env = _env(tmp_path / "data")
    assert _gatekeeper("index", env=env).returncode == 0
    port = free_port()
    with RecordingUpstream() as upstream:
        serve_env = {
            **env,
            "GATEKEEPER_SERVER__PROCESSES": "2",
            "GATEKEEPER_UPSTREAM__BASE_URL": upstream.base_url,
            "GATEKEEPER_UPSTREAM__API_KEY": "sk-upstream",
        }
        args = [sys.executable, "-m", "gatekeeper.cli", "serve", "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/readyz"
        with running(args, ready, timeout=120, env=serve_env) as server:
            serving = [p for p in _children(server.pid) if _is_server(p)]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            routes, ids = [], set()
            for text in ["where is my order?", "tell me a joke"] * 10:
                with httpx.Client(timeout=30) as client:  # a new connection each time
                    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
                    answer = client.post(url, json=body)
                assert answer.status_code == 200
                routes.append(answer.headers["x-gatekeeper-route"])
                ids.add((text, answer.headers["x-gatekeeper-message-id"]))
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            server.terminate()
            _, stderr = server.communicate(timeout=60)
    assert len(serving) == 2
    assert routes == ["llm", "off_topic"] * 10
    assert len(ids) == 2  # one id per text, across both processes
    decided = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gatekeeper_decisions_total{")
    )
    assert decided == 20
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    events = [json.loads(line)["event"] for line in lines]  # each line whole JSON
    assert events.count("server.started") == 2
    assert events.count("gate.decided") == 20


def test_a_draining_server_refuses_new_connections(tmp_path: Path) -> None:
    """After SIGTERM, serve --processes 2 refuses new connections (a load balancer retries
    them elsewhere) while a request in flight still gets its answer; before, the supervisor's
    copy of the socket kept accepting connections that were reset at exit."""
    import signal
    import socket
    import threading
    import time

    env = _env(tmp_path / "data")
    assert _gatekeeper("index", env=env).returncode == 0
    port = free_port()
    with RecordingUpstream() as upstream:
        upstream.delay(8.0)
        serve_env = {
            **env,
            "GATEKEEPER_SERVER__PROCESSES": "2",
            "GATEKEEPER_UPSTREAM__BASE_URL": upstream.base_url,
            "GATEKEEPER_UPSTREAM__API_KEY": "sk-upstream",
        }
        args = [sys.executable, "-m", "gatekeeper.cli", "serve", "--port", str(port)]
        with running(args, f"http://127.0.0.1:{port}/readyz", timeout=120, env=serve_env) as server:
            answers: list[int] = []
            body = {"model": "m", "messages": [{"role": "user", "content": "where is my order?"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            in_flight = threading.Thread(
                target=lambda: answers.append(httpx.post(url, json=body, timeout=60).status_code)
            )
            in_flight.start()
            while not upstream.calls:  # the request has reached the upstream: in flight
                time.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            refused = False
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not refused:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    time.sleep(0.1)
                except ConnectionRefusedError:
                    refused = True
            still_in_flight = in_flight.is_alive()
            in_flight.join(timeout=60)
    assert refused and still_in_flight
    assert answers == [200]


def _is_server(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return b"spawn_main" in cmdline


def test_a_serving_process_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """A misconfiguration that only the serving processes see (a threshold calibrated for
    another model) stops `serve --processes 2` with exit code 2 and the reason, instead of
    restarting forever."""
    env = _env(tmp_path / "data", GATEKEEPER_EMBEDDING__QUANTIZE="int8")
    assert _gatekeeper("index", env=env).returncode == 0
    port = str(free_port())
    done = _gatekeeper("serve", "--port", port, "--processes", "2", env=env, timeout=180)
    assert done.returncode == 2
    assert "calibrated for model" in done.stderr
    assert "a serving process could not start" in done.stderr
