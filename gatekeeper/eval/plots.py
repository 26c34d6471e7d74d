"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatekeeper.eval.formatting import pct
from gatekeeper.eval.schema import EvalReport, SweepPoint


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(report: EvalReport, path: Path) -> Path:
    """Histograms of in-domain and off-topic scores with the threshold marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    samples = report.scores
    values = samples.in_domain + samples.off_topic
    bins = 50 if values else 10
    span = (min(values), max(values)) if values else (0.0, 1.0)
    if samples.in_domain:
        ax.hist(
            samples.in_domain, bins=bins, range=span, alpha=0.6, label="in-domain", color="#2a7ab9"
        )
    if samples.off_topic:
        ax.hist(
            samples.off_topic, bins=bins, range=span, alpha=0.6, label="off-topic", color="#d9534f"
        )
    ax.axvline(
        report.threshold, color="black", linestyle="--", label=f"threshold {report.threshold:.3f}"
    )
    ax.set_xlabel("score (similarity to the catalog)")
    ax.set_ylabel("messages")
    ax.set_title(f"Score distributions ({report.score_basis})")
    ax.legend()
    return _save(fig, path)


def plot_tradeoff(report: EvalReport, path: Path) -> Path:
    """Saved calls vs wrongly blocked customers along the threshold sweep."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    points = [p for p in report.sweep if p.false_block_rate is not None]
    ax.plot(
        [p.false_block_rate * 100 for p in points if p.false_block_rate is not None],
        [p.saved_rate * 100 for p in points],
        color="#2a7ab9",
        marker=".",
        markersize=3,
        label="threshold sweep",
    )
    here = _operating_point(report.sweep, report.threshold)
    if here is not None and here.false_block_rate is not None:
        ax.scatter(
            [here.false_block_rate * 100],
            [here.saved_rate * 100],
            color="#d9534f",
            zorder=3,
            s=60,
            label=f"operating point (threshold {report.threshold:.3f})",
        )
        ax.annotate(
            f"{pct(here.saved_rate)} saved, {pct(here.false_block_rate)} blocked",
            (here.false_block_rate * 100, here.saved_rate * 100),
            textcoords="offset points",
            xytext=(10, -15),
        )
    ax.set_xlabel("in-domain customers wrongly blocked (%)")
    ax.set_ylabel("LLM calls saved (%)")
    ax.set_title("Saved calls vs wrongly blocked customers")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _operating_point(points: Sequence[SweepPoint], threshold: float) -> SweepPoint | None:
    return min(points, key=lambda p: abs(p.threshold - threshold), default=None)


def plot_intents(report: EvalReport, path: Path) -> Path:
    """In-domain pass rate per labelled intent (unsupported intents in orange)."""
    plt = _pyplot()
    rows = report.per_intent
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(rows) + 1)))
    colors = ["#f0ad4e" if r.intent.startswith("unsupported:") else "#2a7ab9" for r in rows]
    ax.barh(
        [f"{r.intent} (n={r.n})" for r in rows], [r.pass_rate * 100 for r in rows], color=colors
    )
    ax.set_xlim(0, 100)
    ax.set_xlabel("in-domain pass rate (%)")
    ax.set_title("Pass rate per intent (orange: intents the catalog lacks)")
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
