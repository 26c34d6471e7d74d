"""`gatekeeper tune` on the packaged all-MiniLM-L6-v2 and the shop catalog, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatekeeper.catalog import load_catalog
from gatekeeper.decision import Route
from gatekeeper.embedding import AdaptedEmbedder, LocalEmbedder, build_embedder
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import EmbeddingSettings, Settings
from gatekeeper.tuning import TuneConfig, tune_adapter

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parent.parent.parent / "configs" / "intents" / "shop.yaml"


def test_tuned_shop_gate_still_routes_and_separates(tmp_path: Path) -> None:
    """An adapter trained on the shop catalog keeps the held-out leave-intent-out AUROC at
    least as high as the frozen model's, and the adapted gate still decides sensibly."""
    base = LocalEmbedder(EmbeddingSettings())
    result = tune_adapter(
        load_catalog(SHOP), base, adapters_dir=tmp_path / "adapters", name="shop",
        config=TuneConfig(steps=40),
    )  # fmt: skip
    held = result.manifest["heldout"]
    assert held["adapted"]["auroc_loio_vs_off"] >= held["frozen"]["auroc_loio_vs_off"]
    settings = Settings(
        data_dir=tmp_path / "data",
        catalog=SHOP,
        embedding=EmbeddingSettings(adapter=result.path),
        gate={"threshold": 0.3, "allow_uncalibrated": True},
    )
    embedder = build_embedder(settings.embedding)
    assert isinstance(embedder, AdaptedEmbedder)
    vectors = embedder.embed(["where is my parcel", "write me a poem about the sea"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    gate = Gatekeeper.from_settings(settings, embedder=embedder)
    gate.index()
    assert gate.check("where is my parcel, it's been 5 days").route is Route.LLM
    assert gate.check("write me a poem about the sea").route is Route.OFF_TOPIC
