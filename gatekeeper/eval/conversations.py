"""Calibrating the conversation model like the threshold: on labelled chats, never on test.

The threshold is chosen first (on single messages). Then, at that threshold, every combination
of a small grid of conversation settings routes the calibration chats' customer turns with
:meth:`Gatekeeper.route` (the live rule). Among the combinations passing at least the target
share of in-domain turns, the choice follows the **one-standard-error rule**: not the one that
refuses the most off-topic (drift) turns, but the gentlest one whose drift refusals are within
one binomial standard error of that best. A calibration file has a few hundred customer turns;
the strictest setting that happens to refuse none of them sits on the edge of what refuses
customers elsewhere (measured: 0 of 165 on the calibration chats, 10 of 344 on the test chats),
and the drift counts of settings within one standard error of each other are the same within
noise. Gentlest: the fewest calibration turns refused, then the widest session margin, the
loosest off-topic bar, no gap rule, most words. The settings are on the model's own score
scale, so a new model needs this as much as a new threshold.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatekeeper.conversation import GAP_OFF, FollowupPolicy, Turn
from gatekeeper.decision import Route
from gatekeeper.errors import DatasetError
from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.gates import judge_all, without_conversation_settings
from gatekeeper.eval.progress import TaskFactory, no_progress

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper

MARGINS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)
OFF_TOPIC_MAX = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
GAPS = (0.05, 0.1, 0.15, 0.2, GAP_OFF)
#: What counts as an answer to the assistant's question is not chosen on chats: an answer is a
#: datum (a name, an e-mail, a phone number, an order id, "yes", "the blue one"), at most 4
#: words as a customer counts them. Chosen on the calibration chats from 4, 8 and 12, the grid
#: paid for a narrower margin with 12 words (their longer in-chat sentences pass on the margin
#: instead), and forwarded any sentence of up to 12 words after an assistant's question as an
#: answer: "by the way, who won the match last night?" after "Could you give me the order
#: number?" (eval/README.md, "How the grid point is chosen").
WORDS = (4,)

Measured = tuple[FollowupPolicy, float, float | None]  # a policy, its pass and block rates


@dataclass(frozen=True)
class ConversationCalibration:
    """The conversation settings chosen on a chats file, and what they do there."""

    policy: FollowupPolicy
    source: str
    target_pass_rate: float
    reached: bool
    in_domain_pass_rate: float
    off_topic_block_rate: float | None
    n_in_domain: int
    n_off_topic: int


def _grid() -> list[FollowupPolicy]:
    """Every candidate, gentlest to customers first (so the first best one wins ties)."""
    return [
        FollowupPolicy(max_words=w, off_topic_max=o, off_topic_gap=g, session_margin=m)
        for m, o, g, w in itertools.product(
            reversed(MARGINS), reversed(OFF_TOPIC_MAX), reversed(GAPS), reversed(WORDS)
        )
    ]


def _rates(
    gate: Gatekeeper, inside: list[list[Turn]], outside: list[list[Turn]], policy: FollowupPolicy
) -> tuple[float, float | None]:
    passed = sum(gate.route(t, policy=policy).route is not Route.OFF_TOPIC for t in inside)
    blocked = sum(gate.route(t, policy=policy).route is Route.OFF_TOPIC for t in outside)
    return passed / len(inside), (blocked / len(outside) if outside else None)


def calibrate_conversations(
    gate: Gatekeeper,
    dataset: Dataset,
    target: float,
    task: TaskFactory = no_progress,
    chunk_size: int = 128,
) -> ConversationCalibration:
    """Choose ``gate.session_margin``, ``followup_off_topic_max``, ``followup_off_topic_gap`` and
    ``followup_max_words`` on the chats of ``dataset`` at the gate's threshold. The gate's own
    values play no part (each candidate routes the chats), nor a hint that they are stale."""
    gate = without_conversation_settings(gate)
    chats = [e for e in dataset.examples if e.multi_turn]
    if not chats:
        raise DatasetError(
            f"{dataset.name}: no conversations (rows with 'messages') to calibrate on"
        )
    judged = judge_all(gate, Dataset(tuple(chats), dataset.sources), task, chunk_size)
    inside = [j for e, j in zip(chats, judged, strict=True) if e.in_domain]
    outside = [j for e, j in zip(chats, judged, strict=True) if not e.in_domain]
    if not inside:
        raise DatasetError(f"{dataset.name}: no in-domain customer turns to calibrate on")
    if not outside:  # every setting passes them all: the gentlest would win unmeasured
        raise DatasetError(
            f"{dataset.name}: no off-topic (drift) customer turns to calibrate on: the "
            "conversation settings trade customers passed against drifts refused, and need both"
        )
    if all(len(turns) == 1 for turns in outside):  # a first turn is judged alone
        raise DatasetError(
            f"{dataset.name}: its {len(outside)} off-topic customer turns all open their chat, "
            "and no conversation setting changes how a first turn is judged: add chats that "
            "drift off-topic after a served turn"
        )
    measured = [(policy, *_rates(gate, inside, outside, policy)) for policy in _grid()]
    chosen, reached = choose_policy(measured, target, len(outside))
    policy, pass_rate, block_rate = chosen
    return ConversationCalibration(
        policy=policy,
        source=dataset.name,
        target_pass_rate=target,
        reached=reached,
        in_domain_pass_rate=pass_rate,
        off_topic_block_rate=block_rate,
        n_in_domain=len(inside),
        n_off_topic=len(outside),
    )


def choose_policy(
    measured: list[Measured], target: float, n_off_topic: int
) -> tuple[Measured, bool]:
    """The one-standard-error choice among ``(policy, pass rate, block rate)`` rows, gentlest
    first: the first row passing ``target`` whose block rate is within one standard error of
    the best such row, fewest blocked first; when none passes, the one passing the most."""
    feasible = [row for row in measured if row[1] + 1e-12 >= target]
    if not feasible:
        return max(measured, key=lambda row: row[1]), False
    best = max(row[2] or 0.0 for row in feasible)
    error = math.sqrt(best * (1 - best) / n_off_topic) if n_off_topic else 0.0
    near = [row for row in feasible if (row[2] or 0.0) >= best - error - 1e-12]
    return min(near, key=lambda row: (-row[1], row[2] or 0.0)), True
