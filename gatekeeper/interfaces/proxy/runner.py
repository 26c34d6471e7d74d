"""Serving the proxy with uvicorn (``gatekeeper serve``): one process, or ``server.processes``
processes sharing the port.

One process runs one event loop: with a fast model (int8, or an embeddings server) that loop's
own Python work (HTTP parsing, JSON, the upstream round trip), not the model, is what limits
throughput. ``server.processes: N`` runs N identical serving processes on the same listening
socket (uvicorn's supervisor; the kernel spreads connections over them). Each loads its own
model and holds its own in-memory exemplar matrix, so memory grows with N; the local model's
threads are split between them. Their Prometheus counters are shared through
``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory unless set), so ``/metrics`` on any of them
answers for all.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.browsers import loopback
from gatekeeper.interfaces.proxy.lifecycle import draining_server, serving_supervisor
from gatekeeper.interfaces.proxy.metrics import MULTIPROC_DIR
from gatekeeper.interfaces.proxy.state import build_gate, prepare_gate
from gatekeeper.language import catalog_language_warning
from gatekeeper.logging import Logger, configure_logging, get_logger
from gatekeeper.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gatekeeper.gate import Gatekeeper

#: Seconds uvicorn keeps a keep-alive connection open with no new request after an answer
#: (``timeout_keep_alive``, uvicorn's own default, set here so that it is said); then it closes
#: it. A connection that has not yet sent a whole request's headers is not timed out by uvicorn
#: (README, Scale out: a reverse proxy in front); its body is, by ``server.body_timeout``.
KEEP_ALIVE_SECONDS = 5
# The collector's thresholds while serving (Python's defaults: 700, 10, 10). Measured with
# eval/benchmark_throughput.py: with the model and the app frozen out of the collector's scans
# and young collections 28x rarer, the proxy's p99 at 64 clients fell from 335-366 ms to
# 238-249 ms and its rate rose 385 -> 403-417 decisions/s (eval/README.md, Speed).
SERVING_GC_THRESHOLDS = (20_000, 20, 50)
# glibc's malloc arenas for the serving process (its default: 8 per core). Each decision thread
# otherwise grows an arena of its own from the forward passes' buffers: RSS after 30 s at 64
# clients 721-735 MiB with the default, 625 MiB with 2, at the same rate (eval/README.md, Speed).
SERVING_MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def run_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    graceful_shutdown_seconds: float | None = None,
) -> None:
    """Serve the proxy with uvicorn until SIGINT/SIGTERM; in-flight requests then get up to
    ``graceful_shutdown_seconds`` (default ``server.shutdown_grace``) to finish (after SIGTERM,
    this returns: exit 0)."""
    settings = serving_settings(settings, host, port)
    if graceful_shutdown_seconds is None:
        graceful_shutdown_seconds = settings.server.shutdown_grace
    host, port = settings.server.host, settings.server.port
    log = get_logger()
    log.info("server.starting", host=host, port=port, processes=settings.server.processes)
    if not settings.server.api_keys and not loopback(host):
        refuse_open(settings)
    if settings.server.processes > 1:
        _run_processes(settings, host, port, graceful_shutdown_seconds)
        return
    cap_malloc_arenas()
    # Configuration mistakes (catalog, model, an index of another model) stop the server here,
    # with the library's own error, before it listens: never a proxy that forwards everything.
    # A Chroma server that is down does not: the proxy starts and follows gate.on_error.
    gate = build_gate(settings)  # settings and catalog: nothing loaded yet
    warn_unread_language(gate, log)
    # The port before the model: one taken by another server is said in a second, and
    # "server.started" is only logged once the address is ours.
    with bind_listening_socket(host, port) as listening:
        prepare_gate(gate)
        app = create_app(settings, gate=gate, prepared=True)
        config = _config(app, host, port, graceful_shutdown_seconds)
        settle_collector()
        draining_server(config, log).run(sockets=[listening])


def warn_unread_language(gate: Gatekeeper, log: Logger) -> None:
    """Log one ``server.language_unread`` warning when the catalog's exemplars are in a
    language the gate's model does not read (:func:`catalog_language_warning`)."""
    warning = catalog_language_warning(gate.catalog, gate.embedder.identity)
    if warning:
        log.warning("server.language_unread", catalog=str(gate.settings.catalog), hint=warning)


def serving_settings(settings: Settings, host: str | None, port: int | None) -> Settings:
    """``settings`` with the address served (``--host``/``--port`` over ``server.*``): the app
    checks Host headers by the address it listens on (:mod:`.browsers`)."""
    server = settings.server.model_copy(
        update={"host": host or settings.server.host, "port": port or settings.server.port}
    )
    return settings.model_copy(update={"server": server})


def refuse_open(settings: Settings) -> None:
    """For a proxy listening beyond loopback without inbound keys: :class:`ConfigError` unless
    ``server.allow_open`` says so (the app then logs ``server.open`` when ready), since anyone
    who reaches the port would use the upstream key."""
    host = settings.server.host
    if not settings.server.allow_open:
        raise ConfigError(
            f"refusing to serve on {host} without inbound keys: anyone who reaches this port "
            "would use the upstream key. Set GATEKEEPER_SERVER__API_KEYS, listen on 127.0.0.1, "
            "or set GATEKEEPER_SERVER__ALLOW_OPEN=true behind something that authenticates "
            "clients"
        )


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds it: IPv6 when the host has a colon,
    ``SO_REUSEADDR``, inheritable by serving processes). :class:`ConfigError` with the address
    and the reason when it cannot be had: a port in use, out of range, a host not on this
    machine."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {_bind_problem(exc)}") from None
    sock.set_inheritable(True)
    return sock


def cap_malloc_arenas(arenas: int = SERVING_MALLOC_ARENAS) -> bool:
    """Limit glibc's malloc arenas for this (serving) process before its threads allocate;
    whether it was done. Nothing on another C library, or when ``MALLOC_ARENA_MAX`` is set
    (the operator's choice, which glibc read at start)."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def settle_collector() -> None:
    """Once everything long-lived is loaded (the model, the exemplar matrix, the app), move it
    out of the garbage collector's scans (``gc.freeze``) and make young collections rarer: a
    full collection over the model's objects otherwise stalls the event loop for every request
    in flight. Done by the serving process, which owns the interpreter; never by the library."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


@dataclass(frozen=True)
class ServingProcess:
    """The app factory each serving process calls (pickled to it with the settings)."""

    settings: Settings

    def __call__(self) -> FastAPI:
        from uvicorn.config import STARTUP_FAILURE

        configure_logging(self.settings.logging)
        cap_malloc_arenas()
        try:
            gate = prepare_gate(build_gate(self.settings))
        except GatekeeperError as exc:
            # The supervisor stops every process when one exits with STARTUP_FAILURE: a
            # misconfiguration would fail the same way on every restart.
            get_logger().error("server.start_failed", error=str(exc), error_type=type(exc).__name__)
            sys.exit(STARTUP_FAILURE)
        app = create_app(self.settings, gate=gate, prepared=True)
        settle_collector()
        return app


def _bind_problem(exc: OSError | OverflowError) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "the port is in use (choose another --port or server.port, or stop its server)"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{reason} (check --host / server.host and --port / server.port)"


def _run_processes(settings: Settings, host: str, port: int, graceful: float) -> None:
    from uvicorn.config import STARTUP_FAILURE

    # a bad catalog or settings fail here, before anything is spawned; said once, not per process
    warn_unread_language(build_gate(settings), get_logger())
    if settings.logging.message_id_key is None:
        # one key for every process: one message, one id in the log, whichever process served
        key = SecretStr(secrets.token_hex(32))
        logging_ = settings.logging.model_copy(update={"message_id_key": key})
        settings = settings.model_copy(update={"logging": logging_})
    with bind_listening_socket(host, port) as listening:
        supervisor = _supervise(settings, listening, host, port, graceful)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise ConfigError("a serving process could not start; its error is logged above")


def _supervise(
    settings: Settings, listening: socket.socket, host: str, port: int, graceful: float
) -> Any:
    config = _config(ServingProcess(_portable(settings)), host, port, graceful, factory=True)
    config.workers = settings.server.processes
    ours = not os.environ.get(MULTIPROC_DIR)
    with tempfile.TemporaryDirectory(prefix="gatekeeper-metrics-") as shared:
        if ours:
            os.environ[MULTIPROC_DIR] = shared  # inherited by the spawned processes
        try:
            supervisor = serving_supervisor(config, [listening])
            supervisor.run()
        finally:
            if ours:
                os.environ.pop(MULTIPROC_DIR, None)
    return supervisor


def _portable(settings: Settings) -> Settings:
    """``settings`` as the base class (loaded settings are of a class made per settings file,
    which cannot be pickled), field for field, already validated."""
    fields = {name: getattr(settings, name) for name in Settings.model_fields}
    portable = Settings.model_construct(_fields_set=settings.model_fields_set, **fields)
    return portable.with_source_file(settings.source_file)


def _config(app: Any, host: str, port: int, graceful: float, *, factory: bool = False) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, factory=factory, **uvicorn_options(graceful))


def uvicorn_options(graceful_shutdown_seconds: float) -> dict[str, Any]:
    """The options ``gatekeeper serve`` runs uvicorn with, beside the app and the address (also
    those of :class:`~gatekeeper.testing.LoopbackServer`)."""
    return {
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": int(graceful_shutdown_seconds),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
