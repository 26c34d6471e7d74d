"""Split a labelled dataset into a calibration third and a test two-thirds.

Deterministic (seeded) and stratified: by default by label and intent, so every intent, every
unsupported intent and the off-topic mix appear in both parts in the same proportions. With
``--stratify label`` only the label is used (for conversations, the label of the last user turn),
which suits small files of chats whose intents are too many to share out. Rows may carry ``text``
or ``messages``; each row is written back exactly as it appears in the source (extra fields such as
``labels``, ``tags`` or ``id`` are kept), in source order. The threshold is chosen on the
calibration file only; the test file is what the demo reports on.

With no arguments it splits shop_eval.jsonl into shop_calibration.jsonl and shop_test.jsonl:

    .venv/bin/python eval/split_shop_eval.py   # rewrites the two files; same output every run
    .venv/bin/python eval/split_shop_eval.py --source eval/datasets/shop_zh_eval.jsonl \\
        --calibration eval/datasets/shop_zh_calibration.jsonl \\
        --test eval/datasets/shop_zh_test.jsonl
    .venv/bin/python eval/split_shop_eval.py --source eval/datasets/shop_zh_chats.jsonl \\
        --stratify label   # -> shop_zh_chats_calibration.jsonl, shop_zh_chats_test.jsonl

Without --calibration/--test, the outputs sit next to the source, named after its stem minus a
trailing ``_eval``: ``<stem>_calibration.jsonl`` and ``<stem>_test.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from gatekeeper.eval.datasets import Example, example_row, load_dataset

HERE = Path(__file__).resolve().parent / "datasets"
STRATA = ("label-intent", "label")


def split(
    examples: tuple[Example, ...], fraction: float, seed: int, stratify: str = "label-intent"
) -> tuple[list[Example], list[Example]]:
    """(calibration, test): ``fraction`` of each stratum goes to calibration.

    A stratum is (label, intent) by default, or the label alone with ``stratify="label"``."""
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for example in examples:
        intent = (example.intent or "") if stratify == "label-intent" else ""
        groups[(example.label, intent)].append(example)
    rng = random.Random(seed)
    calibration: list[Example] = []
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        calibration += members[: round(len(members) * fraction)]
    chosen = {id(e) for e in calibration}
    by_line = sorted(calibration, key=lambda e: e.line)
    return by_line, [e for e in examples if id(e) not in chosen]


def source_lines(path: Path) -> dict[int, str]:
    """The raw text of each line of a JSONL file, by 1-based line number (as Example.line)."""
    return dict(enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1))


def write_rows(examples: list[Example], lines: dict[int, str] | None, path: Path) -> int:
    """Write ``examples`` as JSONL: the source line itself (JSONL) or the row rebuilt (CSV)."""
    out = []
    for example in examples:
        if lines is not None:
            out.append(lines[example.line].strip())
        else:
            out.append(json.dumps(example_row(example), ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    return len(out)


def default_output(source: Path, part: str) -> Path:
    stem = source.stem.removesuffix("_eval")
    return source.with_name(f"{stem}_{part}.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "shop_eval.jsonl")
    parser.add_argument("--calibration", type=Path, default=None, help="calibration output")
    parser.add_argument("--test", type=Path, default=None, help="test output")
    parser.add_argument("--fraction", type=float, default=1 / 3, help="share for calibration")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--stratify", choices=STRATA, default="label-intent")
    args = parser.parse_args()
    if not 0 < args.fraction < 1:
        parser.error("--fraction must be between 0 and 1")
    calibration_path = args.calibration or default_output(args.source, "calibration")
    test_path = args.test or default_output(args.source, "test")
    dataset = load_dataset(args.source)
    is_jsonl = args.source.suffix.lower() in {".jsonl", ".ndjson"}
    lines = source_lines(args.source) if is_jsonl else None
    calibration, test = split(dataset.examples, args.fraction, args.seed, args.stratify)
    n_cal = write_rows(calibration, lines, calibration_path)
    n_test = write_rows(test, lines, test_path)
    print(f"{len(dataset)} rows -> {calibration_path.name} {n_cal}, {test_path.name} {n_test}")


if __name__ == "__main__":
    main()
