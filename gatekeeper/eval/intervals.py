"""Confidence intervals of an eval report's rates: the percentile bootstrap over rows, and the
exact (Clopper-Pearson) interval where the bootstrap cannot vary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.errors import InputError
from gatekeeper.eval.schema import BOOTSTRAP_LEVEL, Interval, Outcome

FloatArray = npt.NDArray[np.float64]

#: The fewest bootstrap draws an interval is made from (0 draws: no intervals at all). A 95%
#: percentile interval's ends are the 2.5th and 97.5th percentiles of the draws; below 100
#: draws fewer than 2.5 draws lie beyond each end, so the ends are the extremes of a handful of
#: draws, interpolated, and can both fall on one side of the estimate (1 draw gave
#: "57.9% | 60.0% – 60.0%"). Refused rather than reported: a number in the report that looks
#: like an interval must be one.
MIN_BOOTSTRAP_DRAWS = 100


def check_draws(draws: int) -> None:
    """Refuse (:class:`InputError`) a number of bootstrap draws that makes no interval: below
    0, or from 1 to :data:`MIN_BOOTSTRAP_DRAWS` - 1."""
    if draws < 0 or 0 < draws < MIN_BOOTSTRAP_DRAWS:
        raise InputError(
            f"--bootstrap must be 0 (no confidence intervals) or at least "
            f"{MIN_BOOTSTRAP_DRAWS}, got {draws}: the ends of a 95% interval are the 2.5th and "
            f"97.5th percentiles of the draws, which fewer draws cannot place"
        )


def bootstrap_intervals(
    outcomes: Sequence[Outcome], scored: Sequence[Outcome], draws: int, seed: int
) -> dict[str, Interval]:
    """Percentile bootstrap intervals (rows resampled with replacement, seeded); none for 0
    draws, :class:`InputError` for too few to make one (:func:`check_draws`)."""
    check_draws(draws)
    if draws == 0 or not outcomes:
        return {}
    rng = np.random.default_rng(seed)
    inside = np.array([o.example.in_domain for o in outcomes])
    passed = np.array([o.passed for o in outcomes])
    saved = np.array([not o.called for o in outcomes])
    idx = rng.integers(0, len(outcomes), size=(draws, len(outcomes)), dtype=np.int32)
    ins, pas = inside[idx], passed[idx]
    n_in, n_off = ins.sum(axis=1), (~ins).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pass_rate = (ins & pas).sum(axis=1) / n_in
        block_rate = (~ins & ~pas).sum(axis=1) / n_off
    samples = {
        "saved_rate": saved[idx].mean(axis=1),
        "in_domain_pass_rate": pass_rate,
        "false_block_rate": 1 - pass_rate,
        "off_topic_block_rate": block_rate,
        "auroc": _bootstrap_auroc(scored, draws, rng),
    }
    intervals = {name: _interval(values) for name, values in samples.items()}
    counts = {
        "saved_rate": (int(saved.sum()), len(outcomes)),
        "in_domain_pass_rate": (int((inside & passed).sum()), int(inside.sum())),
        "false_block_rate": (int((inside & ~passed).sum()), int(inside.sum())),
        "off_topic_block_rate": (int((~inside & ~passed).sum()), int((~inside).sum())),
    }
    for name, (k, n) in counts.items():
        if n and k in (0, n):
            intervals[name] = exact_interval(k, n)
    return intervals


def exact_interval(k: int, n: int) -> Interval:
    """The Clopper-Pearson interval of a rate where none (``k == 0``) or all (``k == n``) of
    ``n`` rows count: there the bootstrap cannot vary (0 of 285 wrongly blocked gave
    0.0%-0.0%), though the true rate may well be above 0 (up to 1.3% at n = 285)."""
    alpha = 1 - BOOTSTRAP_LEVEL
    if k == 0:
        return Interval(low=0.0, high=float(1 - (alpha / 2) ** (1 / n)))
    if k == n:
        return Interval(low=float((alpha / 2) ** (1 / n)), high=1.0)
    raise ValueError("exact_interval is for k == 0 or k == n")


def _bootstrap_auroc(scored: Sequence[Outcome], draws: int, rng: np.random.Generator) -> FloatArray:
    from sklearn.metrics import roc_auc_score

    values = np.full(draws, np.nan)
    if not scored:
        return values
    scores, in_domain = score_arrays(scored)
    for i in range(draws):
        pick = rng.integers(0, len(scored), size=len(scored))
        labels = in_domain[pick]
        if labels.all() or not labels.any():
            continue
        values[i] = roc_auc_score(labels, scores[pick])
    return values


def score_arrays(rows: Sequence[Outcome]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The rows' scores and whether each is in-domain, as arrays."""
    scores = np.array([o.decision.score for o in rows], dtype=np.float64)
    return scores, np.array([o.example.in_domain for o in rows], dtype=bool)


def _interval(values: npt.NDArray[Any]) -> Interval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(low=None, high=None)
    tail = (1 - BOOTSTRAP_LEVEL) / 2 * 100
    return Interval(
        low=float(np.percentile(finite, tail)), high=float(np.percentile(finite, 100 - tail))
    )
