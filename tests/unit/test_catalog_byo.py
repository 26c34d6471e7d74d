"""Catalogs as people have them: any intent name, spreadsheet CSVs, every problem at once."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from gatekeeper.catalog import load_catalog, parse_catalog, read_catalog
from gatekeeper.errors import CatalogError
from gatekeeper.testing import make_gate


def _csv(tmp_path: Path, text: str, *, bom: bool = False, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _problems(path: Path) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    return str(caught.value)


def test_any_non_empty_intent_name_is_kept_as_written() -> None:
    """'Cancel / Reschedule' and banking77's 'reverted_card_payment?' load, names unchanged."""
    catalog = parse_catalog(
        {
            "intents": [
                {"name": "Cancel / Reschedule", "exemplars": ["move my appointment"]},
                {"name": "reverted_card_payment?", "exemplars": ["my payment was reverted"]},
                {"name": "退款", "exemplars": ["我要退款"]},
            ]
        }
    )
    assert [i.name for i in catalog.intents] == [
        "Cancel / Reschedule",
        "reverted_card_payment?",
        "退款",
    ]


def test_a_blank_intent_name_is_refused_in_plain_words() -> None:
    """An intent whose name is blank says so, not a regex."""
    with pytest.raises(CatalogError, match="the intent name is empty") as caught:
        parse_catalog({"intents": [{"name": "  ", "exemplars": ["x"]}]})
    assert "pattern" not in str(caught.value)


def test_excel_csv_with_bom_capitalised_header_and_quotes(tmp_path: Path) -> None:
    """A BOM, 'Text,Intent' headers and quoted commas/newlines load as people saved them."""
    path = _csv(
        tmp_path,
        'Text , Intent\r\n"refund, please",Refunds\r\n"where is\nmy order",Orders\r\n',
        bom=True,
    )
    catalog = load_catalog(path)
    assert catalog.intent("Refunds").exemplars == ("refund, please",)
    assert catalog.intent("Orders").exemplars == ("where is\nmy order",)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_csv_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    """Semicolon (European Excel) and tab separated catalogs load like comma ones."""
    rows = ["text", "intent"], ["refund, please", "refunds"], ["a joke", "off_topic"]
    path = _csv(tmp_path, "\n".join(delimiter.join(r) for r in rows) + "\n")
    catalog = load_catalog(path)
    assert catalog.intent("refunds").exemplars == ("refund, please",)
    assert catalog.off_topic.exemplars == ("a joke",)


def test_empty_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    """Rows with a blank text are skipped with a warning naming their rows, not fatal."""
    path = _csv(
        tmp_path, "text,intent\nwhere is my order,orders\n,orders\n,,\n  ,orders\ntrack it,orders\n"
    )
    loaded = read_catalog(path)
    assert loaded.catalog.intent("orders").exemplars == ("where is my order", "track it")
    assert loaded.warnings == ("skipped 3 empty rows (no text): rows 3, 4, 5",)


def test_duplicate_rows_are_reported_with_row_numbers_and_kept_once(tmp_path: Path) -> None:
    """A row repeated verbatim is kept once and reported with both row numbers."""
    path = _csv(tmp_path, "text,intent\nhi,greet\nbye,leave\nhi,greet\n")
    loaded = read_catalog(path)
    assert loaded.catalog.intent("greet").exemplars == ("hi",)
    assert any("row 4 repeats row 2" in w for w in loaded.warnings)


@pytest.mark.parametrize("label", ["off-topic", "Off_Topic", "offtopic", "off topic", "OOS"])
def test_off_topic_lookalikes_are_errors_with_a_did_you_mean(tmp_path: Path, label: str) -> None:
    """A misspelt off-topic marker is an error suggesting 'off_topic', not a new intent."""
    path = _csv(tmp_path, f"text,intent\nwhere is my order,orders\ntell me a joke,{label}\n")
    message = _problems(path)
    assert f"row 3: intent {label!r} looks like the off-topic marker" in message
    assert "did you mean 'off_topic'?" in message


def test_off_topic_lookalike_in_yaml_is_an_error() -> None:
    """In YAML too, an intent named 'Off-Topic' is refused with a did-you-mean."""
    with pytest.raises(CatalogError, match="did you mean 'off_topic'"):
        parse_catalog(
            {
                "intents": [
                    {"name": "orders", "exemplars": ["where is my order"]},
                    {"name": "Off-Topic", "exemplars": ["tell me a joke"]},
                ]
            }
        )


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Several problems in one CSV come back together, each naming its row or intent."""
    path = _csv(
        tmp_path,
        "text,intent,threshold\n"
        "where is my order,orders,\n"
        "a joke,off-topic,\n"
        "refund please,,\n"
        "money back,refunds,high\n"
        "where is my order,refunds,\n",
    )
    message = _problems(path)
    assert str(path) in message
    assert "row 3: intent 'off-topic' looks like the off-topic marker" in message
    assert "row 4: 'intent' is empty" in message
    assert "row 5: threshold 'high' of intent 'refunds' is not a number" in message
    assert "belongs to both 'orders' and 'refunds'" in message


def test_every_problem_of_a_yaml_catalog_is_reported_at_once() -> None:
    """An intent without exemplars, a duplicate and a reserved name are listed together."""
    with pytest.raises(CatalogError) as caught:
        parse_catalog(
            {
                "intents": [
                    {"name": "orders", "exemplars": []},
                    {"name": "refunds", "exemplars": ["refund please"]},
                    {"name": "refunds", "exemplars": ["money back"]},
                    {"name": "off_topic", "exemplars": ["a joke"]},
                ]
            },
            source="c.yaml",
        )
    message = str(caught.value)
    assert "intent 'orders' has no exemplars" in message
    assert "Tuple should have at least 1 item" not in message
    assert "intent 'refunds' is defined twice" in message
    assert "intent 'off_topic' is reserved" in message


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """A YAML syntax error names the catalog file and the line, not '<unicode string>'."""
    path = tmp_path / "c.yaml"
    path.write_text("intents:\n  - name: orders\n    exemplars: [unclosed\n", encoding="utf-8")
    message = _problems(path)
    assert message.startswith(f"catalog {path}, line ")
    assert "<unicode string>" not in message


def test_csv_replies_descriptions_and_thresholds(tmp_path: Path) -> None:
    """Optional reply/description/threshold columns set an intent's; off_topic's reply is the
    refusal, and a row with a reply but no text only sets the reply."""
    path = _csv(
        tmp_path,
        "text,intent,reply,description,threshold\n"
        "book a cleaning,Appointments,,Booking visits,0.4\n"
        "can I come on friday,Appointments,,,\n"
        "hello,greeting,Hello! This is Smile Dental.,,\n"
        "hi there,greeting,,,\n"
        ",off_topic,Sorry - we can only help with your dental care.,,\n",
    )
    catalog = load_catalog(path)
    appointments = catalog.intent("Appointments")
    assert (appointments.description, appointments.threshold) == ("Booking visits", 0.4)
    assert catalog.intent("greeting").reply == "Hello! This is Smile Dental."
    assert catalog.off_topic.reply == "Sorry - we can only help with your dental care."
    assert catalog.off_topic.exemplars == ()


def test_conflicting_replies_name_both_rows(tmp_path: Path) -> None:
    """Two different replies for one intent are an error naming both rows."""
    path = _csv(tmp_path, "text,intent,reply\nhi,greeting,Hello!\nhey,greeting,Hi!\n")
    assert "row 3: intent 'greeting' has reply 'Hi!' here but 'Hello!' on row 2" in _problems(path)


def test_a_value_under_a_misspelt_column_is_an_error_naming_its_rows(tmp_path: Path) -> None:
    """A reply under a misspelt 'replly' column beside an exemplar is an error naming the rows
    and the column it meant (it was a warning, and the intent went to the LLM uncanned)."""
    path = _csv(
        tmp_path, "text,intent,replly\nhi,greeting,Hello\nhello,greeting,\nhey,greeting,Hi\n"
    )
    assert _problems(path).endswith(
        "\n  rows 2, 4: a value under the unknown column 'replly' (did you mean 'reply'?), "
        "which would be ignored: rename it"
    )


def test_unknown_columns_are_a_warning_with_the_known_ones(tmp_path: Path) -> None:
    """A column like no known one (a note for the owner) is ignored with a warning."""
    loaded = read_catalog(
        _csv(tmp_path, "text,intent,notes\nhi,greeting,ask Sam\nhello,greeting,\n")
    )
    assert loaded.warnings == (
        "ignored unknown columns 'notes'; known: text, intent, reply, description, threshold",
    )


def test_jsonl_rows_take_the_same_columns(tmp_path: Path) -> None:
    """JSONL catalog rows carry reply and threshold like CSV columns."""
    rows = [
        {"text": "hello", "intent": "greeting", "reply": "Hi! Smile Dental here."},
        {"text": "book a visit", "intent": "appointments", "threshold": 0.3},
        {"text": "", "intent": "off_topic", "reply": "Dental questions only, sorry."},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    catalog = load_catalog(path)
    assert catalog.intent("greeting").reply == "Hi! Smile Dental here."
    assert catalog.intent("appointments").threshold == 0.3
    assert catalog.off_topic.reply == "Dental questions only, sorry."


def test_a_dentists_csv_gate_greets_and_refuses_in_its_own_words(tmp_path: Path) -> None:
    """A CSV catalog with replies answers 'hello' with its greeting and refuses with its own
    refusal, not the shop's."""
    path = _csv(
        tmp_path,
        "text,intent,reply\n"
        "book a cleaning appointment,appointments,\n"
        "can I book a checkup,appointments,\n"
        "hello,greeting,Hello! This is Smile Dental.\n"
        "hi there,greeting,\n"
        "tell me a joke,off_topic,Sorry - we can only help with your dental care.\n"
        "what is the weather today,off_topic,\n",
    )
    gate = make_gate(tmp_path / "data", catalog=load_catalog(path))
    greeting = gate.check("hello")
    assert (greeting.route.value, greeting.reply) == ("canned", "Hello! This is Smile Dental.")
    refused = gate.check("tell me a joke please")
    assert refused.route.value == "off_topic"
    assert refused.reply == "Sorry - we can only help with your dental care."


def test_yaml_catalog_keeps_working(tmp_path: Path) -> None:
    """A YAML catalog with a BOM (saved by Notepad) loads."""
    path = tmp_path / "c.yaml"
    data = {"intents": [{"name": "orders", "exemplars": ["where is my order"]}]}
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(data).encode())
    assert load_catalog(path).intent("orders").exemplars == ("where is my order",)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            b"text,intent\nhello,greeting\ncaf\xe9 order,orders\n",
            "line 3: not UTF-8 text (byte 0xe9)",
        ),
        ("text,intent\nhi,greeting\n".encode("utf-16"), "the file is UTF-16 text, not UTF-8"),
    ],
)
def test_a_file_saved_in_another_encoding_names_the_line_and_the_fix(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    """Excel's plain CSV (cp1252) or UTF-16: the error names the line (not a byte offset) and
    says to save as CSV UTF-8."""
    path = tmp_path / "c.csv"
    path.write_bytes(data)
    with pytest.raises(CatalogError, match=re.escape(problem)) as caught:
        load_catalog(path)
    assert "CSV UTF-8" in str(caught.value)


def test_an_unquoted_comma_in_a_csv_text_is_an_error_naming_the_row(tmp_path: Path) -> None:
    """A CSV row longer than the header, even by an empty cell, is an error saying to quote."""
    path = _csv(
        tmp_path,
        "text,intent,reply\nfine,orders,\nmy brakes squeak, can you look at them,repair_booking,\n",
    )
    problems = _problems(path)
    assert "row 3 has 4 cells but the header has 3" in problems
    assert "in double quotes" in problems
    path = _csv(tmp_path, 'text,intent,reply\n"my brakes squeak, can you look",repairs,\n')
    assert load_catalog(path).intent("repairs").exemplars == ("my brakes squeak, can you look",)


def test_every_overlong_row_is_in_one_error_with_the_other_row_problems(tmp_path: Path) -> None:
    """Two shifted rows and an empty intent elsewhere: one error names all three rows."""
    path = _csv(
        tmp_path,
        "text,intent\nhello, where is my order,orders\nfine,\nhi,there,greeting\nok,orders\n",
    )
    problems = _problems(path).splitlines()
    assert [p.split()[1].rstrip(":") for p in problems[1:]] == ["2", "4", "3"]
    assert sum("cells but the header has 2" in p for p in problems) == 2


def test_a_jsonl_key_typo_gets_a_did_you_mean_in_the_row_error(tmp_path: Path) -> None:
    """A JSONL row's 'intent is empty' error names its unknown key 'intnet' with a did-you-mean."""
    path = _csv(
        tmp_path,
        '{"text": "rent a bike", "intent": "rental"}\n'
        '{"text": "fix my bike", "intnet": "repair"}\n',
        name="c.jsonl",
    )
    assert (
        "row 2: 'intent' is empty; the row has the unknown key 'intnet' (did you mean 'intent'?)"
        in _problems(path)
    )


def test_a_row_with_a_value_only_in_an_unknown_column_is_an_error(tmp_path: Path) -> None:
    """A row whose only value is under a misspelt 'Repyl' column is an error naming the row and
    the column, with a did-you-mean (it was a warning, and the refusal fell back to the default)."""
    path = _csv(
        tmp_path,
        "Text,Intent,Repyl\n"
        "where is my order,orders,\n"
        "track my parcel,orders,\n"
        ',off_topic,"Sorry, only orders here."\n',
    )
    assert _problems(path).splitlines()[1:] == [
        "  row 4: no 'text', but a value under the unknown column 'repyl' (did you mean "
        "'reply'?): an exemplar's text goes under 'text'"
    ]


def _jsonl(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_a_jsonl_row_with_its_text_under_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    """A row whose exemplar is under 'utterance' (or 'Txt') is an error naming the row, the key
    and 'text', not a warning while the exemplar is lost; with a reply beside it as well."""
    rows: list[dict[str, object]] = [
        {"text": "where is my order", "intent": "orders"},
        {"utterance": "track my parcel", "intent": "orders"},
        {"Txt": "hello", "intent": "greeting", "reply": "Hi!"},
        {"utterance": "refund please", "label": "refunds"},
        {"text": "tell me a joke", "intent": "off_topic"},
    ]
    assert _problems(_jsonl(tmp_path, rows)).splitlines()[1:] == [
        "  row 2: no 'text', but a value under the unknown key 'utterance': an exemplar's text "
        "goes under 'text'",
        "  row 3: no 'text', but a value under the unknown key 'Txt' (did you mean 'text'?): an "
        "exemplar's text goes under 'text'",
        "  row 4: no 'text', but values under the unknown keys 'utterance', 'label': an "
        "exemplar's text goes under 'text' and its intent under 'intent'",
    ]


def test_rows_with_text_under_an_unknown_key_are_listed_up_to_ten(tmp_path: Path) -> None:
    """Twelve such rows: one error lists the first ten and counts the rest, as other errors."""
    rows: list[dict[str, object]] = [{"text": "where is my order", "intent": "orders"}]
    rows += [{"utterance": f"track parcel {n}", "intent": "orders"} for n in range(12)]
    problems = _problems(_jsonl(tmp_path, rows)).splitlines()
    assert [p.split(":")[0] for p in problems[1:11]] == [f"  row {n}" for n in range(2, 12)]
    assert problems[11:] == ["  ... and 2 more"]


def test_a_misspelt_text_column_is_named_in_the_header_error(tmp_path: Path) -> None:
    """A CSV header 'txt,intent' is an error saying to rename 'txt' to 'text'; a YAML intent
    with its exemplars under an unknown key is an error naming that key."""
    path = _csv(tmp_path, "txt,intent\nwhere is my order,orders\n")
    assert "missing ['text'] (rename the column 'txt' to 'text')" in _problems(path)
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("intents:\n  - name: orders\n    utterances: [where is my order]\n")
    assert "intent 'orders': unknown key 'utterances'" in _problems(yaml_path)


def test_a_huge_csv_cell_reads_as_the_same_jsonl_row_does(tmp_path: Path) -> None:
    """A CSV catalog cell over csv's 131,072-character limit loads as the same JSONL row does."""
    limit = csv.field_size_limit()
    big = "where is my order " * 10_000
    rows = [{"text": big.strip(), "intent": "order_status"}, {"text": "hi", "intent": "off_topic"}]
    as_csv = _csv(tmp_path, "text,intent\n" + "".join(f"{r['text']},{r['intent']}\n" for r in rows))
    as_jsonl = tmp_path / "c.jsonl"
    as_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    from_csv = read_catalog(as_csv).catalog
    assert from_csv.exemplars() == read_catalog(as_jsonl).catalog.exemplars()
    assert len(from_csv.intent("order_status").exemplars[0]) > 131_072
    assert csv.field_size_limit() == limit


def test_many_row_problems_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    """A catalog with hundreds of bad rows lists the first 10 problems, then "... and N more"."""
    rows = "".join(json.dumps({"text": f"message {i}", "label": i % 7}) + "\n" for i in range(300))
    problems = _problems(_csv(tmp_path, rows, name="c.jsonl"))
    assert len(problems.splitlines()) == 1 + 10 + 1
    assert problems.endswith("... and 291 more")  # 300 rows, and no intents at all


@pytest.mark.parametrize("key", ["label", "labels", "class", "category"])
def test_an_intent_under_a_benchmark_key_is_told_to_be_renamed(tmp_path: Path, key: str) -> None:
    """A row whose intent is under 'label' (or labels/class/category) is told to rename it to
    'intent'; a class id is told to be mapped to an intent name."""
    path = _csv(tmp_path, json.dumps({"text": "where is my card", key: 9}) + "\n", name="c.jsonl")
    problems = _problems(path)
    assert "rename it to 'intent'" in problems
    assert "map the benchmark's ids to intent names" in problems
    named = _csv(tmp_path, json.dumps({"text": "hi", key: "card"}) + "\n", name="n.jsonl")
    assert "rename it to 'intent'" in (text := _problems(named)) and "class id" not in text


def test_a_csv_header_with_label_for_intent_is_told_to_rename_it(tmp_path: Path) -> None:
    """A CSV catalog headed text,label is told to rename the column 'label' to 'intent'."""
    problems = _problems(_csv(tmp_path, "text,label\nwhere is my card,card_arrival\n"))
    assert "rename the column 'label' to 'intent'" in problems


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_decimal_comma_threshold_in_a_semicolon_csv_is_read(
    tmp_path: Path, separator: str
) -> None:
    """Excel in Spain or Germany saves '0,85' in a ';' (or tab) separated CSV: that is 0.85."""
    lines = ["text;intent;threshold", "¿dónde está mi pedido?;Lieferstatus;0,85", "hola;saludo;"]
    path = _csv(tmp_path, "\n".join(lines).replace(";", separator) + "\n", bom=True)
    assert load_catalog(path).intent("Lieferstatus").threshold == 0.85


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("c.csv", 'text,intent,threshold\nwhere is it,orders,"0,85"\n'),
        ("c.jsonl", '{"text": "where is it", "intent": "orders", "threshold": "0,85"}\n'),
        ("c.yaml", "intents:\n  - name: orders\n    exemplars: [where is it]\n    threshold: 0,85"),
        ("d.csv", "text;intent;threshold\nwhere is it;orders;0,8,5\n"),
    ],
)
def test_a_decimal_comma_elsewhere_is_told_to_use_a_dot(
    tmp_path: Path, name: str, content: str
) -> None:
    """Where a decimal comma is not the file's own convention (a comma-separated CSV, JSONL,
    YAML), '0,85' is refused with "use a dot: 0.85"; '0,8,5' is no number anywhere."""
    problems = _problems(_csv(tmp_path, content, name=name))
    if name == "d.csv":
        assert "threshold '0,8,5' of intent 'orders' is not a number" in problems
        assert "use a dot" not in problems
    else:
        assert "(use a dot: 0.85)" in problems


@pytest.mark.parametrize(
    ("header", "rename"),
    [
        ("text;intnet;reply", "(rename the column 'intnet' to 'intent')"),
        ("Texto;Intnet", "(rename the column 'texto' to 'text' and 'intnet' to 'intent')"),
    ],
)
def test_a_misspelt_intent_column_gets_a_did_you_mean(
    tmp_path: Path, header: str, rename: str
) -> None:
    """A CSV catalog headed 'intnet' is told to rename it to 'intent', as 'Texto' is to 'text'."""
    problems = _problems(_csv(tmp_path, f"{header}\n¿dónde está mi pedido?;Lieferstatus\n"))
    assert rename in problems
