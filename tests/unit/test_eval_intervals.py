"""Bootstrap intervals resample chats, not the turns of one chat as if independent."""

from __future__ import annotations

import numpy as np

from gatekeeper.decision import Decision, Route
from gatekeeper.eval.dataset_rows import Example
from gatekeeper.eval.intervals import bootstrap_intervals, chats
from gatekeeper.eval.schema import Outcome


def _outcome(line: int, passed: bool, turn: int | None = None) -> Outcome:
    route = Route.LLM if passed else Route.OFF_TOPIC
    decision = Decision(route=route, intent=None, score=0.5, threshold=0.4, reason="r")
    example = Example("hi", "in_domain", None, "chats.jsonl", line, turn=turn)
    return Outcome(example=example, decision=decision, called=passed)


def test_the_turns_of_one_chat_are_one_draw() -> None:
    """Turns of one dataset line share a chat number, other rows have their own; a chat of 10
    refused turns among 40 passing single rows widens the pass-rate interval over one that
    resamples its turns one by one."""
    chat = [_outcome(1, False, turn) for turn in range(1, 11)]
    singles = [_outcome(line, True) for line in range(2, 42)]
    assert list(chats(chat + singles[:2])) == [0] * 10 + [1, 2]
    apart = [_outcome(100 + i, False) for i in range(10)]  # the same rows, each its own
    together = bootstrap_intervals(chat + singles, [], 400, 0)["in_domain_pass_rate"]
    alone = bootstrap_intervals(apart + singles, [], 400, 0)["in_domain_pass_rate"]
    assert together.low is not None and alone.low is not None
    assert together.high is not None and alone.high is not None
    assert together.high - together.low > 1.5 * (alone.high - alone.low)


def test_single_rows_draw_as_before() -> None:
    """Without chats the draws are rows, as before chats were drawn whole: the same interval as
    resampling the rows themselves with the same seed."""
    rows = [_outcome(line, line % 4 != 0) for line in range(1, 81)]
    passed = np.array([o.passed for o in rows])
    idx = np.random.default_rng(7).integers(0, len(rows), size=(300, len(rows)), dtype=np.int32)
    rates = passed[idx].mean(axis=1)
    interval = bootstrap_intervals(rows, [], 300, 7)["in_domain_pass_rate"]
    assert interval.low == float(np.percentile(rates, 2.5))
    assert interval.high == float(np.percentile(rates, 97.5))
