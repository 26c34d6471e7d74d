"""Fixtures the CLI unit tests share: a settings file on the tiny catalog, the hashing embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

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
