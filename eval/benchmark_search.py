"""Nearest-exemplar search at scale: exact in memory vs coarse PCA search (+ exact re-rank) vs
Chroma's HNSW, on a seeded synthetic catalog of clustered unit vectors.

    .venv/bin/python eval/benchmark_search.py                       # 100k x 3,072-d (2-3 min)
    .venv/bin/python eval/benchmark_search.py --n 20000 --dimension 384 --chroma
    .venv/bin/python eval/benchmark_search.py --n 20000 --chroma    # + a ~1 min Chroma build
    .venv/bin/python eval/benchmark_search.py --vectors X.npy --queries-file Q.npy  # your own

At 100k x 3,072 ``--chroma`` adds a ~5 min Chroma build; it is off by default.

The catalog imitates intents: ``--clusters`` centres drawn in a ``--latent``-dimensional
subspace whose variances fall off as a power law (``--decay``), exemplars scattered around their
centre in that subspace (``--spread``), plus isotropic noise over all dimensions (``--noise``)
and a direction every vector shares (``--bias``: real embeddings are anisotropic), normalised.
Queries: ``near`` ones are drawn like new exemplars of the catalog's intents (paraphrases),
``far`` ones around centres the catalog does not have (off-topic messages). The report prints
how much variance the PCA keeps, so the data can be compared with a real catalog's.

For k (default 20, the gate's ``store.top_k``) it reports recall@k against the exact search
(the share of the exact top k found), how often the top neighbour is the exact one, p50/p95
latency of one query and of a batch of 32 through :meth:`ExemplarMatrix.nearest` (one BLAS
thread, as the gate runs it; ``--all-threads`` lifts that), the one-off PCA fit, and the memory
each structure holds. Each latency is measured ``--repeats`` times and the median of the runs'
percentiles is printed: on a shared machine single runs are noisy. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gatekeeper.search import ExemplarMatrix
from gatekeeper.types import Neighbour

Search = Callable[[npt.NDArray[np.float32]], list[list[Neighbour]]]
Matrix = npt.NDArray[np.float32]


@dataclass
class Row:
    """One line of the report."""

    method: str
    recall_near: float
    recall_far: float
    top1: float
    single: tuple[float, float]
    batch: tuple[float, float]
    memory: int
    setup: float


def unit(x: Matrix) -> Matrix:
    """Rows scaled to unit length."""
    scaled: Matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return scaled


def synthetic(args: argparse.Namespace) -> tuple[Matrix, Matrix, Matrix]:
    """(catalog, near queries, far queries): clustered unit vectors, seeded."""
    rng = np.random.default_rng(args.seed)
    d, latent = args.dimension, min(args.latent, args.dimension)
    basis = np.linalg.qr(rng.standard_normal((d, latent)))[0].astype(np.float32)
    scale = (np.arange(1, latent + 1) ** (-args.decay / 2)).astype(np.float32)
    shared = unit(rng.standard_normal((1, d)).astype(np.float32))[0]

    def draw(centres: Matrix) -> Matrix:
        out = np.empty((len(centres), d), np.float32)
        for start in range(0, len(centres), 10_000):
            c = centres[start : start + 10_000]
            scatter = unit(rng.standard_normal(c.shape, dtype=np.float32) * scale)
            noise = unit(rng.standard_normal((len(c), d), dtype=np.float32))
            x = (c + args.spread * scatter) @ basis.T + args.noise * noise + args.bias * shared
            out[start : start + len(c)] = unit(x)
        return out

    def centres(count: int) -> Matrix:
        return unit(rng.standard_normal((count, latent), dtype=np.float32) * scale)

    intents = centres(args.clusters)
    catalog = draw(intents[rng.integers(0, args.clusters, args.n)])
    far = round(args.queries * args.far)
    near = draw(intents[rng.integers(0, args.clusters, args.queries - far)])
    return catalog, near, draw(centres(far))


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 of millisecond samples."""
    p50, p95 = np.percentile(samples, [50, 95])
    return float(p50), float(p95)


def timed(search: Search, queries: Matrix, batch: int, repeats: int) -> tuple[float, float]:
    """Median over ``repeats`` runs of the p50 and p95 of ``search`` on ``batch`` queries."""
    runs = []
    for _ in range(repeats):
        samples = []
        for start in range(0, len(queries) - batch + 1, batch):
            chunk = queries[start : start + batch]
            began = time.perf_counter()
            search(chunk)
            samples.append((time.perf_counter() - began) * 1000)
        runs.append(percentiles(samples))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def exact_top(catalog: Matrix, queries: Matrix, k: int) -> list[list[int]]:
    """The exact top-k rows of each query, most similar first."""
    out = []
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ catalog.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, rows in zip(sims, top, strict=True):
            out.append(rows[np.argsort(-row[rows])].tolist())
    return out


def quality(
    search: Search, queries: Matrix, truth: list[list[int]], far_from: int, k: int
) -> tuple[float, float, float]:
    """(recall@k of the near queries, of the far ones, share whose top neighbour is exact)."""
    found: list[list[Neighbour]] = []
    for start in range(0, len(queries), 64):
        found += search(queries[start : start + 64])
    recalls = [
        len({int(n.id) for n in got} & set(want)) / k
        for got, want in zip(found, truth, strict=True)
    ]
    top1 = [bool(got) and int(got[0].id) == want[0] for got, want in zip(found, truth, strict=True)]
    near, far = recalls[:far_from], recalls[far_from:]
    return (
        statistics.fmean(near) if near else float("nan"),
        statistics.fmean(far) if far else float("nan"),
        statistics.fmean(top1),
    )


def _share(value: float) -> str:
    """A recall, or a dash when there was nothing to measure it on."""
    return "–" if np.isnan(value) else f"{value:.4f}"


def rss() -> int:
    """This process's resident memory in bytes (Linux), or 0."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def chroma_row(
    catalog: Matrix,
    queries: Matrix,
    truth: list[list[int]],
    far_from: int,
    timing: tuple[Matrix, Matrix],
    args: argparse.Namespace,
) -> Row:
    """Chroma's HNSW query (embedded, cosine, its default index parameters), as the store runs
    it (documents, metadatas and distances included)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    where = Path(tempfile.mkdtemp(prefix="gk-bench-chroma-"))
    try:
        client = chromadb.PersistentClient(
            path=str(where), settings=ChromaSettings(anonymized_telemetry=False)
        )
        collection = client.create_collection("bench-search", metadata={"hnsw:space": "cosine"})
        before = rss()
        began = time.perf_counter()
        for start in range(0, len(catalog), 1000):
            rows = range(start, min(start + 1000, len(catalog)))
            collection.add(
                ids=[str(i) for i in rows],
                embeddings=catalog[start : start + 1000],
                documents=[f"exemplar {i}" for i in rows],
                metadatas=[{"intent": f"i{i % 97}"} for i in rows],
            )
        setup = time.perf_counter() - began

        def search(batch: Matrix) -> list[list[Neighbour]]:
            result = collection.query(
                query_embeddings=batch,
                n_results=args.k,
                include=["documents", "metadatas", "distances"],
            )
            return [
                [Neighbour(id=i, text="", intent="", similarity=0.0) for i in ids]
                for ids in result["ids"]
            ]

        recall = quality(search, queries, truth, far_from, args.k)
        single = timed(search, timing[0], 1, args.repeats)
        batch = timed(search, timing[1], 32, args.repeats)
        memory = max(rss() - before, 0)
        # the alternative to keeping the full vectors in memory: fetch a shortlist's by id
        rng = np.random.default_rng(args.seed)

        def fetch(_: Matrix) -> list[list[Neighbour]]:
            rows = rng.choice(len(catalog), 200, replace=False)
            collection.get(ids=[str(i) for i in rows], include=["embeddings"])
            return []

        fetched = timed(fetch, np.zeros((20, 1), np.float32), 1, args.repeats)
        print(f"  chroma: 200 vectors fetched by id: p50 {fetched[0]:.1f} ms, p95 {fetched[1]:.1f}")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return Row("chroma hnsw (default ef)", *recall, single, batch, memory, setup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="exemplars")
    parser.add_argument("--dimension", type=int, default=3072)
    parser.add_argument("--clusters", type=int, default=3000, help="intents")
    parser.add_argument("--latent", type=int, default=1024)
    parser.add_argument("--decay", type=float, default=1.0)
    parser.add_argument("--spread", type=float, default=0.7)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--bias", type=float, default=0.4)
    parser.add_argument("--queries", type=int, default=1000, help="for recall")
    parser.add_argument("--far", type=float, default=0.25, help="share of far queries")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--pca", default="64,128,256", help="reduced dimensions")
    parser.add_argument("--candidates", default="100,200,400", help="shortlist sizes")
    parser.add_argument("--single", type=int, default=200, help="queries timed one by one")
    parser.add_argument("--batches", type=int, default=10, help="batches of 32 timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chroma", action="store_true", help="also build and query Chroma")
    parser.add_argument("--all-threads", action="store_true", help="no one-BLAS-thread limit")
    parser.add_argument("--vectors", type=Path, help="a saved (n, d) catalog instead")
    parser.add_argument("--queries-file", type=Path, help="its (m, d) queries (all 'near')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    if args.vectors:
        catalog = unit(np.load(args.vectors).astype(np.float32))
        queries = unit(np.load(args.queries_file).astype(np.float32))
        far_from = len(queries)
    else:
        catalog, near, far = synthetic(args)
        queries, far_from = np.vstack([near, far]), len(near)
    n, d = catalog.shape
    print(f"catalog {n} x {d}, {len(queries)} queries ({len(queries) - far_from} far), k={args.k}")
    print(f"generated in {time.perf_counter() - started:.1f} s")
    truth = exact_top(catalog, queries, args.k)
    sims = np.sort(queries @ catalog[: min(n, 20_000)].T, axis=1)
    for name, part in (("near", sims[:far_from]), ("far", sims[far_from:])):
        if len(part):
            print(
                f"{name} queries: similarity of the 1st / {args.k}th neighbour (median, first 20k"
                f" exemplars) {np.median(part[:, -1]):.3f} / {np.median(part[:, -args.k]):.3f}"
            )

    from threadpoolctl import ThreadpoolController

    blas = None if args.all_threads else ThreadpoolController()
    ids = [str(i) for i in range(n)]
    matrix = ExemplarMatrix(("bench", "", n), ids, ids, ids, catalog, blas=blas)
    # near and far queries alike in the timed ones
    single_queries = queries[:: max(1, len(queries) // args.single)][: args.single]
    batch_queries = queries[:: max(1, len(queries) // (args.batches * 32))][: args.batches * 32]

    def measure(method: str, search: Search, memory: int, setup: float) -> Row:
        recall = quality(search, queries, truth, far_from, args.k)
        single = timed(search, single_queries, 1, args.repeats)
        batch = timed(search, batch_queries, 32, args.repeats)
        row = Row(method, *recall, single, batch, memory, setup)
        print(f"  {method}: recall {row.recall_near:.4f} / {row.recall_far:.4f}", flush=True)
        return row

    rows = [
        measure("exact", lambda q: matrix.nearest(q, args.k), catalog.nbytes, 0.0),
    ]
    centred = catalog[:20_000] - catalog[:20_000].mean(axis=0)
    total = float(np.einsum("ij,ij->", centred, centred))
    for dims in (int(x) for x in args.pca.split(",")):
        began = time.perf_counter()
        reduced = matrix.with_coarse(dims)  # as the store fits it: on one BLAS thread
        setup = time.perf_counter() - began
        coarse = reduced.coarse
        if coarse is None:
            continue
        kept = float(np.linalg.norm(centred @ coarse.components.T) ** 2) / total
        print(f"pca {dims}: fit {setup:.1f} s, keeps {kept:.1%} of the variance", flush=True)
        for count in (int(x) for x in args.candidates.split(",")):
            rows.append(
                measure(
                    f"pca {dims} / {count} candidates",
                    partial(reduced.nearest, k=args.k, candidates=count),
                    catalog.nbytes + coarse.nbytes,
                    setup,
                )
            )
    if args.chroma:
        timing = (single_queries, batch_queries)
        rows.append(chroma_row(catalog, queries, truth, far_from, timing, args))

    print()
    print(
        "| search | recall@k near | recall@k far | top-1 exact | one query p50 / p95 ms "
        "| batch of 32 p50 / p95 ms | memory MB | setup s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.method} | {r.recall_near:.4f} | {_share(r.recall_far)} | {r.top1:.4f} "
            f"| {r.single[0]:.2f} / {r.single[1]:.2f} | {r.batch[0]:.1f} / {r.batch[1]:.1f} "
            f"| {r.memory / 2**20:.0f} | {r.setup:.1f} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
