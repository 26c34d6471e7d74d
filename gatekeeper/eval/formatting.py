"""Numbers as people read them in reports and summaries."""

from __future__ import annotations


def pct(value: float | None, digits: int = 1) -> str:
    """``0.9731`` as ``97.3%``; ``–`` for a missing value."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"
