"""Recently judged customer turns' vectors, so a conversation's earlier turns are not embedded
again.

A chat client sends the whole conversation with every request, and the gate judges up to
``CONTEXT_TURNS`` customer turns of it (:mod:`gatekeeper.conversation`). Every earlier turn was
the last turn of an earlier request, so its vector was computed then. :class:`TurnVectors`
keeps the most recent ``gate.turn_cache`` vectors (least recently used out), and the gate embeds
only the turns it has not seen: a chat's request costs one turn's forward pass, not four.

Privacy: the key is a keyed digest of the text (BLAKE2b under a random per-process key), never
the text, so the cache holds no customer text and its keys cannot be matched against guesses
outside the process. Vectors depend on the model only (not on the index), so a rebuild does not
make them stale; a gate has one embedder for its life.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from hashlib import blake2b

import numpy as np

from gatekeeper.embedding.base import Progress, Vectors


class TurnVectors:
    """A bounded, thread-safe LRU of text → vector (``size`` 0: keeps nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._key = os.urandom(16)
        self._vectors: OrderedDict[bytes, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def _digest(self, text: str) -> bytes:
        return blake2b(
            text.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16
        ).digest()

    def embed(
        self,
        texts: Sequence[str],
        embed: Callable[[list[str]], Vectors],
        progress: Progress | None = None,
    ) -> Vectors:
        """The vectors of ``texts`` (distinct): kept ones from the cache, the others from
        ``embed`` (called once, with the missing texts in order, and only if any are missing).
        ``progress`` is called with the number of texts the cache answered."""
        if self.size == 0 or not texts:
            return embed(list(texts))
        keys = [self._digest(t) for t in texts]
        with self._lock:
            found = [self._vectors.get(k) for k in keys]
            for key, vector in zip(keys, found, strict=True):
                if vector is not None:
                    self._vectors.move_to_end(key)
        missing = [i for i, vector in enumerate(found) if vector is None]
        if progress is not None and len(missing) < len(texts):
            progress(len(texts) - len(missing))
        if missing:
            fresh = embed([texts[i] for i in missing])
            with self._lock:
                for i, row in zip(missing, fresh, strict=True):
                    vector = row.copy()  # a row of its own, not a view keeping the batch alive
                    found[i] = vector
                    self._vectors[keys[i]] = vector
                    self._vectors.move_to_end(keys[i])
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        return np.stack([v for v in found if v is not None]).astype(np.float32, copy=False)
