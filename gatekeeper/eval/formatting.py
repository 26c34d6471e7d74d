"""Numbers as people read them in reports and summaries.

A rate is never rounded onto a bound it did not reach: one customer refused in 2,000 is
``99.95%``, not ``100.0%``, and an AUROC of 0.99988 is ``0.9999``, not ``1.000``. Digits are
added (up to :data:`EXTRA_DIGITS` more) until the text leaves the bound; nearer still, it
reads ``≈100.0%``.
"""

from __future__ import annotations

#: How many more digits a number near a bound may get.
EXTRA_DIGITS = 3


def pct(value: float | None, digits: int = 1) -> str:
    """``0.9731`` as ``97.3%``; ``–`` for a missing value."""
    if value is None:
        return "–"
    return _off_bounds(value * 100, digits, (0.0, 100.0)) + "%"


def num(value: float | None, digits: int = 3) -> str:
    """``0.96712`` as ``0.967``; ``–`` for a missing value."""
    if value is None:
        return "–"
    return _off_bounds(value, digits, (0.0, 1.0, -1.0))


def _off_bounds(value: float, digits: int, bounds: tuple[float, ...]) -> str:
    text = f"{value:.{digits}f}"
    if value in bounds or float(text) not in bounds:
        return text
    for extra in range(1, EXTRA_DIGITS + 1):
        closer = f"{value:.{digits + extra}f}"
        if float(closer) not in bounds:
            return closer
    return f"≈{text}"  # nearer the bound than the digits show


def money(value: float | None) -> str:
    """``1234.5`` as ``$1,234.50``, ``0.02`` as ``$0.0200``; an amount above 0 that 4 decimals
    would show as ``$0.0000`` (embedding 443 messages) as ``<$0.0001``."""
    if value is None:
        return "–"
    if 0 < value < 0.00005:
        return "<$0.0001"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def counted(n: int, thing: str) -> str:
    """``"1 drift turn"``, ``"2 drift turns"``."""
    return f"{n} {thing}{'' if n == 1 else 's'}"
