"""Fixtures the unit tests share: a settings file on the tiny catalog, the hashing embedder,
background build loads held until released, and the in-process proxy in front of a fake upstream
(:mod:`tests.support.proxy`)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gatekeeper.gate import Gatekeeper
from gatekeeper.search import ExemplarMatrix
from gatekeeper.testing import HashingEmbedder, make_gate

if TYPE_CHECKING:  # the proxy's modules load in the fixtures that need them
    import httpx

    from tests.support.fake_upstream import FakeUpstream

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


# -- the in-process proxy (its modules imported by the fixtures: other tests do not load them) ----


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gatekeeper]:
    """The tiny hashing gate, indexed once for the module."""
    with make_gate(tmp_path_factory.mktemp("proxy-app")) as built:
        built.index()
        yield built


@pytest.fixture
def upstream() -> FakeUpstream:
    """A fake upstream answering a completion (a module may override it)."""
    from tests.support.fake_upstream import FakeUpstream

    return FakeUpstream()


@pytest.fixture
async def client(gate: Gatekeeper, upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the proxy (in-process, lifespan running) in front of ``upstream``."""
    from tests.support.proxy import serving

    async with serving(gate, upstream) as proxied:
        yield proxied


@pytest.fixture
async def keyed(gate: Gatekeeper, upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    """As ``client``, the proxy asking for the inbound key ``CLIENT_KEY``."""
    from pydantic import SecretStr

    from tests.support.proxy import CLIENT_KEY, serving

    async with serving(gate, upstream, api_keys=[SecretStr(CLIENT_KEY)]) as proxied:
        yield proxied
