"""A gate without a model: a hashing embedder, a tiny catalog, and :func:`make_gate`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.decision import Decision
from gatekeeper.embedding import Embedder
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import settings_from_values
from gatekeeper.types import Message, OnError, Progress

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


class _TestGate(Gatekeeper):
    """A gate whose checks that name no ``on_error`` follow :attr:`on_error` (``raise`` is no
    ``gate.on_error`` a settings file or a proxy can take)."""

    on_error: OnError = "raise"

    def check_many(
        self,
        messages: Sequence[Message],
        *,
        on_error: OnError | None = None,
        progress: Progress | None = None,
    ) -> list[Decision]:
        chosen = self.on_error if on_error is None else on_error
        return super().check_many(messages, on_error=chosen, progress=progress)


def make_gate(
    data_dir: Path,
    catalog: Catalog | None = None,
    *,
    on_error: OnError | None = None,
    **overrides: Any,
) -> Gatekeeper:
    """A :class:`~gatekeeper.gate.Gatekeeper` on :class:`HashingEmbedder` and an embedded Chroma
    under ``data_dir``; ``overrides`` are settings (``gate={"threshold": 0.4}``), and the only
    ones read: no ``GATEKEEPER_*`` variable, ``.env`` or settings file changes a test's gate.

    ``on_error`` is what a check that names none does when the gate fails (the model or
    Chroma): by default ``gate.on_error`` when ``overrides`` set it, else ``"raise"``, so that a
    broken test gate fails the test rather than forwarding every message. ``"fail_open"`` and
    ``"fail_closed"`` also become ``gate.on_error``, which a proxy in front of the gate follows
    (a proxy never raises: it follows ``gate.on_error``, ``fail_open`` unless set).
    """
    gate = {
        "threshold": 0.35,
        "rule": "contrast",
        "allow_uncalibrated": True,  # a test gate: the threshold is the test's own choice
        **overrides.get("gate", {}),
    }
    policy: OnError = on_error or gate.get("on_error") or "raise"
    if policy != "raise":
        gate["on_error"] = policy
    settings = settings_from_values(data_dir=data_dir, **{**overrides, "gate": gate})
    built = _TestGate.from_settings(
        settings, catalog=catalog or tiny_catalog(), embedder=HashingEmbedder()
    )
    assert isinstance(built, _TestGate)  # from_settings builds its class
    built.on_error = policy
    return built
