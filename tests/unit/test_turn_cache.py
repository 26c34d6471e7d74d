"""Recently judged turns' vectors: a conversation's earlier turns are not embedded again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.embedding import Vectors
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.run import measure_latency, run_eval
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import HashingEmbedder, make_gate
from gatekeeper.turn_cache import TurnVectors

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class Counting:
    """An embed function that records the texts it was asked for."""

    def __init__(self) -> None:
        self.embedder = HashingEmbedder()
        self.asked: list[list[str]] = []

    def __call__(self, texts: list[str]) -> Vectors:
        self.asked.append(list(texts))
        return self.embedder.embed(texts)


def test_only_unseen_texts_are_embedded() -> None:
    """A second call embeds only the texts the first did not, and returns the same vectors."""
    cache, embed = TurnVectors(16), Counting()
    first = cache.embed(["where is my order", "hello"], embed)
    second = cache.embed(["hello", "refund please", "where is my order"], embed)
    assert embed.asked == [["where is my order", "hello"], ["refund please"]]
    assert np.array_equal(second[0], first[1])
    assert np.array_equal(second[2], first[0])
    assert np.array_equal(second[1], embed.embedder.embed(["refund please"])[0])


def test_least_recently_used_leaves_first() -> None:
    """Beyond its size the cache drops the turn used longest ago."""
    cache, embed = TurnVectors(2), Counting()
    cache.embed(["a b c"], embed)
    cache.embed(["d e f"], embed)
    cache.embed(["a b c"], embed)  # used again: now the most recent
    cache.embed(["g h i"], embed)  # drops "d e f"
    cache.embed(["a b c", "d e f"], embed)
    assert embed.asked[-1] == ["d e f"]
    assert len(cache) == 2


def test_size_zero_keeps_nothing() -> None:
    """turn_cache 0: every call embeds every text."""
    cache, embed = TurnVectors(0), Counting()
    cache.embed(["hello"], embed)
    cache.embed(["hello"], embed)
    assert embed.asked == [["hello"], ["hello"]]
    assert len(cache) == 0


def test_the_cache_holds_no_customer_text() -> None:
    """Keys are keyed digests: the text is nowhere in the cache."""
    cache, embed = TurnVectors(4), Counting()
    text = "my phone is +44 7700 900123"
    cache.embed([text], embed)
    keys = list(cache._vectors)
    assert all(isinstance(k, bytes) and len(k) == 16 for k in keys)
    assert text.encode() not in b"".join(keys)
    assert TurnVectors(4)._digest(text) != cache._digest(text)  # a key of each process's own


def test_progress_counts_cached_texts() -> None:
    """progress hears of the texts the cache answered, so a progress bar still reaches its end."""
    cache, embed = TurnVectors(8), Counting()
    seen: list[int] = []
    cache.embed(["a", "b"], embed, seen.append)
    cache.embed(["a", "b", "c"], embed, seen.append)
    assert seen == [2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list("abcdefgh")), min_size=1, max_size=5, unique=True)))
def test_cached_vectors_equal_fresh_ones(calls: list[list[str]]) -> None:
    """Whatever the order of calls, a small cache returns exactly what embedding would."""
    cache, embed = TurnVectors(3), Counting()
    for texts in calls:
        assert np.array_equal(cache.embed(texts, embed), embed.embedder.embed(texts))


def test_a_chat_request_embeds_only_its_new_turn(tmp_path: Path) -> None:
    """Once a chat's earlier request was decided, the next one embeds its last turn alone, and
    decides exactly as a gate without the cache."""
    gate = make_gate(tmp_path / "a")
    uncached = make_gate(tmp_path / "b", gate={"turn_cache": 0})
    chat = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "What is the order number?"},
        {"role": "user", "content": "NW-83121"},
    ]
    gate.check(chat[:1])
    embedder = gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    before = len(embedder.encoded)
    decided = gate.check(chat)
    assert embedder.encoded[before:] == ["NW-83121"]
    expected = uncached.check(chat)
    assert (decided.route, decided.intent, decided.score, decided.followup) == (
        expected.route,
        expected.intent,
        expected.score,
        expected.followup,
    )


def test_the_eval_times_fresh_decisions(tiny_gate: Gatekeeper) -> None:
    """The eval's latency sample embeds every timed message again, though the run just judged
    it: a report's gate latency is never the cache's."""
    data = load_dataset(FIXTURES / "tiny_eval.jsonl")
    run_eval(tiny_gate, data, EvalOptions(latency_sample=3, bootstrap=0, seed=1))
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    before = len(embedder.encoded)
    gate_ms, _ = measure_latency(tiny_gate, data, EvalOptions(latency_sample=3, seed=1))
    timed = embedder.encoded[before:]
    assert len(gate_ms) == 3
    # Each timed message is encoded twice: by its gate.check and by the embedding-alone timing.
    assert len(timed) == 2 * 3 + 1  # and once more for the untimed warm-up
