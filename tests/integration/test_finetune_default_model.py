"""`gatekeeper tune --method encoder` on the packaged all-MiniLM-L6-v2 and the shop catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import load_catalog
from gatekeeper.decision import Route
from gatekeeper.embedding import LocalEmbedder
from gatekeeper.errors import ConfigError
from gatekeeper.finetune import ENCODER_METHOD, FinetuneConfig, finetune_encoder
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import EmbeddingSettings, Settings

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parent.parent.parent / "configs" / "intents" / "shop.yaml"
SMALL = FinetuneConfig(triplets=32, batch_size=16)


def test_fine_tuned_encoder_is_a_new_model_the_gate_serves(tmp_path: Path) -> None:
    """The fine-tuned model is a directory named by its hash, with a manifest, that the native
    runtime loads under an identity of its own; its vectors moved but stay close (distilled),
    the same seed gives the same model, and the gate on it still decides sensibly."""
    catalog = load_catalog(SHOP)
    steps: list[tuple[int, int]] = []
    result = finetune_encoder(
        catalog, EmbeddingSettings(), models_dir=tmp_path / "models", name="shop", config=SMALL,
        progress=lambda step, total, loss: steps.append((step, total)),
    )  # fmt: skip
    manifest = json.loads((result.path / "manifest.json").read_text(encoding="utf-8"))
    assert result.path.name == f"shop-encoder-{manifest['hash'][:12]}"
    assert [p.name for p in (tmp_path / "models").iterdir()] == [result.path.name]
    assert manifest["method"] == ENCODER_METHOD
    assert manifest["catalog_hash"] == catalog.content_hash()
    assert manifest["base_embedder"] == LocalEmbedder(EmbeddingSettings()).identity
    assert set(manifest["heldout"]) == {"frozen", "tuned"}
    assert steps and steps[-1][0] == steps[-1][1]  # the progress reached the last step

    base = LocalEmbedder(EmbeddingSettings())
    tuned = LocalEmbedder(EmbeddingSettings(model=str(result.path), runtime="native"))
    assert tuned.identity != base.identity and manifest["hash"][:12] in tuned.identity
    texts = ["where is my parcel", "write me a poem about the sea"]
    old, new = base.embed(texts), tuned.embed(texts)
    cosines = (old * new).sum(axis=1)
    assert np.all(cosines < 0.99999) and np.all(cosines > 0.8)

    again = finetune_encoder(
        catalog, EmbeddingSettings(), out=tmp_path / "again", name="shop", config=SMALL
    )
    assert again.manifest["hash"] == manifest["hash"]

    settings = Settings(
        data_dir=tmp_path / "data",
        catalog=SHOP,
        embedding=EmbeddingSettings(model=str(result.path)),
        gate={"threshold": 0.45, "allow_uncalibrated": True},
    )
    gate = Gatekeeper.from_settings(settings)
    gate.index()
    assert gate.check("where is my parcel, it's been 5 days").route is Route.LLM
    assert gate.check("write me a poem about the sea").route is Route.OFF_TOPIC


def test_an_interrupted_fine_tune_leaves_nothing(tmp_path: Path) -> None:
    """Stopped mid-training (Ctrl-C), the run writes no model and no partial directory."""

    def interrupt(step: int, total: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_encoder(
            load_catalog(SHOP), EmbeddingSettings(), models_dir=tmp_path / "models",
            config=SMALL, progress=interrupt,
        )  # fmt: skip
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_fine_tuning_needs_a_local_float_encoder(tmp_path: Path) -> None:
    """A remote embedder or an int8 model is refused with the way out named."""
    remote = EmbeddingSettings(provider="openai", model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="--method adapter"):
        finetune_encoder(load_catalog(SHOP), remote, out=tmp_path / "m")
    with pytest.raises(ConfigError, match="quantize"):
        finetune_encoder(load_catalog(SHOP), EmbeddingSettings(quantize="int8"), out=tmp_path / "m")


def test_tune_command_fine_tunes_and_writes_the_model_setting(tmp_path: Path) -> None:
    """`gatekeeper tune --method encoder --write` prints the settings line and stores
    embedding.model in the settings file."""
    from gatekeeper.cli import app

    config = tmp_path / "gatekeeper.yaml"
    config.write_text(f"catalog: {SHOP}\ndata_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["tune", "--config", str(config), "--method", "encoder", "--triplets", "16", "--write"],
    )
    assert result.exit_code == 0, result.output
    assert "GATEKEEPER_EMBEDDING__MODEL=" in result.output
    assert "gatekeeper index --rebuild" in result.output
    written = [p for p in (tmp_path / "data" / "models").iterdir()]
    assert len(written) == 1 and written[0].name.startswith("shop-encoder-")
    assert str(written[0].resolve()) in config.read_text(encoding="utf-8")
