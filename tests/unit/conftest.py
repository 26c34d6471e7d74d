"""Fixtures the unit tests share: a settings file on the tiny catalog, the hashing embedder, and
background build loads held until released."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.search import ExemplarMatrix
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_CATALOG = FIXTURES / "tiny_catalog.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A settings file with its own data dir, serving the tiny catalog."""
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {TINY_CATALOG}\n"
        "gate:\n  threshold: 0.2\n  allow_uncalibrated: true\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates built by the CLI use the hashing embedder."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())


@pytest.fixture
def held_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Loads of a build's copy in the background (:mod:`gatekeeper.build_copy`) wait until the
    event is set (set at teardown at the latest); loads that a query waits for do not."""
    release = threading.Event()
    load = ExemplarMatrix.load

    def held(collection: Any, key: Any) -> ExemplarMatrix:
        if threading.current_thread().name == "gatekeeper-build-copy":
            assert release.wait(10)
        return load(collection, key)

    monkeypatch.setattr(ExemplarMatrix, "load", held)
    yield release
    release.set()
