"""Thresholds: calibration on a labelled file, the sweep, and ROC metrics.

Calibration and the sweep route every example with :meth:`Gatekeeper.route` — the function the
live gate uses, with the same canned rule, per-intent thresholds and follow-up rule — at each
candidate global threshold. So a sweep point at the operating threshold is exactly the report's
headline, and a calibrated threshold passes what the proxy would pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gatekeeper.conversation import Turn
from gatekeeper.decision import Route
from gatekeeper.errors import DatasetError, InputError
from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.formatting import pct
from gatekeeper.eval.gates import judge_all
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.schema import Calibration, Outcome, SweepPoint

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

#: The in-domain pass rates a report recommends a threshold for.
RECOMMENDED_TARGETS = (0.99, 0.98, 0.95)

#: Sweep resolution: the whole score range, and finer steps near the operating point.
SWEEP_POINTS = 101
SWEEP_FINE_SPAN = 0.05
SWEEP_FINE_STEP = 0.0025


def routes_at(gate: Gatekeeper, rows: Sequence[Sequence[Turn]], threshold: float) -> list[Route]:
    """Where each judged conversation goes at this global threshold."""
    return [gate.route(turns, threshold=threshold).route for turns in rows]


def pass_rate_at(gate: Gatekeeper, rows: Sequence[Sequence[Turn]], threshold: float) -> float:
    """The share of ``rows`` not refused at ``threshold``."""
    routes = routes_at(gate, rows, threshold)
    return sum(r is not Route.OFF_TOPIC for r in routes) / len(routes)


def floor_threshold(value: float, decimals: int = 4) -> float:
    """``value`` rounded down (a rounded threshold never blocks a message the exact one passed)."""
    scale = 10**decimals
    return float(max(-1.0, min(1.0, math.floor(value * scale) / scale)))


def check_target(target: float, name: str = "the target pass rate") -> None:
    """Refuse a target pass rate outside (0, 1] with :class:`InputError` (``name`` says which
    option it came from); a percentage (``99``) gets "did you mean 0.99?"."""
    if not 0.0 < target <= 1.0:
        meant = f" (did you mean {target / 100:g}?)" if 1.0 < target <= 100.0 else ""
        raise InputError(f"{name} must be above 0 and at most 1, got {target:g}{meant}")


def choose_threshold(
    gate: Gatekeeper, in_domain: Sequence[Sequence[Turn]], target: float
) -> tuple[float, bool]:
    """The highest global threshold at which ``target`` of the in-domain rows pass.

    A row's route changes only where the global threshold crosses one of its turns' scores, and
    raising the threshold never lets more through, so the answer is one of those scores: found
    by bisection. Returns ``(threshold, reached)``; when nothing reaches the target (rows with
    no in-domain neighbour, intents with their own high threshold), ``(-1.0, False)``.
    """
    check_target(target)
    if not in_domain:
        raise DatasetError("the calibration data has no in_domain rows")
    candidates = sorted({1.0, *(t.judged.score for turns in in_domain for t in turns)})
    candidates = [c for c in candidates if -1.0 <= c <= 1.0]
    low, high = 0, len(candidates) - 1  # invariant: candidates[low - 1] passes (or low == 0)
    if pass_rate_at(gate, in_domain, candidates[0]) < target:
        return -1.0, pass_rate_at(gate, in_domain, -1.0) >= target
    while low < high:
        middle = (low + high + 1) // 2
        if pass_rate_at(gate, in_domain, candidates[middle]) >= target:
            low = middle
        else:
            high = middle - 1
    return floor_threshold(candidates[low]), True


def calibrate(
    gate: Gatekeeper,
    dataset: Dataset,
    target: float,
    task: TaskFactory = no_progress,
    chunk_size: int = 128,
) -> Calibration:
    """Choose the threshold on ``dataset`` alone for the ``target`` in-domain pass rate."""
    judged = judge_all(gate, dataset, task, chunk_size)
    inside = [j for e, j in zip(dataset.examples, judged, strict=True) if e.in_domain]
    outside = [j for e, j in zip(dataset.examples, judged, strict=True) if not e.in_domain]
    targets = report_targets(target)  # each chosen once, the run's own too
    chosen = {t: choose_threshold(gate, inside, t) for t in targets}
    threshold, reached = chosen[target]
    blocked = [r is Route.OFF_TOPIC for r in routes_at(gate, outside, threshold)]
    by_target = {f"{t:g}": (chosen[t][0] if chosen[t][1] else None) for t in targets}
    needed = rows_needed(target)
    return Calibration(
        source=dataset.name,
        target_pass_rate=target,
        threshold=threshold,
        reached=reached,
        enough_rows=needed is None or len(inside) >= needed,
        rows_needed=needed,
        in_domain_pass_rate=pass_rate_at(gate, inside, threshold),
        off_topic_block_rate=rate(blocked),
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        score_basis=basis_of(dataset),
        by_target=by_target,
    )


def report_targets(target: float | None = None) -> tuple[float, ...]:
    """The pass rates a report recommends a threshold for: :data:`RECOMMENDED_TARGETS` and the
    run's own ``target`` (so its "apply with" command is the run's, e.g. 0.999), highest
    first."""
    extra = () if target is None else (target,)
    return tuple(sorted(set(RECOMMENDED_TARGETS) | set(extra), reverse=True))


def rows_needed(target: float) -> int | None:
    """The fewest in-domain calibration rows that can resolve ``target`` (None for 1.0).

    The bound: the lowest threshold calibration can choose is the lowest of the ``n`` in-domain
    scores, and a new in-domain message, exchangeable with them, scores below all ``n`` with
    probability 1 / (n + 1) (its rank among the n + 1 is uniform). So even that threshold
    passes an expected n / (n + 1) of new customers, and a target above that is not resolved by
    the data: every target from n / (n + 1) up gives the same threshold as 100% would (30 rows:
    99.9% and 100% both gave the lowest score, and the test set then passed 98.5%). Hence
    n >= target / (1 - target): 19 rows for 95%, 49 for 98%, 99 for 99%, 999 for 99.9%. A
    100% target asks for the lowest score by definition; no number of rows resolves it, and it
    is not warned about.
    """
    if target >= 1.0:
        return None
    return math.ceil(round(target / (1.0 - target), 6))


def too_few_rows_warning(calibration: Calibration) -> str | None:
    """What to tell a user whose calibration file has fewer in-domain rows than its target
    needs (:func:`rows_needed`), or None."""
    if calibration.enough_rows or calibration.rows_needed is None:
        return None
    n = calibration.n_in_domain
    return (
        f"{calibration.source} has only {n} in-domain rows; a {pct(calibration.target_pass_rate)} "
        f"target needs about {calibration.rows_needed} or more (with {n} rows even the lowest "
        f"in-domain score, as a threshold, passes an expected {pct(n / (n + 1))} of new "
        f"customers). The threshold {calibration.threshold:.4f} is then just the lowest "
        "in-domain score there, the same as a 100% target: add labelled in-domain messages, or "
        f"lower --target-pass-rate to {math.floor(n / (n + 1) * 1000) / 1000:g} or below"
    )


def basis_of(dataset: Dataset) -> str:
    """Which rows calibration and the sweep route: every row, conversations as chats."""
    multi = sum(e.multi_turn for e in dataset.examples)
    if not multi:
        return "single messages"
    return f"every row ({multi} conversations routed as chats, with the follow-up rule)"


def sweep_grid(scores: Sequence[float], operating: float) -> list[float]:
    """Thresholds to sweep: the score range in even steps, finer near the operating point."""
    if not scores:
        return []
    low = max(-1.0, math.floor(min(scores) * 100) / 100)
    high = min(1.0, math.ceil(max(scores) * 100) / 100)
    coarse = np.linspace(low, high, SWEEP_POINTS)
    fine = np.arange(-SWEEP_FINE_SPAN, SWEEP_FINE_SPAN + 1e-9, SWEEP_FINE_STEP) + operating
    grid = {round(float(t), 4) for t in [*coarse, *fine] if -1.0 <= t <= 1.0}
    return sorted(grid | {operating})


def sweep(
    gate: Gatekeeper,
    outcomes: Sequence[Outcome],
    operating: float,
    task: TaskFactory = no_progress,
) -> list[SweepPoint]:
    """Saved calls vs wrongly blocked customers at a grid of global thresholds, every row routed
    as the gate routes it."""
    rows = [o for o in outcomes if o.turns]
    scores = [t.judged.score for o in rows for t in o.turns]
    grid = sweep_grid(scores, operating)
    advance, set_total = task("sweeping thresholds")
    set_total(len(grid))
    points = []
    for threshold in grid:
        points.append(sweep_point(gate, rows, threshold))
        advance(1)
    return points


def sweep_point(gate: Gatekeeper, outcomes: Sequence[Outcome], threshold: float) -> SweepPoint:
    """What ``threshold`` would do to ``outcomes``."""
    routes = routes_at(gate, [o.turns for o in outcomes], threshold)
    inside = [o.example.in_domain for o in outcomes]
    passed = [r is not Route.OFF_TOPIC for r in routes]
    calls = sum(r is Route.LLM for r in routes)
    passed_in = [p for p, i in zip(passed, inside, strict=True) if i]
    passed_out = [p for p, i in zip(passed, inside, strict=True) if not i]
    pass_in = rate(passed_in)
    return SweepPoint(
        threshold=threshold,
        llm_calls=calls,
        saved_rate=1 - calls / len(routes) if routes else 0.0,
        wrongly_blocked=passed_in.count(False),
        in_domain_pass_rate=pass_in,
        false_block_rate=None if pass_in is None else 1 - pass_in,
        off_topic_block_rate=rate([not p for p in passed_out]),
    )


def score_rows(outcomes: Sequence[Outcome]) -> tuple[list[Outcome], str]:
    """The rows whose score describes them alone (single messages), for AUROC and the score
    plot; a dataset of conversations only falls back to every judged (labelled) user turn of
    them, each scored as the gate scored it in its chat."""
    single = [o for o in outcomes if not o.example.multi_turn]
    if single:
        basis = (
            "single messages"
            if len(single) == len(outcomes)
            else "single messages; conversations reported separately"
        )
        return single, basis
    return list(outcomes), "every judged user turn of the conversations (no single messages)"


def roc_metrics(
    scores: npt.NDArray[np.float64], in_domain: npt.NDArray[np.bool_]
) -> tuple[float | None, float | None]:
    """AUROC of the score (in-domain = positive) and the FPR where TPR first reaches 95%."""
    if in_domain.all() or not in_domain.any():
        return None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    auroc = float(roc_auc_score(in_domain, scores))
    fpr, tpr, _ = roc_curve(in_domain, scores)
    return auroc, float(fpr[int(np.argmax(tpr >= 0.95))])


def rate(flags: npt.NDArray[Any] | Sequence[bool]) -> float | None:
    """The share of true flags (None for none)."""
    array = np.asarray(flags, dtype=bool)
    return float(array.mean()) if array.size else None
