"""Gate latency vs the embedding model's own forward pass, side by side in one run.

    .venv/bin/python eval/benchmark_latency.py [--n 300] [--dataset eval/datasets/shop_test.jsonl]

For each message (one at a time, as a chatbot sees them) it times:

* ``model``: the embedding model's own forward pass for that message (FlagEmbedding's
  ``encode_queries`` on the same weights, and the gate's single-pass encoder);
* ``gate``: a full ``Gatekeeper.check`` (embed + Chroma query + decision + log).

FlagModel is timed first, on its own; then the gate and its forward pass alternate, so both see
the same machine state. Prints p50/p95/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog

from gatekeeper.embedding import LocalEmbedder, resolve_model_path
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
#: Every decision timed is a fresh one: the gate's cache of recent turns (``gate.turn_cache``)
#: would answer a message it has seen without a forward pass.
NO_TURN_CACHE = {"turn_cache": 0}


def load_messages(path: Path, n: int) -> list[str]:
    """``n`` message texts of a JSONL dataset (field ``text``), cycled if it has fewer."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    texts = [r["text"] for r in rows if "text" in r]
    return (texts * (n // max(1, len(texts)) + 1))[:n]


def percentiles(samples: list[float]) -> str:
    """p50/p95/p99 and mean of millisecond samples, as one aligned line."""
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return f"p50 {p50:6.2f}  p95 {p95:6.2f}  p99 {p99:6.2f}  mean {statistics.fmean(samples):6.2f}"


def build_gate(settings: Settings) -> Gatekeeper:
    """The gate as the CLI builds it from ``settings``, indexed and ready, logging errors only."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    gate = Gatekeeper.from_settings(settings)
    gate.index()
    gate.ready()
    return gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--dataset", type=Path, default=HERE / "datasets" / "shop_test.jsonl")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        # The gate as shipped (its cache of recent turns on: a lookup per decision is part of
        # the cost), timed on messages it has not seen: warmed up on other texts, and
        # --n is capped at the dataset's distinct messages.
        settings = load_settings(None, data_dir=Path(data_dir))
        gate = build_gate(settings)
        embedder = gate.embedder
        assert isinstance(embedder, LocalEmbedder)
        from FlagEmbedding import FlagModel  # the gate itself loads the encoder without it

        flag_model = FlagModel(
            str(resolve_model_path(settings.embedding.model)),
            pooling_method=settings.embedding.pooling,
            normalize_embeddings=True,
            devices="cpu",
            use_fp16=False,
            query_max_length=settings.embedding.max_length,
        )
        messages = list(dict.fromkeys(load_messages(args.dataset, args.n)))
        timings: dict[str, list[float]] = {"flag_encode": [], "single_pass": [], "gate": []}
        # FlagModel first, on its own: torch's and ONNX Runtime's threads spin for a while
        # after each call and would slow whichever runs next.
        for i in range(20):
            flag_model.encode_queries([f"warm-up message number {i}: where is my parcel?"])
        for text in messages:
            start = time.perf_counter()
            flag_model.encode_queries([text])
            timings["flag_encode"].append((time.perf_counter() - start) * 1000)
        for i in range(20):  # warm-up, on texts that are not timed
            warm = f"warm-up message number {i}: where is my parcel?"
            gate.check(warm)
            embedder.embed([warm])
        for text in messages:  # the gate and its own forward pass alternate
            start = time.perf_counter()
            embedder.embed([text])
            timings["single_pass"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            gate.check(text)
            timings["gate"].append((time.perf_counter() - start) * 1000)

    runtime = embedder.runtime
    print(f"{len(messages)} messages, one at a time, model {embedder.identity} ({runtime})")
    print(f"model: FlagModel.encode_queries   {percentiles(timings['flag_encode'])}")
    print(f"model: one forward pass (gate's)  {percentiles(timings['single_pass'])}")
    print(f"gate:  Gatekeeper.check           {percentiles(timings['gate'])}")
    overhead = np.median(timings["gate"]) - np.median(timings["single_pass"])
    print(f"gate overhead over its forward pass (median): {overhead:.2f} ms")


if __name__ == "__main__":
    main()
