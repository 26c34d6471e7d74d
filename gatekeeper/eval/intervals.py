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
    """Percentile bootstrap intervals (seeded); none for 0 draws, :class:`InputError` for too
    few to make one (:func:`check_draws`). What is resampled with replacement is a chat (the
    customer turns of one dataset line with per-turn labels, which are not independent: a
    refused turn refuses the short turns after it) or a row on its own, so a file of single
    messages is resampled row by row as before."""
    check_draws(draws)
    if draws == 0 or not outcomes:
        return {}
    rng = np.random.default_rng(seed)
    inside = np.array([o.example.in_domain for o in outcomes])
    passed = np.array([o.passed for o in outcomes])
    saved = np.array([not o.called for o in outcomes])
    group = chats(outcomes)
    n_groups = int(group.max()) + 1

    def per_chat(values: npt.NDArray[np.bool_]) -> FloatArray:
        counts = np.bincount(group, weights=values.astype(np.float64), minlength=n_groups)
        return counts.astype(np.float64)

    rows, n_saved = per_chat(np.ones(len(outcomes), dtype=bool)), per_chat(saved)
    n_in, n_off = per_chat(inside), per_chat(~inside)
    n_pass, n_block = per_chat(inside & passed), per_chat(~inside & ~passed)
    idx = rng.integers(0, n_groups, size=(draws, n_groups), dtype=np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        pass_rate = n_pass[idx].sum(axis=1) / n_in[idx].sum(axis=1)
        block_rate = n_block[idx].sum(axis=1) / n_off[idx].sum(axis=1)
    samples = {
        "saved_rate": n_saved[idx].sum(axis=1) / rows[idx].sum(axis=1),
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


def chats(outcomes: Sequence[Outcome]) -> npt.NDArray[np.int64]:
    """Each row's chat, numbered in order of first appearance: the turns of one dataset line
    share a number; every other row has one of its own."""
    numbers: dict[tuple[str, int], int] = {}
    return np.array(
        [numbers.setdefault((o.example.source, o.example.line), len(numbers)) for o in outcomes],
        dtype=np.int64,
    )


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
