"""What the conversation model adds to a decision, live: a chat's request against its last turn
alone, one at a time.

    .venv/bin/python eval/benchmark_conversation.py [--dataset eval/datasets/shop_chats_test.jsonl]

A chat client sends the whole conversation with every request, and the gate judges up to four
customer turns of it. For each chat of the dataset with at least two customer turns (default
model, shop catalog, shipped ``configs/gatekeeper.yaml``), this replays the chat's earlier
requests as a live client sends them (not timed), then times, one at a time:

* ``last turn alone``: ``Gatekeeper.check(last customer turn)`` on a gate with no cache of
  recent turns (``gate.turn_cache: 0``): one forward pass, the single-message decision;
* ``chat, live``: ``Gatekeeper.check(whole chat)`` on the gate as shipped (its earlier turns'
  vectors kept from the earlier requests: ``gate.turn_cache``);
* ``chat, no cache``: the same request on the gate without the cache (every turn embedded).

Both gates share one model and index. Prints p50/p95/p99 and the median of the per-chat
differences: what the conversation adds over a single message.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmark_latency import HERE, build_gate, percentiles

from gatekeeper.eval.gates import with_gate_settings
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import load_settings

REPO = HERE.parent


def _chats(path: Path) -> list[list[dict[str, Any]]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    chats = [r["messages"] for r in rows if "messages" in r]
    return [c for c in chats if sum(m["role"] == "user" for m in c) >= 2]


def _timed(gate: Gatekeeper, message: Any) -> float:
    start = time.perf_counter()
    gate.check(message)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=HERE / "datasets" / "shop_chats_test.jsonl")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "gatekeeper.yaml")
    args = parser.parse_args()

    chats = _chats(args.dataset)
    with tempfile.TemporaryDirectory() as data_dir:
        live = build_gate(load_settings(args.config, data_dir=Path(data_dir)))
        fresh = with_gate_settings(live, turn_cache=0)
        for chat in chats[:10]:  # warm-up, on the gate that keeps nothing
            fresh.check(chat)
        timings: dict[str, list[float]] = {"alone": [], "live": [], "uncached": []}
        for chat in chats:
            customer = [i for i, m in enumerate(chat) if m["role"] == "user"]
            for end in customer[:-1]:
                live.check(chat[: end + 1])  # the chat's earlier requests
            timings["live"].append(_timed(live, chat))
            timings["uncached"].append(_timed(fresh, chat))
            timings["alone"].append(_timed(fresh, chat[customer[-1]]["content"]))
        turns = [min(4, sum(m["role"] == "user" for m in c)) for c in chats]

    alone = np.array(timings["alone"])
    print(
        f"{len(chats)} chats of {args.dataset.name}, {np.mean(turns):.1f} customer turns judged "
        f"per request on average, model {live.embedder.identity}"
    )
    print(f"last turn alone            {percentiles(timings['alone'])}")
    print(f"chat, live (turns cached)  {percentiles(timings['live'])}")
    print(f"chat, no cache             {percentiles(timings['uncached'])}")
    added_live = np.median(np.array(timings["live"]) - alone)
    added_uncached = np.median(np.array(timings["uncached"]) - alone)
    print(
        f"added by the conversation (median of per-chat differences): {added_live:.2f} ms live, "
        f"{added_uncached:.2f} ms without the cache"
    )


if __name__ == "__main__":
    main()
