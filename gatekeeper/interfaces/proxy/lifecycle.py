"""uvicorn's server and supervisor as ``gatekeeper serve`` runs them, and what they say about the
serving processes' lives: ``server.draining`` when a signal starts the drain,
``server.worker_died`` and ``server.worker_respawned`` when the supervisor replaces a serving
process that died. uvicorn's own lines for these are at INFO on its logger, which the serving log
leaves out (the root logger is at WARNING), so a dead worker left no sign but a new
``embedding.loaded`` line.

After SIGTERM, a drained server exits 0, with one process as with several: the supervisor always
did, while one process raised the signal again once drained (exit 143).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from gatekeeper.interfaces.proxy.drain import DrainingServer, signal_name
from gatekeeper.interfaces.proxy.metrics import MULTIPROC_DIR
from gatekeeper.logging import Logger, get_logger


def draining_server(config: Any, log: Logger) -> DrainingServer:
    """The server ``serve`` runs for ``config`` (:class:`~.drain.DrainingServer`), logging to
    ``log``."""
    return DrainingServer(config, log)


def serving_supervisor(config: Any, sockets: list[socket.socket]) -> Any:
    """uvicorn's supervisor of ``config.workers`` serving processes on ``sockets``, which says
    when it drains and when it replaces a process that died, and closes its own copy of the
    listening socket before the serving processes drain. Each process stops listening when told
    to stop, but the supervisor's copy kept the port open: the kernel went on accepting
    connections that nobody would serve, and reset them at exit. Now a new connection is refused
    at once (a load balancer retries it elsewhere) while requests in flight finish."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

        def handle_term(self) -> None:
            said_draining(self, "SIGTERM")
            super().handle_term()

        def handle_int(self) -> None:
            said_draining(self, "SIGINT")
            super().handle_int()

        def keep_subprocess_alive(self) -> None:
            before = list(self.processes)
            super().keep_subprocess_alive()
            said_replaced(before, self.processes, get_logger())

    return Supervisor(config, sockets=sockets)


def said_draining(supervisor: Any, name: str) -> None:
    """Log ``server.draining`` when the signal ``name`` starts the supervisor's drain (once: a
    second signal finds it draining). Runs in the supervisor's loop, not in a signal handler."""
    if not supervisor.should_exit.is_set():
        pids = [process.pid for process in supervisor.processes]
        get_logger().info("server.draining", signal=name, pid=os.getpid(), processes=pids)


def said_replaced(before: list[Any], after: list[Any], log: Logger) -> None:
    """For each serving process of ``before`` that the supervisor replaced in ``after`` (it
    died, or hung and was killed): a ``server.worker_died`` warning with its pid (``worker``)
    and exit code (and the signal that ended it), then ``server.worker_respawned`` with its
    successor's pid (``worker``) and its own (``replaces``).
    The dead process's live gauges (requests in flight, readiness) leave ``/metrics``."""
    for old, new in zip(before, after, strict=False):
        if new is old:
            continue
        code = old.exitcode
        ended = {"signal": signal_name(-code)} if code is not None and code < 0 else {}
        log.warning("server.worker_died", worker=old.pid, exitcode=code, **ended)
        forget_process(old.pid)
        log.info("server.worker_respawned", worker=new.pid, replaces=old.pid)


def forget_process(pid: int | None) -> None:
    """Drop a dead serving process's live gauges from the shared metrics directory (nothing
    when no directory is shared)."""
    if pid is None or not os.environ.get(MULTIPROC_DIR):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


__all__ = ["draining_server", "serving_supervisor"]
