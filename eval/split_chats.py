"""Validate eval/datasets/shop_chats.jsonl and split it: a calibration third, a test two-thirds.

Every row is checked first (it parses; roles are user/assistant with at most one leading system
message; no empty content; the last message is a user turn; one label per user turn; ``label``
equals the last of ``labels``; ids are unique). Any problem stops the script with the file, line
and reason, and nothing is written.

The split is seeded and stratified by (label of the last user turn, whether the chat has any
off_topic turn), so both parts get the same mix of served chats, chats that drift and come back,
and chats that end off-topic. Rows are written byte-for-byte as they appear in the source, in
source order, so running the script twice gives identical files.

    .venv/bin/python eval/split_chats.py   # writes shop_chats_{calibration,test}.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent / "datasets"
LABELS = ("in_domain", "off_topic")


class InvalidRow(ValueError):
    """A row of the chats file breaks the format; the message names file, line and reason."""


def validate(line: str, where: str) -> dict:
    """The parsed row, or InvalidRow saying what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRow(f"{where}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise InvalidRow(f"{where}: a row must be a JSON object")
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise InvalidRow(f"{where}: missing id")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRow(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        allowed = ("system", "user", "assistant") if i == 0 else ("user", "assistant")
        if role not in allowed:
            raise InvalidRow(f"{where}: message {i} has role {role!r}")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise InvalidRow(f"{where}: message {i} has empty content")
    if messages[-1]["role"] != "user":
        raise InvalidRow(f"{where}: the last message must be a user turn")
    n_user = sum(m["role"] == "user" for m in messages)
    labels = row.get("labels")
    if not isinstance(labels, list) or len(labels) != n_user:
        raise InvalidRow(f"{where}: 'labels' must have one entry per user turn ({n_user})")
    if any(label not in LABELS for label in labels):
        raise InvalidRow(f"{where}: labels must be in_domain or off_topic")
    if row.get("label") != labels[-1]:
        raise InvalidRow(f"{where}: 'label' must equal the last of 'labels'")
    return row


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(raw line, parsed row) for every non-blank line, all validated, ids unique."""
    rows: list[tuple[str, dict]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = validate(line, where)
        if row["id"] in seen:
            raise InvalidRow(f"{where}: id {row['id']!r} already used on line {seen[row['id']]}")
        seen[row["id"]] = number
        rows.append((line, row))
    return rows


def stratum(row: dict) -> tuple[str, bool]:
    """(label of the last user turn, whether any user turn is off_topic)."""
    return row["label"], "off_topic" in row["labels"]


def split(rows: list[tuple[str, dict]], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(calibration lines, test lines): ``fraction`` of each stratum (rounded) is calibration."""
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for index, (_, row) in enumerate(rows):
        groups[stratum(row)].append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        chosen.update(members[: round(len(members) * fraction)])
    calibration = [line for i, (line, _) in enumerate(rows) if i in chosen]
    test = [line for i, (line, _) in enumerate(rows) if i not in chosen]
    return calibration, test


def write_lines(lines: list[str], path: Path) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "shop_chats.jsonl")
    parser.add_argument("--fraction", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    try:
        rows = read_rows(args.source)
    except InvalidRow as exc:
        sys.exit(f"invalid chats file: {exc}")
    calibration, test = split(rows, args.fraction, args.seed)
    out = args.source.parent
    stem = args.source.stem
    write_lines(calibration, out / f"{stem}_calibration.jsonl")
    write_lines(test, out / f"{stem}_test.jsonl")
    print(
        f"{len(rows)} chats valid -> {stem}_calibration.jsonl {len(calibration)}, "
        f"{stem}_test.jsonl {len(test)}"
    )


if __name__ == "__main__":
    main()
