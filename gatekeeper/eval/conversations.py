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

What a run says about its choice (:func:`conversation_warnings`, :func:`settings_line`,
:func:`settings_note`, the last one the written settings' comment) is made here, so the command
that writes them only prints it: too few in-domain customer turns for the target (the
threshold's rule, :func:`~gatekeeper.eval.thresholds.rows_needed`: 199 for 99.5%), and, when no
setting reaches the target, the best reached and the customer turns no setting passes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper._rows import shown
from gatekeeper.conversation import GAP_OFF, FollowupPolicy, Turn
from gatekeeper.decision import Route
from gatekeeper.errors import DatasetError
from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.formatting import pct
from gatekeeper.eval.gates import judge_all, without_conversation_settings
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.thresholds import rows_needed

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

#: Customer turns no setting passes that a warning names before counting the rest.
NAMED_TURNS = 5
#: What the written settings' comment puts before each warning (read back by the eval report).
WARNING_MARK = "; warning: "


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
    #: the fewest in-domain customer turns that can resolve the target (the threshold's rule,
    #: :func:`~gatekeeper.eval.thresholds.rows_needed`); None for a 100% target
    turns_needed: int | None = None
    #: the in-domain customer turns no setting of the grid passes ("FILE, line N, turn k/m:
    #: 'text'"), in file order
    never_passed: tuple[str, ...] = ()

    @property
    def n_passed(self) -> int:
        """In-domain customer turns the chosen settings pass."""
        return round(self.in_domain_pass_rate * self.n_in_domain)

    @property
    def enough_turns(self) -> bool:
        """Whether the chats have the in-domain customer turns the target needs."""
        return self.turns_needed is None or self.n_in_domain >= self.turns_needed


def _grid() -> list[FollowupPolicy]:
    """Every candidate, gentlest to customers first (so the first best one wins ties)."""
    return [
        FollowupPolicy(max_words=w, off_topic_max=o, off_topic_gap=g, session_margin=m)
        for m, o, g, w in itertools.product(
            reversed(MARGINS), reversed(OFF_TOPIC_MAX), reversed(GAPS), reversed(WORDS)
        )
    ]


def _refused(gate: Gatekeeper, rows: list[list[Turn]], policy: FollowupPolicy) -> list[bool]:
    """Whether each judged turn is refused under ``policy``."""
    return [gate.route(turns, policy=policy).route is Route.OFF_TOPIC for turns in rows]


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
    measured: list[Measured] = []
    never = [True] * len(inside)  # refused by every setting so far
    for policy in _grid():
        refused = _refused(gate, inside, policy)
        never = [n and r for n, r in zip(never, refused, strict=True)]
        blocked = sum(_refused(gate, outside, policy))
        passed = len(inside) - sum(refused)
        measured.append((policy, passed / len(inside), blocked / len(outside)))
    chosen, reached = choose_policy(measured, target, len(outside))
    policy, pass_rate, block_rate = chosen
    customers = [e for e in chats if e.in_domain]
    return ConversationCalibration(
        policy=policy,
        source=dataset.name,
        target_pass_rate=target,
        reached=reached,
        in_domain_pass_rate=pass_rate,
        off_topic_block_rate=block_rate,
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        turns_needed=rows_needed(target),
        never_passed=tuple(
            f"{e.where}: {shown(e.text or '(attachments only)', 60)}"
            for e, n in zip(customers, never, strict=True)
            if n
        ),
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


def settings_text(policy: FollowupPolicy) -> str:
    """The settings as the settings file names them."""
    return (
        f"session_margin {policy.session_margin:g}, followup_off_topic_max "
        f"{policy.off_topic_max:g}, followup_off_topic_gap {policy.off_topic_gap:g}, "
        f"followup_max_words {policy.max_words}"
    )


def too_few_turns_warning(found: ConversationCalibration) -> str | None:
    """What to tell a user whose chats have fewer in-domain customer turns than the target
    needs (the threshold's rule: a 99.5% target needs about 199), or None."""
    if found.enough_turns or found.turns_needed is None:
        return None
    n, drifts = found.n_in_domain, found.n_off_topic
    return (
        f"{found.source} has only {n} in-domain customer turns (and {drifts} drift "
        f"turn{'' if drifts == 1 else 's'}); a "
        f"{pct(found.target_pass_rate)} conversation target needs about {found.turns_needed} "
        f"or more: {n} turns cannot tell {pct(found.target_pass_rate)} from {pct(n / (n + 1))} "
        f"(what passing all {n} shows), so '{pct(found.in_domain_pass_rate)} passed' there "
        "says little about new chats. Add labelled chats, or lower --conversation-target to "
        f"{math.floor(n / (n + 1) * 1000) / 1000:g} or below"
    )


def missed_target_warning(found: ConversationCalibration) -> str | None:
    """When no setting passes the target share of the in-domain customer turns: the target,
    the best reached, the turns no setting passes, and that the settings chosen (the best)
    miss the target; None when the target is reached."""
    if found.reached:
        return None
    named = list(found.never_passed[:NAMED_TURNS])
    more = len(found.never_passed) - len(named)
    if named:
        which = "; ".join(named) + (f" and {more} more" if more > 0 else "")
        turns = f"no setting passes {'this customer turn' if len(named) == 1 else 'these'}: {which}"
    else:
        turns = "each refused turn passes under some setting, but none passes enough of them"
    return (
        f"no conversation setting passes {pct(found.target_pass_rate)} of the "
        f"{found.n_in_domain} in-domain customer turns of {found.source}: the best passes "
        f"{found.n_passed} of {found.n_in_domain} ({pct(found.in_domain_pass_rate)}); {turns}. "
        f"The settings chosen are that best ({settings_text(found.policy)}) and miss the "
        "target: add exemplars for those turns, or lower --conversation-target"
    )


def conversation_warnings(found: ConversationCalibration) -> list[str]:
    """Everything a conversation calibration should warn about."""
    return [w for w in (missed_target_warning(found), too_few_turns_warning(found)) if w]


def settings_line(found: ConversationCalibration, path: Path | str | None) -> str:
    """The chosen settings and what they do on the chats (``path``: the file as given)."""
    return (
        f"conversation settings: {settings_text(found.policy)}: on {path} they pass "
        f"{pct(found.in_domain_pass_rate)} of {found.n_in_domain} in-domain customer turns "
        f"and refuse {pct(found.off_topic_block_rate)} of {found.n_off_topic} drift turns"
        + ("" if found.reached else f" (target {pct(found.target_pass_rate)}: NOT reached)")
    )


def settings_note(
    found: ConversationCalibration, command: str, path: Path | str | None, target: float
) -> str:
    """The written settings' comment: the command that chose them, what they do there, and
    what the run warned about (each after :data:`WARNING_MARK`, short: one line of YAML)."""
    note = (
        f"{command} --conversations {path} --conversation-target {target:g} --write → "
        f"{pct(found.in_domain_pass_rate)} customer turns passed ({found.n_passed} of "
        f"{found.n_in_domain}), {pct(found.off_topic_block_rate)} drift turns refused there"
    )
    if not found.reached:
        stuck = len(found.never_passed)
        note += (
            f"{WARNING_MARK}they miss the {pct(target)} target, no setting reaches it (the best "
            f"passes {found.n_passed} of {found.n_in_domain}"
            + (
                f"; {stuck} {'turn passes' if stuck == 1 else 'turns pass'} under no setting"
                if stuck
                else ""
            )
            + ")"
        )
    if not found.enough_turns:
        note += (
            f"{WARNING_MARK}too few chats for {pct(target)}: {found.n_in_domain} in-domain "
            f"customer turns, about {found.turns_needed} needed"
        )
    return note
