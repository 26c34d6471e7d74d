"""One decision's latency: gatekeeper vs semantic-router 1.1.1, same model, same catalog.

    .venv/bin/python eval/benchmark_semantic_router.py [--n 300] [--skip-install]
        [--venv /tmp/gk-semantic-router-venv] [--dataset eval/datasets/shop_test.jsonl]

semantic-router runs in a throwaway venv (created if missing; ``torch==2.13.0`` is installed
first, so pip takes the CPU build, then ``semantic-router==1.1.1`` and the gatekeeper venv's
transformers version, all its ``HuggingFaceEncoder`` needs; ``--skip-install`` reuses the venv
as it is). Both sides load the configured model from its local directory (the packaged
all-MiniLM-L6-v2 by default; mean pooling, L2-normalised, so the vectors agree: the script
prints their cosine), offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``).

Routes: one ``Route`` per in-domain intent of the configured catalog (``configs/intents/shop.yaml``
by default), its exemplars as utterances, in an ``IndexedRouter`` (1.1.1's route layer; 1.x has
no ``SemanticRouter``/``RouteLayer`` any more) with its default in-memory ``LocalIndex``,
``top_k=5``, ``aggregation="mean"``. Off-topic exemplars are not a route: semantic-router says
"none of these" with a confidence threshold, not with a contrast route (gatekeeper's collection
holds them too, for its density rule; on semantic-router's side they would only add rows to a
brute-force numpy dot product, well under a millisecond). No threshold is set: one only compares the
top score with a number and changes no work.

Timed, one message at a time (as a chatbot sees them), after 20 warm-up messages, on the same
``--n`` messages of ``--dataset`` (field ``text``), the two sides one after the other (never
concurrently; semantic-router in a subprocess of its venv's python first, then gatekeeper here):

* semantic-router: ``router(text)`` (a ``RouteChoice``) and, alternating with it, its encoder
  alone, ``HuggingFaceEncoder([text])`` (tokenise, transformers forward pass, mean pooling,
  L2 normalisation, ``.tolist()``);
* gatekeeper: ``Gatekeeper.check(text)`` (embed + Chroma query + decision + log, the gate built
  as the CLI builds it, see ``benchmark_latency.py``) and its forward pass alone.

Prints p50/p95/p99 (ms) for each, the ratio of the p50s and the exact versions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmark_latency import HERE, NO_TURN_CACHE, build_gate, load_messages, percentiles

from gatekeeper.catalog import load_catalog
from gatekeeper.embedding import resolve_model_path
from gatekeeper.settings import load_settings

WARMUP = 20
SEMANTIC_ROUTER = "semantic-router==1.1.1"
TORCH = "torch==2.13.0"

# Runs with the throwaway venv's python: argv[1] the job (JSON), argv[2] where to write timings.
CHILD = """
import json, sys, time
from importlib import metadata

import torch
from semantic_router import IndexedRouter, Route
from semantic_router.encoders import HuggingFaceEncoder

job = json.loads(open(sys.argv[1], encoding="utf-8").read())
encoder = HuggingFaceEncoder(name=job["model"], device="cpu")
routes = [Route(name=name, utterances=texts) for name, texts in job["routes"].items()]
router = IndexedRouter(encoder=encoder, routes=routes)
messages = job["messages"]
for text in messages[: job["warmup"]]:
    router(text)
    encoder([text])
timings = {"decide": [], "encode": []}
for text in messages:
    start = time.perf_counter()
    encoder([text])
    timings["encode"].append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    router(text)
    timings["decide"].append((time.perf_counter() - start) * 1000)
packages = ("semantic-router", "torch", "transformers", "tokenizers", "numpy")
result = {
    "timings": timings,
    "probe": encoder([messages[0]])[0],
    "index": f"{type(router.index).__name__} of {len(router.index)} vectors",
    "threads": torch.get_num_threads(),
    "versions": {name: metadata.version(name) for name in packages},
}
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(result))
"""


def prepare_venv(venv: Path, *, install: bool) -> Path:
    """The throwaway venv's python, after creating the venv and installing what is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if install:
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, TORCH], check=True)  # first: the CPU build, not a CUDA one
        transformers = f"transformers=={metadata.version('transformers')}"
        subprocess.run([*pip, TORCH, SEMANTIC_ROUTER, transformers], check=True)
    return python


def run_semantic_router(python: Path, job: dict[str, Any], work: Path) -> dict[str, Any]:
    """Time semantic-router in a subprocess of ``python``; its timings, versions and a probe."""
    (work / "child.py").write_text(CHILD, encoding="utf-8")
    (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "SEMANTIC_ROUTER_LOG_LEVEL": "WARNING",
    }
    out = work / "out.json"
    command = [str(python), str(work / "child.py"), str(work / "job.json"), str(out)]
    subprocess.run(command, check=True, env=env)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def time_calls(
    calls: dict[str, Callable[[str], object]], messages: list[str]
) -> dict[str, list[float]]:
    """Milliseconds per message of each call, alternating, after the warm-up messages."""
    for text in messages[:WARMUP]:
        for call in calls.values():
            call(text)
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for text in messages:
        for name, call in calls.items():
            start = time.perf_counter()
            call(text)
            timings[name].append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/gk-semantic-router-venv"))
    parser.add_argument("--skip-install", action="store_true", help="use --venv as it is")
    parser.add_argument("--dataset", type=Path, default=HERE / "datasets" / "shop_test.jsonl")
    args = parser.parse_args()

    python = prepare_venv(args.venv, install=not args.skip_install)
    messages = load_messages(args.dataset, args.n)
    with tempfile.TemporaryDirectory() as work:
        settings = load_settings(None, data_dir=Path(work) / "data", gate=NO_TURN_CACHE)
        model = resolve_model_path(settings.embedding.model)
        routes = {i.name: list(i.exemplars) for i in load_catalog(settings.catalog).intents}
        job = {"model": str(model), "routes": routes, "messages": messages, "warmup": WARMUP}
        sr = run_semantic_router(python, job, Path(work))  # first, with nothing loaded here
        gate = build_gate(settings)
        embed = gate.embedder.embed
        gk = time_calls({"embed": lambda text: embed([text]), "check": gate.check}, messages)
        index = f"Chroma collection of {gate.ready().count} vectors"
        runtime = getattr(gate.embedder, "runtime", "?")
        probe = embed([messages[0]])[0]

    sr_times: dict[str, list[float]] = sr["timings"]
    cosine = float(np.dot(probe, sr["probe"]) / np.linalg.norm(sr["probe"]))
    utterances = sum(map(len, routes.values()))
    print(f"{len(messages)} messages of {args.dataset.name}, one at a time, {WARMUP} warm-up")
    print(f"model {model} (the two sides' vectors: cosine {cosine:.6f} on one message)")
    print(f"catalog {settings.catalog.name}: {len(routes)} routes, {utterances} utterances")
    print(f"gatekeeper:      {index}, encoder {runtime}, torch threads {torch.get_num_threads()}")
    print(f"semantic-router: {sr['index']}, torch threads {sr['threads']}")
    print()
    print(f"gatekeeper       Gatekeeper.check(text)      {percentiles(gk['check'])}")
    print(f"                 its forward pass            {percentiles(gk['embed'])}")
    print(f"semantic-router  IndexedRouter(text)         {percentiles(sr_times['decide'])}")
    print(f"                 HuggingFaceEncoder([text])  {percentiles(sr_times['encode'])}")
    ratio = np.median(sr_times["decide"]) / np.median(gk["check"])
    print(f"semantic-router p50 / gatekeeper p50: {ratio:.2f}x")
    print()
    mine = ("gatekeeper", "torch", "tokenizers", "chromadb", "numpy")
    print("gatekeeper side:     ", " ".join(f"{n} {metadata.version(n)}" for n in mine))
    print("semantic-router side:", " ".join(f"{n} {v}" for n, v in sr["versions"].items()))


if __name__ == "__main__":
    main()
