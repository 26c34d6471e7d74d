"""What the proxy says about itself: its readiness in /metrics and in the log (once per change),
metric series fixed from the start whatever the process count, the first answers' one-time costs
paid before it says it started, and the serving processes' lives (a drain, a worker that dies, a
start that fails). In-process apps on the hashing embedder; real uvicorn servers on loopback, in
subprocesses, for signals and processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.state import prepare_gate
from gatekeeper.testing import make_gate, tiny_catalog
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ORDER, SwitchedChroma, serving

REPO = Path(__file__).resolve().parent.parent.parent


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def _gauge(status: str) -> str:
    return f'gatekeeper_ready{{status="{status}"}} 1.0'


# -- readiness: a gauge, and one line per change ----------------------------------------------


async def test_a_chroma_outage_ridden_out_is_a_metric_and_one_line_each_way(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma lost while a memory search rides it out: gatekeeper_ready{status="degraded"} is 1,
    three probes log one `server.degraded` (with Chroma's error), and Chroma back logs one
    `server.recovered` (a warning came with every probe, and nothing on recovery)."""
    gate: Gatekeeper = make_gate(tmp_path, store={"search": "memory"})
    gate.index()
    async with serving(gate, upstream) as proxied:
        await proxied.post("/v1/chat/completions", json={"model": "m", "messages": ORDER})
        assert _gauge("ready") in (await proxied.get("/metrics")).text
        with capture_logs() as logs:

            def unreachable(*args: Any, **kwargs: Any) -> Any:
                raise httpx.ConnectError("Could not connect to a Chroma server")

            with monkeypatch.context() as patched:
                patched.setattr(gate.store._client, "get_or_create_collection", unreachable)
                gate.store.pointer_ttl = 0.0  # every read asks Chroma
                for _ in range(3):
                    assert (await proxied.get("/readyz")).json()["status"] == "degraded"
                during = (await proxied.get("/metrics")).text
            for _ in range(3):
                assert (await proxied.get("/readyz")).json()["status"] == "ready"
            after = (await proxied.get("/metrics")).text
    [degraded] = _events(logs, "server.degraded")
    assert (
        degraded["reason"] == "StoreUnavailableError" and "Could not connect" in degraded["error"]
    )
    assert degraded["exemplars"] == len(tiny_catalog().exemplars())
    [recovered] = _events(logs, "server.recovered")
    assert recovered["was"] == "degraded"
    assert _gauge("degraded") in during and 'status="ready"} 0.0' in during
    assert _gauge("ready") in after and 'status="degraded"} 0.0' in after


async def test_a_proxy_started_with_chroma_down_says_so_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Chroma down at start: `gate.not_ready` once (it was logged twice), `server.started` as a
    warning with status not_ready (it said `server.ready` while /readyz said 503), no line per
    503 probe, the gauge at not_ready; Chroma back: one `server.recovered`, the gauge at ready."""
    indexed: Gatekeeper = make_gate(tmp_path / "chroma")
    indexed.index()
    chroma = SwitchedChroma(indexed, retry_seconds=0.0)
    upstream_set = indexed.settings.upstream.model_copy(update={"base_url": "http://up.test/v1"})
    settings = indexed.settings.model_copy(
        update={"data_dir": tmp_path / "proxy", "upstream": upstream_set}
    )
    gate = chroma.gate(settings)
    upstream_client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    with capture_logs() as logs:
        prepare_gate(gate)  # as `gatekeeper serve` does, before it listens
        app = create_app(settings, gate=gate, upstream_client=upstream_client, prepared=True)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as proxied:
                for _ in range(3):
                    assert (await proxied.get("/readyz")).status_code == 503
                down = (await proxied.get("/metrics")).text
                chroma.up = True
                assert (await proxied.get("/readyz")).json()["status"] == "ready"
                up = (await proxied.get("/metrics")).text
    await upstream_client.aclose()
    assert len(_events(logs, "gate.not_ready")) == 1
    [started] = _events(logs, "server.started")
    assert started["status"] == "not_ready" and started["log_level"] == "warning"
    assert _events(logs, "server.ready") == [] and _events(logs, "server.not_ready") == []
    [recovered] = _events(logs, "server.recovered")
    assert recovered["was"] == "not_ready"
    assert _gauge("not_ready") in down and _gauge("ready") in up


def test_a_switch_to_another_build_is_logged(tmp_path: Path) -> None:
    """Queries moving to a rebuilt build log `store.build_switched` with its collection and
    exemplars, and the build before (/readyz moved from reload_pending to it silently)."""
    gate: Gatekeeper = make_gate(tmp_path, store={"search": "memory"})
    gate.index()
    before = gate.store.exemplars()
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["exemplars"] += ["where has my parcel got to", "parcel tracking number"]
    from gatekeeper.catalog import parse_catalog

    make_gate(tmp_path, catalog=parse_catalog(raw, source="edited")).index()
    with capture_logs() as logs:
        after = gate.store.exemplars()
    [switched] = _events(logs, "store.build_switched")
    assert switched["collection"] == after.key[0] != before.key[0]
    assert (switched["exemplars"], switched["was_exemplars"]) == (len(before) + 2, len(before))
    assert switched["was"] == before.key[0]


# -- metric series: the same from the start, whatever the process count ------------------------

SERIES = """
import sys
from gatekeeper.interfaces.proxy.metrics import Metrics

metrics = Metrics()
metrics.saved_call()
metrics.answered("/readyz", 200)
metrics.upstream_began("/v1/chat/completions", 0.2)
metrics.upstream_error("timeout")
metrics.gate_seconds.observe(0.01)
text = metrics.render()[0].decode()
names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
print(" ".join(sorted(names)))
"""


def test_metric_series_do_not_depend_on_the_process_count(tmp_path: Path) -> None:
    """/metrics exports the same series with one serving process as with several (shared
    through PROMETHEUS_MULTIPROC_DIR): one process also exported a `_created` series for each
    counter and histogram."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO)

    def series(**extra: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-c", SERIES],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
        )
        return set(done.stdout.split())

    one = series()
    several = series(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert one == several
    assert not any(name.endswith("_created") for name in one)


async def test_failure_counters_start_at_zero(client: httpx.AsyncClient) -> None:
    """Before any failure, /metrics has gate failures (the policy served, each gate error) and
    upstream errors (each kind) at 0: an alert on their rate reads 0, not "no data"."""
    from gatekeeper.interfaces.proxy.metrics import GATE_ERRORS, UPSTREAM_ERROR_KINDS

    text = (await client.get("/metrics")).text
    for error in GATE_ERRORS:
        assert f'gatekeeper_gate_failures_total{{error="{error}",policy="fail_open"}} 0.0' in text
    for kind in UPSTREAM_ERROR_KINDS:
        assert f'gatekeeper_upstream_errors_total{{kind="{kind}"}} 0.0' in text


def test_every_upstream_error_kind_counted_is_exported_from_zero() -> None:
    """Each kind the proxy counts in gatekeeper_upstream_errors_total is one of the kinds
    exported at 0 from the start."""
    from gatekeeper.interfaces.proxy import upstream
    from gatekeeper.interfaces.proxy.metrics import UPSTREAM_ERROR_KINDS

    source = Path(upstream.__file__).read_text(encoding="utf-8")
    counted = set(re.findall(r'(?:upstream_error\(|_fault\(\s*proxy,\s*)"(\w+)"', source))
    counted |= set(re.findall(r'_stream_failed\(\s*proxy,\s*"(\w+)"', source))
    for pair in re.findall(r'kind = "(\w+)" if [^\n]* else "(\w+)"', source):
        counted |= set(pair)
    assert len(counted) >= 8 and counted <= set(UPSTREAM_ERROR_KINDS)


# -- the first answers' one-time costs, paid at start-up ---------------------------------------

FIRST_ANSWERS = """
import asyncio, json, sys
from pathlib import Path

import httpx

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.testing import make_gate

gate = make_gate(Path(sys.argv[1]))
gate.index()


async def main() -> None:
    app = create_app(gate.settings, gate=gate)
    async with app.router.lifespan_context(app):
        before = set(sys.modules)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            joke = [{"role": "user", "content": "tell me a joke"}]
            for stream in (False, True):
                for structured in (None, {"type": "json_object"}):
                    chat = {"messages": joke, "stream": stream, "response_format": structured}
                    said = {"input": "tell me a joke", "stream": stream}
                    said["text"] = {"format": structured}
                    for path, body in (("chat/completions", chat), ("responses", said)):
                        answer = await client.post(f"/v1/{path}", json={"model": "m", **body})
                        assert answer.headers["x-gatekeeper-route"] == "off_topic", answer.text
        print(json.dumps(sorted(set(sys.modules) - before)))


asyncio.run(main())
"""


def test_the_first_refusals_import_nothing(tmp_path: Path) -> None:
    """Once the app has started, refusals of every shape (chat and Responses, whole and
    streamed, text and structured) import no module: the first one imported `openai.types` on
    the event loop, holding every other request up (~0.4 s in `gatekeeper serve`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_ANSWERS, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert [name for name in imported if name.startswith("openai")] == []


# -- the serving processes' lives: real uvicorn servers in subprocesses -----------------------

TINY_APP = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""

SERVE = """
import sys

import uvicorn

from gatekeeper.interfaces.proxy.lifecycle import draining_server, serving_supervisor
from gatekeeper.interfaces.proxy.runner import bind_listening_socket, uvicorn_options
from gatekeeper.logging import configure_logging, get_logger
from gatekeeper.settings import LoggingSettings

configure_logging(LoggingSettings(format="json", level="INFO"))
port, workers = int(sys.argv[1]), int(sys.argv[2])
listening = bind_listening_socket("127.0.0.1", port)
config = uvicorn.Config("tiny_app:app", **{**uvicorn_options(5), "lifespan": "off"})
if workers == 1:
    draining_server(config, get_logger()).run(sockets=[listening])
else:
    config.workers = workers
    serving_supervisor(config, [listening]).run()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp_path: Path, workers: int) -> tuple[subprocess.Popen[bytes], Path, int]:
    (tmp_path / "tiny_app.py").write_text(TINY_APP, encoding="utf-8")
    port, log = _free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port), str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    _wait_for(lambda: _answers(port), process, log)
    return process, log, port


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(done: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60  # a bound for a stuck test, not a measure of speed
    while not done():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _lines(log: Path) -> list[dict[str, Any]]:
    text = log.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _serving_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_sigterm_logs_the_drain_and_one_process_exits_0(tmp_path: Path) -> None:
    """SIGTERM to a one-process server logs `server.draining` (signal SIGTERM) when the drain
    starts and exits 0 once drained, as `--processes` does (it exited 143, with no line until
    `server.stopped`)."""
    process, log, _ = _start(tmp_path, workers=1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    [draining] = [e for e in _lines(log) if e["event"] == "server.draining"]
    assert draining["signal"] == "SIGTERM"


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_a_serving_process_that_dies_is_said_and_replaced(tmp_path: Path) -> None:
    """With two serving processes, one killed is logged as `server.worker_died` (pid, exit
    code, SIGKILL) and its successor as `server.worker_respawned`; SIGTERM then logs
    `server.draining` and the supervisor exits 0."""
    process, log, port = _start(tmp_path, workers=2)
    _wait_for(lambda: len(_serving_children(process.pid)) == 2, process, log)
    victim = _serving_children(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    respawned = lambda: any(e["event"] == "server.worker_respawned" for e in _lines(log))  # noqa: E731
    _wait_for(respawned, process, log)
    _wait_for(lambda: _answers(port), process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    lines = _lines(log)
    [died] = [e for e in lines if e["event"] == "server.worker_died"]
    assert (died["worker"], died["exitcode"], died["signal"]) == (victim, -9, "SIGKILL")
    [again] = [e for e in lines if e["event"] == "server.worker_respawned"]
    assert again["replaces"] == victim and again["worker"] != victim
    assert died["pid"] == again["pid"] == process.pid  # said by the supervisor
    assert [e["signal"] for e in lines if e["event"] == "server.draining"] == ["SIGTERM"]


# -- a start that fails, in the log's format ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_failed_start_is_a_json_line_when_the_log_is_json(tmp_path: Path, fmt: str) -> None:
    """`serve` that cannot start (here: an open address without inbound keys) writes one JSON
    `server.start_failed` line with GATEKEEPER_LOGGING__FORMAT=json (only `--processes` did;
    one process printed plain text), and the readable `error:` line otherwise; exit 2 both."""
    from gatekeeper.cli import app

    env = {
        "GATEKEEPER_DATA_DIR": str(tmp_path),
        "GATEKEEPER_LOGGING__FORMAT": fmt,
        "GATEKEEPER_SERVER__API_KEYS": None,  # unset: no inbound keys
    }
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "1"], env=env)
    assert result.exit_code == 2
    if fmt == "console":
        assert "error: refusing to serve on 0.0.0.0" in result.output
        return
    assert "error: refusing" not in result.output
    [failed] = [
        json.loads(line)
        for line in result.output.splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "server.start_failed"
    ]
    assert failed["error_type"] == "ConfigError" and failed["level"] == "error"
    assert "refusing to serve on 0.0.0.0" in failed["error"]


async def test_readiness_probes_that_arrive_during_a_check_share_its_answer(
    tmp_path: Path,
) -> None:
    """Probes and scrapes that arrive while a readiness check runs (a model probe can take the
    endpoint's timeout during an outage) take its answer instead of each starting one; a probe
    after it runs a new check."""
    import asyncio
    import threading

    from gatekeeper.interfaces.proxy.health import Health
    from gatekeeper.interfaces.proxy.metrics import Metrics
    from gatekeeper.logging import get_logger

    release, calls = threading.Event(), []

    def slow_readiness() -> dict[str, Any]:
        calls.append(1)
        release.wait(10)
        return {"status": "ready", "collection": "c", "exemplars": 1}

    health = Health(Metrics(), get_logger())
    waiting = [asyncio.create_task(health.acheck(slow_readiness)) for _ in range(5)]
    await asyncio.sleep(0.2)
    release.set()
    answers = await asyncio.gather(*waiting)
    assert len(calls) == 1 and all(status == 200 for _, status in answers)
    await health.acheck(slow_readiness)
    assert len(calls) == 2


async def test_a_client_gone_in_the_middle_of_a_stream_is_logged_499() -> None:
    """A client that leaves while a stream is still being sent is logged and counted as 499
    with ``ended: client_disconnected`` (it was logged as the 200 the stream began with); a
    disconnect after the whole answer changes nothing."""
    from gatekeeper.interfaces.proxy.metrics import Metrics
    from gatekeeper.interfaces.proxy.middleware import RequestLog
    from gatekeeper.logging import get_logger

    async def stream_then_client_leaves(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"

    async def whole_then_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        await receive()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        return None

    metrics = Metrics()
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    with capture_logs() as logs:
        await RequestLog(stream_then_client_leaves, metrics=metrics, log=get_logger())(
            dict(scope), receive, send
        )
        await RequestLog(whole_then_disconnect, metrics=metrics, log=get_logger())(
            dict(scope), receive, send
        )
    gone, whole = [e for e in logs if e["event"] == "http.request"]
    assert (gone["status"], gone["ended"]) == (499, "client_disconnected")
    assert whole["status"] == 200 and "ended" not in whole
