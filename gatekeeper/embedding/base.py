"""The :class:`Embedder` base: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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
        parts = []
        for start in range(0, len(order), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            parts.append(np.asarray(self._encode(batch), dtype=np.float32).reshape(len(batch), -1))
            if progress is not None:
                progress(len(batch))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return normalise(vectors)

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model now rather than on first use."""

    @property
    def runtime(self) -> str:
        """What computes the vectors (a local model's runtime, ``openai`` for a remote
        endpoint); "" before a local model is loaded."""
        return ""


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    """Scale each row to unit length (rows of zeros stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
