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
        report.threshold, color="black", linestyle="--", label=f"threshold {report.threshold:.4f}"
    )
    ax.set_xlabel("score (similarity to the catalog)")
    ax.set_ylabel("messages")
    ax.set_title(f"Score distributions ({report.score_basis})")
    ax.legend()
    return _save(fig, path)


#: The trade-off plot shows 0 to this share of in-domain customers blocked: the region where a
#: threshold is worth choosing (beyond it a gate turns away more customers than anyone accepts).
TRADEOFF_MAX_FALSE_BLOCK = 0.10
_MARKERS = ("^", "s", "D", "v", "P")


def plot_tradeoff(report: EvalReport, path: Path) -> Path:
    """Saved calls vs wrongly blocked customers along the threshold sweep (see
    :func:`tradeoff_figure`)."""
    return _save(tradeoff_figure(report), path)


def tradeoff_figure(report: EvalReport) -> Any:
    """The trade-off plot as a matplotlib figure: share of LLM calls saved against share of
    in-domain customers wrongly blocked, zoomed on 0–10% blocked, with the operating point and
    the recommended thresholds (``report.recommended_thresholds``) marked and labelled."""
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    points = sorted(
        (p for p in report.sweep if p.false_block_rate is not None), key=lambda p: p.threshold
    )
    ax.plot(
        [p.false_block_rate for p in points],
        [p.saved_rate for p in points],
        color="#2a7ab9",
        marker=".",
        markersize=3,
        label="threshold sweep",
    )
    limit = TRADEOFF_MAX_FALSE_BLOCK
    labelled: dict[float, list[str]] = {}
    for marker, rec in zip(_MARKERS, report.recommended_thresholds, strict=False):
        if rec.threshold is None or rec.false_block_rate is None or rec.saved_rate is None:
            continue
        ax.scatter(
            [min(rec.false_block_rate, limit)],
            [rec.saved_rate],
            marker=marker,
            s=55,
            zorder=4,
            color="#5cb85c",
            edgecolor="black",
            clip_on=False,
            label=f"{pct(rec.target_pass_rate, 0)} pass: threshold {rec.threshold:.4f} "
            f"({pct(rec.saved_rate)} saved)",
        )
        labelled.setdefault(rec.threshold, []).append(pct(rec.target_pass_rate, 0))
    labels: list[tuple[str, float, float]] = []  # (text, x, y), placed once the axes are set
    for rec in report.recommended_thresholds:  # one label per point, however many targets
        if rec.threshold in labelled and rec.false_block_rate is not None:
            text = f"{' / '.join(labelled.pop(rec.threshold))} pass → {rec.threshold:.4f}"
            labels.append((text, min(rec.false_block_rate, limit), rec.saved_rate or 0.0))
    here = _operating_point(report.sweep, report.threshold)
    if here is not None and here.false_block_rate is not None:
        off_scale = here.false_block_rate > limit
        ax.scatter(
            [min(here.false_block_rate, limit)],
            [here.saved_rate],
            color="#d9534f",
            zorder=5,
            s=70,
            clip_on=False,
            label=f"operating point (threshold {report.threshold:.4f})",
        )
        text = f"operating: {pct(here.saved_rate)} saved, {pct(here.false_block_rate)} blocked"
        labels.append(
            (text + (" (off scale →)" if off_scale else ""), min(here.false_block_rate, limit),
             here.saved_rate)
        )  # fmt: skip
    ax.set_xlim(*tradeoff_xlim())
    shown = [p.saved_rate for p in points if (p.false_block_rate or 0.0) <= limit]
    if here is not None:
        shown.append(here.saved_rate)
    if shown:  # the y range of what is on screen, not of the whole sweep
        ax.set_ylim(max(0.0, min(shown) - 0.03), min(1.0, max(shown) + 0.03))
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("in-domain customers wrongly blocked (0–10% shown)")
    ax.set_ylabel("LLM calls saved")
    ax.set_title("Saved calls vs wrongly blocked customers")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _place_labels(fig, ax, labels)
    return fig


#: Least vertical distance between two point labels of the trade-off plot, in points.
LABEL_GAP = 11.0


def _place_labels(fig: Any, ax: Any, labels: list[tuple[str, float, float]]) -> None:
    """Annotate each point beside it, lowest first, each label at least :data:`LABEL_GAP`
    points above the one before (points close together got overlapping labels); a point in
    the right third of the plot gets its label on its left, so the text stays inside."""
    points_per_pixel = 72.0 / fig.dpi
    low, high = ax.get_xlim()
    floor = -float("inf")
    for text, x, y in sorted(labels, key=lambda label: label[2]):
        y_points = float(ax.transData.transform((x, y))[1]) * points_per_pixel
        wanted = max(y_points - 4.0, floor + LABEL_GAP)
        floor = wanted
        right = x > low + (high - low) * 2 / 3
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(-8 if right else 8, wanted - y_points),
            ha="right" if right else "left",
            va="center",
            fontsize=8,
        )


def tradeoff_xlim() -> tuple[float, float]:
    """The trade-off plot's x range, as shares (not percent)."""
    return (-0.002, TRADEOFF_MAX_FALSE_BLOCK)


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
