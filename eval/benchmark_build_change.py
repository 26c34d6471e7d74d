"""Query latency while the build changes under a reader that searches in memory.

    .venv/bin/python eval/benchmark_build_change.py                 # 15,000 exemplars, 5 syncs
    .venv/bin/python eval/benchmark_build_change.py --n 2000 --syncs 3

A writer process and a reader share one embedded Chroma, as ``gatekeeper index`` beside a
serving proxy, and a seeded synthetic catalog of ``--n`` exemplars embedded with the hashing
test embedder (``--dimension``, default 384: no model, so the time measured is the store's).
A reader thread queries one vector at a time without pause while the writer syncs a catalog
with one exemplar more, ``--syncs`` times (on the embedded store each sync fills a new build and
flips the pointer). The report gives the reader's latency p50 / p99 / max over the whole run,
the slowest query from each flip until the reader answers from the new build, and how long that
took. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from gatekeeper.catalog import Catalog, parse_catalog
from gatekeeper.settings import StoreSettings
from gatekeeper.store import ExemplarStore, open_client
from gatekeeper.testing import HashingEmbedder


def catalog(n: int, extra: int, seed: int) -> Catalog:
    """``n`` exemplars over 50 intents (random words), plus ``extra`` marked new ones."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(5000)]
    intents: dict[str, list[str]] = {}
    for i in range(n):
        text = " ".join(rng.choice(words, size=6)) + f" #{i}"
        intents.setdefault(f"intent_{i % 50}", []).append(text)
    intents["intent_0"] += [f"brand new exemplar {j}" for j in range(extra)]
    return parse_catalog(
        {
            "domain": "a synthetic shop",
            "intents": [{"name": k, "exemplars": v} for k, v in intents.items()],
            "off_topic": {"reply": "Shop questions only.", "exemplars": ["tell me a joke"]},
        }
    )


def write(data_dir: str, n: int, extra: int, seed: int, dimension: int) -> None:
    """The writer process: sync the catalog with ``extra`` new exemplars."""
    client = open_client(StoreSettings(), Path(data_dir))
    writer = ExemplarStore(client, "bench", search="memory", copy_on_write=True)
    writer.sync(catalog(n, extra, seed), HashingEmbedder(dimension))


def sync(spawn: Any, data_dir: str, args: argparse.Namespace, extra: int) -> None:
    """Run :func:`write` in a process of its own and wait for it."""
    writer = spawn.Process(target=write, args=(data_dir, args.n, extra, args.seed, args.dimension))
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        raise SystemExit(f"the writer failed (exit code {writer.exitcode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=15000, help="exemplars (default 15000)")
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--syncs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    embedder = HashingEmbedder(args.dimension)
    with tempfile.TemporaryDirectory(prefix="gk-build-change-") as tmp:
        spawn = multiprocessing.get_context("spawn")
        started = time.perf_counter()
        sync(spawn, tmp, args, extra=0)
        print(f"indexed {args.n} exemplars in {time.perf_counter() - started:.1f} s")
        client = open_client(StoreSettings(), Path(tmp))
        reader = ExemplarStore(client, "bench", search="memory", pointer_ttl=0.5)
        probe = embedder.embed(["w1 w2 w3 w4 w5 w6"])
        reader.query(probe)  # the reader's first copy

        latencies: list[tuple[float, float]] = []  # (finished at, seconds)
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                reader.query(probe)
                latencies.append((time.perf_counter(), time.perf_counter() - t))

        thread = threading.Thread(target=read)
        thread.start()
        flips: list[float] = []
        seen: list[float] = []
        for extra in range(1, args.syncs + 1):
            time.sleep(1.0)
            sync(spawn, tmp, args, extra)
            flipped = time.perf_counter()
            flips.append(flipped)
            new = embedder.embed([f"brand new exemplar {extra - 1}"])
            while reader.query(new)[0][0].text != f"brand new exemplar {extra - 1}":
                time.sleep(0.005)
            seen.append(time.perf_counter() - flipped)
        time.sleep(1.0)
        stop.set()
        thread.join()

    ms = sorted(s * 1000 for _, s in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"reader: {len(ms)} queries, p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, "
        f"max {ms[-1]:.1f} ms"
    )
    for number, (flip, took) in enumerate(zip(flips, seen, strict=True), start=1):
        after = [s * 1000 for t, s in latencies if flip <= t <= flip + took]
        worst = max(after) if after else float("nan")
        print(
            f"sync {number}: slowest query from the flip to the new build {worst:.1f} ms; "
            f"new build served after {took:.2f} s"
        )


if __name__ == "__main__":
    main()
