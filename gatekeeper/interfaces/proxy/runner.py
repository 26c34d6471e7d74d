"""Serving the proxy with uvicorn (``gatekeeper serve``)."""

from __future__ import annotations

from gatekeeper.interfaces.proxy.app import create_app
from gatekeeper.interfaces.proxy.state import build_gate, prepare_gate
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 30.0


def run_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    graceful_shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
) -> None:
    """Serve the proxy with uvicorn until SIGINT/SIGTERM; in-flight requests then get up to
    ``graceful_shutdown_seconds`` to finish."""
    import uvicorn

    host = host or settings.server.host
    port = port or settings.server.port
    # Configuration mistakes (catalog, model, an index of another model) stop the server here,
    # with the library's own error, before it listens: never a proxy that forwards everything.
    # A Chroma server that is down does not: the proxy starts and follows gate.on_error.
    gate = prepare_gate(build_gate(settings))
    config = uvicorn.Config(
        create_app(settings, gate=gate),
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_shutdown_seconds),
    )
    get_logger().info("server.starting", host=host, port=port)
    uvicorn.Server(config).run()
