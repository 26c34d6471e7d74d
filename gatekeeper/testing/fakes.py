"""A gate without a model: a hashing embedder, a tiny catalog, and :func:`make_gate`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.embedding import Embedder
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(Embedder):
    """Hashed bag of words and character trigrams: no model, fully deterministic. ``calls``
    counts the batches encoded and ``encoded`` lists every text encoded, in order."""

    def __init__(self, dimension: int = 256) -> None:
        self._dimension = dimension
        self.identity = f"hashing:{dimension}"
        self.calls = 0
        self.encoded: list[str] = []

    @property
    def runtime(self) -> str:
        return "hashing"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        self.calls += 1
        self.encoded += texts
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in self._features(text):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        return out

    @staticmethod
    def _features(text: str) -> list[str]:
        words = [w.casefold() for w in _TOKEN.findall(text)]
        grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        return words + words + grams


def tiny_catalog() -> Catalog:
    """A small shop catalog for tests."""
    return parse_catalog(
        {
            "domain": "a small test shop",
            "intents": [
                {
                    "name": "order_status",
                    "exemplars": ["where is my order", "track my order", "order status please"],
                },
                {
                    "name": "refund_request",
                    "exemplars": ["i want a refund", "refund my money", "how do refunds work"],
                },
                {
                    "name": "greeting",
                    "reply": "Hello! How can I help?",
                    "exemplars": ["hello", "hi there"],
                },
            ],
            "off_topic": {
                "reply": "Sorry, I only help with orders.",
                "exemplars": ["tell me a joke", "what is the weather today", "write a poem"],
            },
        },
        source="<tiny>",
    )


def make_gate(data_dir: Path, catalog: Catalog | None = None, **overrides: Any) -> Gatekeeper:
    """A :class:`~gatekeeper.gate.Gatekeeper` on :class:`HashingEmbedder` and an embedded Chroma
    under ``data_dir``; ``overrides`` are settings (``gate={"threshold": 0.4}``)."""
    overrides["gate"] = {
        "threshold": 0.35,
        "rule": "contrast",
        "allow_uncalibrated": True,  # a test gate: the threshold is the test's own choice
        **overrides.get("gate", {}),
    }
    settings = Settings(data_dir=data_dir, **overrides)  # no settings file: tests stay isolated
    return Gatekeeper.from_settings(
        settings, catalog=catalog or tiny_catalog(), embedder=HashingEmbedder()
    )
