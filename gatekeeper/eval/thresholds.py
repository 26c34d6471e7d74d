"""Thresholds: calibration on a labelled file, the sweep, and ROC metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gatekeeper.errors import DatasetError, InputError
from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.gates import decide_all
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.schema import Calibration, Outcome, SweepPoint

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper


FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ScoreTable:
    """Threshold-independent view of decisions: what any global threshold would do.

    ``fixed`` holds an intent's own threshold (catalog or ``gate.intent_thresholds``) where one
    applies (NaN where the global threshold does); ``routable`` is False when no in-domain
    exemplar was near (never passes); ``canned`` marks intents answered by a fixed reply.
    """

    scores: FloatArray
    in_domain: BoolArray
    fixed: FloatArray
    routable: BoolArray
    canned: BoolArray

    def passes(self, threshold: float) -> BoolArray:
        """Which rows pass (llm or canned) at this global threshold."""
        limit = np.where(np.isnan(self.fixed), threshold, self.fixed)
        result: BoolArray = self.routable & (self.scores >= limit)
        return result

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def score_rows(outcomes: Sequence[Outcome]) -> tuple[list[Outcome], str]:
    """The rows whose scores are threshold-independent, and a word on which they are."""
    single = [o for o in outcomes if not o.example.multi_turn]
    if single:
        basis = (
            "single messages"
            if len(single) == len(outcomes)
            else "single messages; conversations reported separately"
        )
        return single, basis
    return list(outcomes), "last user turns of conversations (no single messages)"


def score_table(outcomes: Sequence[Outcome], gate: Gatekeeper) -> ScoreTable:
    """The :class:`ScoreTable` of ``outcomes`` under ``gate``'s catalog and intent thresholds."""
    per_intent = gate.thresholds.per_intent
    canned = {i.name for i in gate.catalog.intents if i.canned}
    intents = [o.decision.intent for o in outcomes]
    return ScoreTable(
        scores=np.array([o.decision.score for o in outcomes], dtype=np.float64),
        in_domain=np.array([o.example.in_domain for o in outcomes], dtype=bool),
        fixed=np.array(
            [per_intent.get(i, math.nan) if i is not None else math.nan for i in intents],
            dtype=np.float64,
        ),
        routable=np.array([i is not None for i in intents], dtype=bool),
        canned=np.array([i in canned for i in intents], dtype=bool),
    )


def floor_threshold(value: float, decimals: int = 4) -> float:
    """``value`` rounded down (a rounded threshold never blocks a message the exact one passed)."""
    scale = 10**decimals
    return float(max(-1.0, min(1.0, math.floor(value * scale) / scale)))


def check_target(target: float) -> None:
    """Refuse a target pass rate outside (0, 1] with :class:`InputError`."""
    if not 0.0 < target <= 1.0:
        raise InputError(f"the target pass rate must be above 0 and at most 1, got {target:g}")


def choose_threshold(table: ScoreTable, target: float) -> tuple[float, bool]:
    """The highest global threshold whose in-domain pass rate reaches ``target``.

    Returns ``(threshold, reached)``; when no threshold reaches the target (messages with no
    in-domain neighbour, or intents with their own high threshold), the lowest one is returned.
    """
    check_target(target)
    inside = table.in_domain
    n_in = int(inside.sum())
    if n_in == 0:
        raise DatasetError("the calibration data has no in_domain rows")
    variable = inside & table.routable & np.isnan(table.fixed)
    fixed_pass = int(
        (inside & table.routable & ~np.isnan(table.fixed) & (table.scores >= table.fixed)).sum()
    )
    need = math.ceil(target * n_in - 1e-9) - fixed_pass
    if need <= 0:
        return 1.0, True
    ranked = np.sort(table.scores[variable])[::-1]
    if need > ranked.shape[0]:
        return -1.0, False
    return floor_threshold(float(ranked[need - 1])), True


def calibrate(
    gate: Gatekeeper,
    dataset: Dataset,
    target: float,
    task: TaskFactory = no_progress,
    chunk_size: int = 128,
) -> Calibration:
    """Choose the threshold on ``dataset`` alone for the ``target`` in-domain pass rate."""
    decisions = decide_all(gate, dataset, task, chunk_size)
    outcomes = [Outcome(e, d, False) for e, d in zip(dataset.examples, decisions, strict=True)]
    rows, basis = score_rows(outcomes)
    table = score_table(rows, gate)
    threshold, reached = choose_threshold(table, target)
    passes = table.passes(threshold)
    return Calibration(
        source=dataset.name,
        target_pass_rate=target,
        threshold=threshold,
        reached=reached,
        in_domain_pass_rate=rate(passes[table.in_domain]),
        off_topic_block_rate=rate(~passes[~table.in_domain]),
        n_in_domain=int(table.in_domain.sum()),
        n_off_topic=int((~table.in_domain).sum()),
        score_basis=basis,
    )


def sweep(table: ScoreTable, operating: float, points: int = 101) -> list[SweepPoint]:
    """Saved calls vs wrongly blocked customers at a grid of global thresholds."""
    if len(table) == 0:
        return []
    low = math.floor(float(table.scores.min()) * 100) / 100
    high = math.ceil(float(table.scores.max()) * 100) / 100
    grid = sorted({*np.round(np.linspace(max(-1.0, low), min(1.0, high), points), 4), operating})
    return [sweep_point(table, float(t)) for t in grid]


def sweep_point(table: ScoreTable, threshold: float) -> SweepPoint:
    """What ``threshold`` would do to the rows of ``table``."""
    passes = table.passes(threshold)
    calls = int((passes & ~table.canned).sum())
    inside = table.in_domain
    return SweepPoint(
        threshold=threshold,
        llm_calls=calls,
        saved_rate=1 - calls / len(table),
        wrongly_blocked=int((inside & ~passes).sum()),
        in_domain_pass_rate=rate(passes[inside]),
        false_block_rate=rate(~passes[inside]),
        off_topic_block_rate=rate(~passes[~inside]),
    )


def roc_metrics(table: ScoreTable) -> tuple[float | None, float | None]:
    """AUROC of the score (in-domain = positive) and the FPR where TPR first reaches 95%."""
    if table.in_domain.all() or not table.in_domain.any():
        return None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    auroc = float(roc_auc_score(table.in_domain, table.scores))
    fpr, tpr, _ = roc_curve(table.in_domain, table.scores)
    return auroc, float(fpr[int(np.argmax(tpr >= 0.95))])


def rate(flags: npt.NDArray[Any] | Sequence[bool]) -> float | None:
    array = np.asarray(flags, dtype=bool)
    return float(array.mean()) if array.size else None
