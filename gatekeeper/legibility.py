"""Whether the embedding model reads a catalog's language at all.

A model that does not know a script maps its words to the same few unknown tokens, so texts that
mean different things embed to (nearly) the same vector: MiniLM, an English model, gives 31% of
the Chinese shop catalog's 527 distinct exemplars a twin at cosine >= 0.995, and 0% of the
English catalog's 541. Every similarity is then meaningless, and nothing else says so: the gate
runs, scores near 1.0, and forwards everything. This check is the model-agnostic symptom (it
needs only the vectors, so it holds for remote models too): too many distinct in-domain
exemplars that the model cannot tell apart. The bar was read off catalogs the model does read
(MiniLM: 0.8% of banking77's 5,903 real customer queries have such a twin, 0% of the shop's)
and one it does not (31%, and 17% of a 209-exemplar Chinese catalog from ``gatekeeper init``).

Exemplars the model reads nothing of at all (:func:`illegible_warning`: every token unknown to
it, "👋" in a greeting intent) are named one by one: a message like them is not scored (it is
refused as a first turn, :data:`~gatekeeper.conversation.UNREADABLE`), so they match nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gatekeeper.types import OFF_TOPIC

if TYPE_CHECKING:
    from gatekeeper.embedding import Embedder
    from gatekeeper.store import ExemplarStore

#: Two distinct texts closer than this are ones the model cannot tell apart.
TWIN_COSINE = 0.995
#: A share of exemplars with a twin above this means the model does not read the catalog.
UNREADABLE_SHARE = 0.10
_CHUNK = 1024


def twins(texts: Sequence[str], vectors: npt.NDArray[np.floating]) -> list[tuple[int, int]]:
    """For each text that has one, ``(its index, the index of its nearest other text)`` when
    that other text is different yet embeds at cosine >= :data:`TWIN_COSINE` (unit vectors;
    the same text twice, in two intents, is no twin)."""
    unit = np.asarray(vectors, dtype=np.float32)
    found: list[tuple[int, int]] = []
    for start in range(0, len(unit), _CHUNK):
        sims = unit[start : start + _CHUNK] @ unit.T
        for row, sim in enumerate(sims):
            i = start + row
            close = np.flatnonzero(sim >= TWIN_COSINE).tolist()
            same = [j for j in close if texts[j] != texts[i]]
            if same:
                found.append((i, max(same, key=lambda j: sim[j])))
    return found


def unreadable_warning(texts: Sequence[str], vectors: npt.NDArray[np.floating]) -> str | None:
    """A warning when the model cannot tell apart :data:`UNREADABLE_SHARE` or more of the
    distinct ``texts`` (see the module docstring), with an example pair; None otherwise."""
    distinct = len(set(texts))
    if distinct < 2:
        return None
    pairs = twins(texts, vectors)
    with_twin = len({texts[i] for i, _ in pairs})
    if with_twin < UNREADABLE_SHARE * distinct:
        return None
    i, j = pairs[0]
    return (
        f"the embedding model cannot tell {with_twin} of {distinct} distinct exemplars from "
        f"another one (cosine >= {TWIN_COSINE}, e.g. {texts[i]!r} and {texts[j]!r}): it "
        "probably does not read their language, and every similarity it gives is meaningless. "
        "Use a model that reads it (for Chinese, README: 'Chinese shop, end to end') before "
        "indexing and calibrating."
    )


def illegible_warning(texts: Sequence[str], forms: Sequence[str | None]) -> str | None:
    """A warning naming the exemplars whose readable form (``Embedder.legible``) is None;
    None when there are none."""
    unread = sorted({text for text, form in zip(texts, forms, strict=True) if form is None})
    if not unread:
        return None
    shown = ", ".join(repr(text[:40]) for text in unread[:5])
    more = f" and {len(unread) - 5} more" if len(unread) > 5 else ""
    one = len(unread) == 1
    them, they = ("it", "it matches") if one else ("them", "they match")
    return (
        f"the embedding model reads nothing of {len(unread)} exemplar{'' if one else 's'} "
        f"({shown}{more}): every token is unknown to it, so a message like {them} is not "
        f"scored (refused as a first turn) and {they} nothing. Write {them} in words the model "
        f"reads, or use a model that reads {them}."
    )


def index_warnings(store: ExemplarStore, embedder: Embedder) -> list[str]:
    """:func:`unreadable_warning` on the in-domain exemplars of an index, as stored, and
    :func:`illegible_warning` on all of them."""
    exemplars = store.exemplars()
    in_domain = [i for i, name in enumerate(exemplars.intents) if name != OFF_TOPIC]
    texts = list(exemplars.texts)
    warnings = [
        unreadable_warning([texts[i] for i in in_domain], exemplars.vectors[in_domain]),
        illegible_warning(texts, embedder.legible(texts)),
    ]
    return [warning for warning in warnings if warning]
