"""Split eval/datasets/shop_eval.jsonl into a calibration third and a test two-thirds.

Deterministic (seeded) and stratified by label and intent: every intent, every unsupported
intent and the off-topic mix appear in both parts in the same proportions. The threshold is
chosen on shop_calibration.jsonl only; shop_test.jsonl is what the demo reports on.

    .venv/bin/python eval/split_shop_eval.py   # rewrites the two files; same output every run
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

from gatekeeper.datasets import Example, load_dataset, write_jsonl

HERE = Path(__file__).resolve().parent / "datasets"


def split(
    examples: tuple[Example, ...], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(calibration, test): ``fraction`` of each (label, intent) group goes to calibration."""
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for example in examples:
        groups[(example.label, example.intent or "")].append(example)
    rng = random.Random(seed)
    calibration: list[Example] = []
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        calibration += members[: round(len(members) * fraction)]
    chosen = {id(e) for e in calibration}
    by_line = sorted(calibration, key=lambda e: e.line)
    return by_line, [e for e in examples if id(e) not in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "shop_eval.jsonl")
    parser.add_argument("--fraction", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    dataset = load_dataset(args.source)
    calibration, test = split(dataset.examples, args.fraction, args.seed)
    n_cal = write_jsonl(calibration, HERE / "shop_calibration.jsonl")
    n_test = write_jsonl(test, HERE / "shop_test.jsonl")
    print(f"{len(dataset)} rows -> shop_calibration.jsonl {n_cal}, shop_test.jsonl {n_test}")


if __name__ == "__main__":
    main()
