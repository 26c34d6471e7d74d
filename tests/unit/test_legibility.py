"""A model that cannot read the catalog's language is said so, from the vectors alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.catalog import read_catalog
from gatekeeper.legibility import twins, unreadable_warning
from gatekeeper.scaffold import scaffold_catalog
from gatekeeper.testing import HashingEmbedder


class AsciiOnlyEmbedder(HashingEmbedder):
    """An English-only model's failure: every non-ASCII character is the same unknown token."""

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        return super()._encode(["".join(c if c.isascii() else " unk " for c in t) for t in texts])


def _unit(rows: list[list[float]]) -> npt.NDArray[np.float32]:
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_twins_are_distinct_texts_with_the_same_vector() -> None:
    """Different texts at cosine >= 0.995 are twins; the same text twice (two intents) is not."""
    texts = ["a", "b", "a", "c"]
    vectors = _unit([[1, 0], [1, 0.001], [1, 0], [0, 1]])
    assert twins(texts, vectors) == [(0, 1), (1, 0), (2, 1)]


def test_the_warning_needs_a_tenth_of_the_exemplars_with_a_twin() -> None:
    """Distinct vectors: no warning; 1 of 20 texts with a twin: none; 2 of 20: a warning
    naming the count and an example pair."""
    texts = [f"t{i}" for i in range(20)]
    vectors = np.eye(20, dtype=np.float32)
    assert unreadable_warning(texts, vectors) is None
    vectors[1] = vectors[0]
    vectors[1, 1] = 0.05  # t1 is t0's twin, t0 is t1's: two texts with one
    warning = unreadable_warning(texts, _unit(vectors.tolist()))
    assert warning is not None and "cannot tell 2 of 20" in warning and "'t0'" in warning
    more = [f"u{i}" for i in range(2)]
    wider = np.eye(22, dtype=np.float32)
    wider[1, :] = wider[0, :] + 0.05 * wider[1, :]
    assert unreadable_warning(texts + more, _unit(wider.tolist())) is None


def test_init_warns_when_the_model_cannot_read_the_examples(tmp_path: Path) -> None:
    """`init` on Chinese examples with an ASCII-only model notes that the model does not read
    them; the same examples with a model that reads them get no note."""
    examples = tmp_path / "zh.csv"
    rows = [
        "我的快递到哪了",
        "订单什么时候发货",
        "怎么退款",
        "退货地址是哪里",
        "能开发票吗",
        "优惠券怎么用",
    ]
    examples.write_text(
        "text,intent\n" + "".join(f"{t},i{n % 3}\n" for n, t in enumerate(rows)), encoding="utf-8"
    )
    catalog = read_catalog(examples).catalog
    blind = scaffold_catalog(catalog, AsciiOnlyEmbedder())
    assert len(blind.notes) == 1 and "cannot tell" in blind.notes[0]
    assert scaffold_catalog(catalog, HashingEmbedder()).notes == ()


class EmojiBlindEmbedder(HashingEmbedder):
    """A model whose vocabulary has no emoji: a text of emoji alone is one it reads nothing
    of."""

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        return [None if t and all(ord(c) > 0x2000 or c.isspace() for c in t) else t for t in texts]


def test_index_names_the_exemplars_the_model_reads_nothing_of(tmp_path: Path) -> None:
    """`index_warnings` names exemplars the model reads nothing of ("👋" in a greeting), which
    would match nothing, since such messages are not scored; a catalog it reads gets none."""
    from gatekeeper.catalog import parse_catalog
    from gatekeeper.legibility import index_warnings
    from gatekeeper.testing import make_gate, tiny_catalog

    plain = make_gate(tmp_path / "plain")
    plain.index()
    assert index_warnings(plain.store, EmojiBlindEmbedder()) == []
    data = tiny_catalog().model_dump(mode="json")
    data["intents"][2]["exemplars"] += ["👋", "🙋 👋"]
    waving = make_gate(tmp_path / "waving", parse_catalog(data, source="<waving>"))
    waving.index()
    (warning,) = index_warnings(waving.store, EmojiBlindEmbedder())
    assert "reads nothing of 2 exemplars ('👋', '🙋 👋')" in warning


def test_init_names_the_examples_the_model_reads_nothing_of(tmp_path: Path) -> None:
    """`init` notes an owner's example the model reads nothing of, by its text."""
    examples = tmp_path / "shop.csv"
    rows = ["where is my order,orders", "track my parcel,orders", "👋,greeting", "hello,greeting"]
    examples.write_text("text,intent\n" + "\n".join(rows) + "\n", encoding="utf-8")
    scaffold = scaffold_catalog(read_catalog(examples).catalog, EmojiBlindEmbedder())
    assert any("reads nothing of 1 exemplar ('👋')" in note for note in scaffold.notes)
