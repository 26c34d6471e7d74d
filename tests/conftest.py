"""Shared fixtures: a fast gate on the hashing embedder, and the real default gate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import make_gate

REPO = Path(__file__).resolve().parent.parent
SHOP_CATALOG = REPO / "configs" / "intents" / "shop.yaml"
SHOP_ZH_CATALOG = REPO / "configs" / "intents" / "shop_zh.yaml"


@pytest.fixture(autouse=True)
def _no_gatekeeper_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's GATEKEEPER_* variables."""
    import os

    for key in list(os.environ):
        if key.startswith("GATEKEEPER_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A test that configures logging (CLI commands do) does not leak it into the next."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def tiny_gate(tmp_path: Path) -> Iterator[Gatekeeper]:
    """A gate over the tiny catalog, on the hashing embedder and an embedded Chroma (closed
    after the test: its files stay open otherwise)."""
    with make_gate(tmp_path / "data") as gate:
        gate.index()
        yield gate


@pytest.fixture(scope="session")
def real_gate(tmp_path_factory: pytest.TempPathFactory) -> Gatekeeper:
    """The default gate: packaged all-MiniLM-L6-v2, the shop catalog, an embedded Chroma."""
    from gatekeeper.settings import load_settings

    data_dir = tmp_path_factory.mktemp("real-gate")
    settings = load_settings(
        REPO / "configs" / "gatekeeper.yaml"
        if (REPO / "configs" / "gatekeeper.yaml").exists()
        else None,
        data_dir=data_dir,
        catalog=SHOP_CATALOG,
    )
    gate = Gatekeeper.from_settings(settings)
    gate.index()
    return gate
