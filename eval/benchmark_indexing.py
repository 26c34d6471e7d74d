"""Indexing time vs the model's own batch encode of the same texts, side by side in one run.

    .venv/bin/python eval/benchmark_indexing.py [--data DIR] [--n 15000] [--rounds 2]
        [--profile F]

The catalog: ``--n`` distinct real customer messages (15,000 by default), banking77's files
under ``../shared/benchmarks/banking77`` first (``--data``; the catalog's 50 intents, then the
other files' rows under their own intents, off-topic rows as off-topic exemplars), topped up
with the repo's own datasets (``eval/datasets``, then the bundled off-topic lists), built with
``parse_catalog``. The default model is loaded and warmed up (one ``embed`` call on all the
texts: a first pass is a few per cent slower than later ones); then each round times

* ``encode``: the model's pure batch encode of the catalog's texts,
  ``LocalEmbedder(EmbeddingSettings()).embed(texts)`` (batches of ``embedding.batch_size``);
* ``index``: a full build of the same catalog through the product's path,
  ``ExemplarStore.sync(catalog, embedder, rebuild=True)`` into an embedded Chroma in a fresh
  temporary directory (encode, Chroma writes and HNSW inserts, the pointer flip), with a
  progress callback as ``gatekeeper index`` passes one; its time is split into the time spent
  in the embedder and the rest (Chroma and the store's own work);

one after the other, in alternating order (even rounds index first), and prints seconds,
exemplars/s and the ratio index/encode of each round, then the medians, the fastest of each
(other jobs only ever add time), and the index's time beyond its embedder as a share of the
encode. ``--profile F`` runs the last round's index build under cProfile and writes the stats
to F (``python -m pstats F``); that round's index time includes the profiler's overhead.

Exits 0 with a message when there are not ``--n`` distinct texts (no banking77 data at its
default place); a ``--data DIR`` given explicitly that lacks the banking77 files exits 2, as
``benchmark_banking77.py`` does.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark_banking77 import DEFAULT_DATA, wrong_data

from gatekeeper.catalog import Catalog
from gatekeeper.embedding import Embedder, Vectors

REPO = Path(__file__).resolve().parent.parent
OFF_TOPIC = "off_topic"


def _banking77(data: Path) -> Iterator[tuple[str, str]]:
    """(text, intent) rows of the banking77 files that are there; intent ``off_topic`` for an
    off-topic row."""
    path = data / "exemplars.csv"
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield row["text"] or "", row["intent"] or ""
    for name in ("calibration.jsonl", "test.jsonl", "unsupported_banking_test.jsonl"):
        yield from _jsonl(data / name)


def _jsonl(path: Path) -> Iterator[tuple[str, str]]:
    """(text, intent) of a dataset's rows, and of each user turn of its conversations."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        intent = str((row.get("label") == "in_domain" and row.get("intent")) or OFF_TOPIC)
        if "text" in row:
            yield row["text"], intent
        for message in row.get("messages", []):
            if message.get("role") == "user":
                yield message["content"], intent


def _repo_texts() -> Iterator[tuple[str, str]]:
    """The repo's own datasets (English first), then the bundled off-topic lists."""
    datasets = sorted((REPO / "eval" / "datasets").glob("shop_*.jsonl"))
    for path in sorted(datasets, key=lambda p: "_zh" in p.name):
        yield from _jsonl(path)
    for name in ("off_topic.en.txt", "off_topic.zh.txt"):
        for line in (REPO / "gatekeeper" / "_data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                yield line, OFF_TOPIC


def build_catalog(data: Path, n: int) -> Catalog | None:
    """A catalog of the first ``n`` distinct texts (compared case-insensitively: the catalog
    refuses an exemplar in two intents), or None when the sources hold fewer."""
    from gatekeeper.catalog import parse_catalog

    seen: set[str] = set()
    intents: dict[str, list[str]] = {}
    off_topic: list[str] = []
    for text, intent in (*_banking77(data), *_repo_texts()):
        text = text.strip()
        if not text or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        (off_topic if intent == OFF_TOPIC else intents.setdefault(intent, [])).append(text)
        if len(seen) == n:
            raw = {
                "domain": "a bank and a shop",
                "intents": [{"name": k, "exemplars": v} for k, v in intents.items()],
                "off_topic": {"exemplars": off_topic},
            }
            return parse_catalog(raw, source="<benchmark_indexing>")
    return None


class TimedEmbedder(Embedder):
    """``inner``, with the seconds spent in its ``embed`` added up (progress calls included)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.batch_size = inner.batch_size
        self.seconds = 0.0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def _encode(self, texts: list[str]) -> Any:
        raise AssertionError("embed is delegated whole")

    def embed(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> Vectors:
        start = time.perf_counter()
        try:
            return self.inner.embed(texts, progress=progress)
        finally:
            self.seconds += time.perf_counter() - start

    def load(self) -> None:
        self.inner.load()


@dataclass(frozen=True)
class Round:
    encode: float
    index: float
    index_encoding: float

    @property
    def ratio(self) -> float:
        return self.index / self.encode


def time_encode(texts: list[str], embedder: Embedder) -> float:
    start = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - start


def time_index(catalog: Catalog, embedder: Embedder, profile: Path | None) -> tuple[float, float]:
    """Seconds of a full build of ``catalog`` into a fresh embedded Chroma, and of them the
    seconds spent in the embedder."""
    from gatekeeper.settings import StoreSettings
    from gatekeeper.store import ExemplarStore, open_client

    timed = TimedEmbedder(embedder)
    reported = 0

    def progress(done: int) -> None:
        nonlocal reported
        reported += done

    with tempfile.TemporaryDirectory() as tmp:
        store = ExemplarStore(open_client(StoreSettings(), Path(tmp)), "benchmark-indexing")
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        store.sync(catalog, timed, rebuild=True, progress=progress)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        if profiler is not None and profile is not None:
            profiler.dump_stats(str(profile))
        count = store.info()
    total = len(catalog.exemplars())
    if reported != total or count is None or count.count != total:
        raise SystemExit(f"the build holds {count} and reported {reported}, not {total}")
    return seconds, timed.seconds


def _line(label: str, n: int, encode: float, index: float, encoding: float) -> str:
    rest = index - encoding
    return (
        f"{label:8s} encode {encode:6.1f} s ({n / encode:4.0f}/s)   "
        f"index {index:6.1f} s ({n / index:4.0f}/s; embedder {encoding:5.1f} s, "
        f"rest {rest:4.1f} s)   index/encode {index / encode:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help=f"banking77 directory (default {DEFAULT_DATA})"
    )
    parser.add_argument("--n", type=int, default=15_000, help="exemplars in the catalog")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the last index")
    args = parser.parse_args(argv)
    if args.data is not None and (error := wrong_data(args.data)):
        print(error, file=sys.stderr)
        return 2
    data = args.data or DEFAULT_DATA
    catalog = build_catalog(data, args.n)
    if catalog is None:
        print(f"indexing benchmark skipped: fewer than {args.n} distinct texts ({data})")
        return 0

    from gatekeeper.embedding import LocalEmbedder
    from gatekeeper.settings import EmbeddingSettings

    embedder = LocalEmbedder(EmbeddingSettings())
    texts = [e.text for e in catalog.exemplars()]
    # One warm-up call on all the texts: loads the model, and the first pass over every batch
    # shape (page faults of fresh allocations) is paid by neither side.
    embedder.embed(texts)
    n = len(texts)
    print(
        f"{n} exemplars ({len(catalog.intents)} intents + off-topic, mean "
        f"{sum(map(len, texts)) / n:.0f} characters), model {embedder.identity}, "
        f"batch {embedder.batch_size}"
    )
    rounds: list[Round] = []
    for i in range(args.rounds):
        profile = args.profile if i == args.rounds - 1 else None
        if i % 2 == 0:
            encode = time_encode(texts, embedder)
            index, encoding = time_index(catalog, embedder, profile)
        else:
            index, encoding = time_index(catalog, embedder, profile)
            encode = time_encode(texts, embedder)
        rounds.append(Round(encode, index, encoding))
        print(_line(f"round {i + 1}", n, encode, index, encoding), flush=True)
    if len(rounds) > 1:
        median = statistics.median
        print(
            _line(
                "median",
                n,
                median(r.encode for r in rounds),
                median(r.index for r in rounds),
                median(r.index_encoding for r in rounds),
            )
            + f" (median of the rounds' ratios {median(r.ratio for r in rounds):.2f})"
        )
        # Other jobs on the machine only ever add time: the fastest of each is the least noisy.
        best = min(rounds, key=lambda r: r.index)
        print(_line("best", n, min(r.encode for r in rounds), best.index, best.index_encoding))
    rest = statistics.median(r.index - r.index_encoding for r in rounds)
    encode = statistics.median(r.encode for r in rounds)
    print(
        f"the index beyond its embedder (Chroma, the store): {rest:.1f} s = "
        f"{rest / encode:.0%} of the encode"
    )
    if args.profile:
        print(f"profile of the last index build: {args.profile} (python -m pstats)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
