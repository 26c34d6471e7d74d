"""The eval on labelled chats (per-turn ``labels``), on the hashing embedder: rows read as the
live gate reads the chat, the replayed decisions, the conversation settings' calibration and
what the report says about chats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gatekeeper.eval.datasets import load_dataset
from gatekeeper.gate import Gatekeeper

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CHATS = FIXTURES / "tiny_chats.jsonl"


def _jsonl(path: Path, *rows: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_replayed_headers_give_back_the_follow_up_and_the_nearest_intent(
    tiny_gate: Gatekeeper,
) -> None:
    """The decision read back from the proxy's headers keeps the follow-up flag (a replayed run
    counted 0 follow-ups) and a refused message's nearest intent."""
    from gatekeeper.eval.replay import decision_from_headers
    from gatekeeper.interfaces.proxy.answers import decision_headers

    chat = [dict(m) for m in load_dataset(CHATS).examples[1].message]
    followup = tiny_gate.check(chat)
    assert followup.followup
    back = decision_from_headers(decision_headers(followup))
    assert back.followup and back.intent == followup.intent
    refused = tiny_gate.check("write a poem about my order")
    assert refused.intent is None and refused.nearest_intent == "order_status"
    back = decision_from_headers(decision_headers(refused))
    assert not back.followup and back.nearest_intent == refused.nearest_intent
