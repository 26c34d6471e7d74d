"""The banking77 benchmark (../shared/benchmarks/banking77): one `gatekeeper eval` run per rule.

Catalog: exemplars.csv (50 supported banking intents), passed as it is: intent names such as
'reverted_card_payment?' are kept, and rows with an empty text (in any of the files) are
skipped and counted by the loaders. The threshold is chosen on
calibration.jsonl alone for a 99% in-domain pass rate, then applied unchanged to test.jsonl
(supported intents + off-topic) and unsupported_banking_test.jsonl (on-topic banking questions
of the 27 intents the catalog lacks). Prints, per rule: supported pass rate,
unsupported-but-on-topic pass rate, off-topic block rate, AUROC; writes the full reports.

    .venv/bin/python eval/benchmark_banking77.py [--data DIR] [--rule density --rule top1 ...]
        [--tune]

``--tune`` first learns a linear adapter (``--tune-method encoder``: fine-tunes the local
encoder) on exemplars.csv alone (``gatekeeper eval --tune``,
the ``gatekeeper tune`` recipe; calibration and test files never reach the trainer), then
indexes, calibrates and evaluates the adapted model; reports go to ``<out>/<rule>-tuned/``.

Exits 0 with a message when the benchmark data is not at its default place (a user's machine
won't have it); a ``--data DIR`` given explicitly that lacks the files exits 2: a typo there must
not pass for a skipped benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from gatekeeper.rules import rule_names

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "benchmarks" / "banking77"
FILES = ("exemplars.csv", "calibration.jsonl", "test.jsonl", "unsupported_banking_test.jsonl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the banking77 gate benchmark.")
    parser.add_argument(
        "--data", type=Path, default=None, help=f"banking77 directory (default {DEFAULT_DATA})"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "banking77")
    parser.add_argument("--target", type=float, default=0.99, help="in-domain pass rate target")
    parser.add_argument(
        "--rule",
        action="append",
        choices=rule_names(),
        help="repeatable; default all three",
    )
    parser.add_argument("--latency-sample", type=int, default=200)
    parser.add_argument("--config", type=Path, default=None, help="settings file")
    parser.add_argument(
        "--tune", action="store_true", help="learn a linear adapter on the catalog first"
    )
    parser.add_argument(
        "--tune-method",
        choices=("adapter", "encoder"),
        default="adapter",
        help="with --tune: a linear adapter (default) or a fine-tuned local encoder",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data is not None and (error := wrong_data(args.data)):
        print(error, file=sys.stderr)
        return 2
    args.data = args.data or DEFAULT_DATA
    missing = missing_files(args.data)
    if missing:
        print(f"banking77 benchmark skipped: {', '.join(missing)} not found in {args.data}")
        return 0

    import typer

    try:
        rows = run(args)
    except typer.Exit as exc:  # friendly_errors printed the problem
        return exc.exit_code
    for rule, report, seconds, html in rows:
        print_result(rule, report, seconds, html)
    return 0


def missing_files(data: Path) -> list[str]:
    """The banking77 files that ``data`` lacks or cannot read."""
    return [name for name in FILES if not _readable(data / name)]


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def wrong_data(data: Path) -> str | None:
    """The error for a ``--data`` directory given explicitly that lacks a banking77 file or
    cannot read one (None: it holds them all). A benchmark asked for that directory stops on
    it (exit 2): a typo there must not pass for a skipped benchmark."""
    missing = missing_files(data)
    if not missing:
        return None
    return (
        f"error: --data {data}: {', '.join(missing)} not found or not readable there (the "
        f"banking77 directory holds {', '.join(FILES)})"
    )


def run(args: argparse.Namespace) -> list[tuple[str, Any, float, Path]]:
    """One eval per rule; the reports go to ``args.out/<rule>/``."""
    from gatekeeper.cli._app import friendly_errors, progress_bar, setup, tracked
    from gatekeeper.eval.plan import EvalPlan, evaluate
    from gatekeeper.eval.report_files import write_report
    from gatekeeper.eval.schema import EvalOptions

    rows = []
    with friendly_errors():
        settings = setup(args.config, quiet=True)
        catalog = args.data / "exemplars.csv"  # as published: no cleaning, no renaming
        for rule in args.rule or rule_names():
            plan = EvalPlan(
                datasets=(args.data / "test.jsonl", args.data / "unsupported_banking_test.jsonl"),
                catalog=catalog,
                calibrate_on=args.data / "calibration.jsonl",
                target_pass_rate=args.target,
                rule=rule,
                tune=args.tune,
                tune_method=args.tune_method,
                options=EvalOptions(latency_sample=args.latency_sample),
            )
            started = time.perf_counter()
            with progress_bar() as progress:
                report, _ = evaluate(settings, plan, task=lambda d: tracked(progress, d))
            seconds = time.perf_counter() - started
            suffix = "-tuned" if args.tune_method == "adapter" else "-encoder"
            name = f"{rule}{suffix}" if args.tune else rule
            files = write_report(report, args.out / name)
            rows.append((name, report, seconds, files.html))
    return rows


def print_result(rule: str, report: Any, seconds: float, html: Path) -> None:
    cal, lat = report.calibration, report.latency_ms
    lines = [
        f"rule {rule}: threshold {report.threshold:.4f}, calibrated on {cal.source} "
        f"({cal.in_domain_pass_rate:.2%} in-domain pass, {cal.off_topic_block_rate:.2%} "
        "off-topic blocked there)",
        f"supported pass rate            {report.supported_pass_rate:.2%}  n={report.n_supported}",
        f"unsupported on-topic pass rate {report.unsupported_pass_rate:.2%}  "
        f"n={report.n_unsupported}",
        f"off-topic block rate           {report.off_topic_block_rate:.2%}  n={report.n_off_topic}",
        f"AUROC                          {report.auroc:.4f}  FPR@95%TPR {report.fpr_at_95tpr:.2%}",
        f"LLM calls saved                {report.llm_calls_saved} of {report.n_queries} "
        f"({report.saved_rate:.2%})",
        (
            f"gate latency p50/p95/p99       {lat.p50:.1f} / {lat.p95:.1f} / {lat.p99:.1f} ms "
            f"(embedding alone p50 {lat.embed_p50:.1f} ms)"
            if lat.p50 is not None
            else "gate latency                   not measured (--latency-sample 0)"
        ),
        f"skipped empty rows             {len(report.meta['skipped_rows'])}",
        f"wall time {seconds:.0f} s (indexing {report.meta['index_seconds']:.0f} s); {html}",
    ]
    tuned = report.meta.get("tuned")
    if tuned:
        frozen = tuned["heldout"]["frozen"]
        adapted = tuned["heldout"].get("adapted") or tuned["heldout"]["tuned"]
        lines.append(
            f"tuned: {tuned['train_seconds']:.1f} s training, {tuned['seconds']:.1f} s in all; "
            f"held-out LOIO AUROC {frozen.get('auroc_loio_vs_off', 0):.4f}"
            f" -> {adapted.get('auroc_loio_vs_off', 0):.4f}; "
            f"{tuned.get('adapter') or tuned.get('model')}"
        )
    print("\n" + "\n  ".join(lines))


if __name__ == "__main__":
    sys.exit(main())
