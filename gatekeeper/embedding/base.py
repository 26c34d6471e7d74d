"""The :class:`Embedder` base: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.errors import EmbeddingError
from gatekeeper.types import nfc

Vectors = npt.NDArray[np.float32]
Progress = Callable[[int], None]


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors (so cosine similarity is a dot product)."""

    #: A stable name of the model and its options; the index records it.
    identity: str

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of the vectors."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        """Encode one batch; the base class normalises."""

    batch_size: int = 64

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> Vectors:
        """Embed ``texts`` in batches; ``progress`` is called with each batch's size."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Batches of similar length waste less padding; the order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts: list[Vectors] = []
        for start in range(0, len(order), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            expected = parts[0].shape[1] if parts else self.dimension
            parts.append(checked_vectors(self._encode(batch), len(batch), expected, self.identity))
            if progress is not None:
                progress(len(batch))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return normalise(vectors)

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model now rather than on first use."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the embedder holds open (a remote endpoint's HTTP pool); the next
        embedding opens it again."""

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        """For each text, the form of it the model reads: the text itself; or, when the model
        knows some of its tokens only after Unicode compatibility normalisation (NFKC:
        full-width "ｗｈｅｒｅ", mathematical bold "𝐰𝐡𝐞𝐫𝐞"), that form; or None when it reads
        none of it (every token unknown to its vocabulary: an emoji alone, a script it lacks,
        one 4,000-letter "word"), so that it would embed like every other such text and no
        similarity of it would mean anything. A model that cannot tell (a remote endpoint)
        reads every text in Unicode NFC, the form the catalog's exemplars are read in: a
        message typed decomposed ("cancelación" as ``o`` + a combining accent, from macOS or a
        web form) is then embedded as its exemplar is, whatever the endpoint does with it."""
        return [nfc(text) for text in texts]

    @property
    def runtime(self) -> str:
        """What computes the vectors (a local model's runtime, ``openai`` for a remote
        endpoint); "" before a local model is loaded."""
        return ""


def checked_vectors(raw: Any, n: int, dimension: int | None, model: str) -> Vectors:
    """``raw`` as ``n`` float32 vectors of ``dimension`` (any, when None), or
    :class:`EmbeddingError`: a model or endpoint that answers with the wrong count, length or
    NaN must fail like a model failure (``gate.on_error``), not as an unrelated traceback or
    a decision on NaN scores."""
    try:
        vectors = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"{model} returned no {n} vectors: {type(exc).__name__}") from exc
    if vectors.ndim == 1 and n == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise EmbeddingError(f"{model} returned no {n} vectors (shape {vectors.shape})")
    if dimension is not None and vectors.shape[1] != dimension:
        raise EmbeddingError(
            f"{model} returned {vectors.shape[1]}-dimensional vectors; it gave "
            f"{dimension}-dimensional ones before"
        )
    if vectors.shape[1] == 0 or not np.isfinite(vectors).all():
        raise EmbeddingError(f"{model} returned empty vectors or NaN/infinite values")
    return vectors


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    """Scale each row to unit length (rows of zeros stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
