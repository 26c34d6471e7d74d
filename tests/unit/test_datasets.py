"""Labelled datasets: JSONL and CSV, single messages and conversations, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gatekeeper.errors import DatasetError
from gatekeeper.eval.datasets import load_dataset, load_datasets, write_jsonl

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _jsonl(tmp_path: Path, *rows: object, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_single_and_multi_turn() -> None:
    """The fixture loads with labels, intents, sources and line numbers."""
    data = load_dataset(FIXTURES / "tiny_eval.jsonl")
    assert len(data) == 18
    first, last = data.examples[0], data.examples[-1]
    assert (first.text, first.label, first.intent, first.line) == (
        "where is my order now",
        "in_domain",
        "order_status",
        1,
    )
    assert not first.multi_turn and last.multi_turn
    assert last.text == "tell me a joke instead" and last.label == "off_topic"
    assert isinstance(last.as_input(), list)
    assert sum(e.unsupported for e in data.examples) == 2


def test_csv_with_text_and_messages(tmp_path: Path) -> None:
    """CSV rows carry text, or a conversation as a JSON string in 'messages'."""
    chat = json.dumps(
        [{"role": "user", "content": "where is it"}, {"role": "user", "content": "ok"}]
    )
    path = tmp_path / "data.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "messages", "label", "intent"])
        writer.writerow(["track my order", "", "in_domain", "order_status"])
        writer.writerow(["", chat, "in_domain", "order_status"])
        writer.writerow(["tell me a joke", "", "off_topic", ""])
    data = load_dataset(path)
    assert [e.text for e in data.examples] == ["track my order", "ok", "tell me a joke"]
    assert data.examples[1].multi_turn and data.examples[2].intent is None
    assert [e.line for e in data.examples] == [2, 3, 4]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"text": "hi", "label": "maybe"}, "'label' must be 'in_domain' or 'off_topic'"),
        (
            {"text": "hi", "messages": [{"role": "user", "content": "x"}], "label": "in_domain"},
            "either 'text' or 'messages'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "x"}], "label": "in_domain"},
            "no user message to judge",
        ),
        (
            {"messages": "not json", "label": "in_domain"},
            "'messages' must be a list of chat messages",
        ),
        ({"messages": [], "label": "in_domain"}, "non-empty list"),
        ({"text": "hi", "label": "in_domain", "intent": 3}, "'intent' must be a string"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, row: object, problem: str) -> None:
    """A bad row is a DatasetError naming the file, the line and the problem."""
    path = _jsonl(tmp_path, {"text": "fine", "label": "in_domain"}, row)
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert f"{path}, line 2" in str(caught.value) and problem in str(caught.value)


def test_invalid_json_line(tmp_path: Path) -> None:
    """A line that is not JSON is reported with its number."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "in_domain"}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 3: not valid JSON"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.jsonl", None, "does not exist"),
        ("data.txt", "x", "unknown format"),
        ("empty.jsonl", "\n", "has no rows"),
        ("data.csv", "question,label\nhi,in_domain\n", "needs 'label' and 'text'"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, content: str | None, problem: str) -> None:
    """Missing files, unknown formats, empty files and bad CSV headers are clear errors."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=problem):
        load_dataset(path)


def test_several_files_and_write_round_trip(tmp_path: Path) -> None:
    """load_datasets concatenates files; write_jsonl writes rows that load back the same."""
    both = load_datasets([FIXTURES / "tiny_eval.jsonl", FIXTURES / "tiny_calibration.jsonl"])
    assert len(both) == 18 + 11 and len(both.sources) == 2
    out = tmp_path / "copy.jsonl"
    assert write_jsonl(both.examples, out) == len(both)
    again = load_dataset(out)
    assert [(e.message, e.label, e.intent) for e in again.examples] == [
        (e.message, e.label, e.intent) for e in both.examples
    ]


def test_skip_invalid_keeps_the_good_rows(tmp_path: Path) -> None:
    """With skip_invalid, malformed rows are left out and each one's problem is recorded."""
    path = _jsonl(
        tmp_path,
        {"text": "fine", "label": "in_domain"},
        {"text": "hi", "label": "maybe"},
        {"text": "also fine", "label": "off_topic"},
    )
    data = load_datasets([path], skip_invalid=True)
    assert [e.text for e in data.examples] == ["fine", "also fine"]
    assert len(data.skipped) == 1 and "line 2" in data.skipped[0]


def test_skip_invalid_also_skips_lines_that_are_not_json_objects(tmp_path: Path) -> None:
    """With skip_invalid, a JSONL line that is not JSON (or not an object) is skipped and
    recorded with its line number, like a malformed row."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"text": "fine", "label": "in_domain"}\n{"text": oops}\n[1, 2]\n'
        '{"text": "also fine", "label": "off_topic"}\n',
        encoding="utf-8",
    )
    data = load_dataset(path, skip_invalid=True)
    assert [e.text for e in data.examples] == ["fine", "also fine"]
    assert [s.split(": ", 1)[0] for s in data.skipped] == [
        f"dataset {path}, line 2",
        f"dataset {path}, line 3",
    ]
    assert "not valid JSON" in data.skipped[0] and "expected a JSON object" in data.skipped[1]


def test_a_row_longer_than_the_gate_accepts_is_malformed(tmp_path: Path) -> None:
    """With max_chars, a row whose message is longer is an error naming its line, or with
    skip_invalid is skipped and recorded (it stopped the whole run before)."""
    path = _jsonl(
        tmp_path,
        {"text": "fine", "label": "in_domain"},
        {"text": "x" * 41, "label": "off_topic"},
    )
    with pytest.raises(DatasetError, match=r"line 2: the message has 41 characters; .* 40"):
        load_dataset(path, max_chars=40)
    data = load_dataset(path, skip_invalid=True, max_chars=40)
    assert [e.text for e in data.examples] == ["fine"] and "line 2" in data.skipped[0]
    assert len(load_dataset(path)) == 2  # no limit given: the run's own check decides


def test_a_misspelt_key_is_a_warning_other_extra_keys_are_not(tmp_path: Path) -> None:
    """'intnet' beside a valid row is ignored with a did-you-mean warning (the row loses its
    intent otherwise silently); an 'id' or 'source' column is no warning."""
    path = _jsonl(
        tmp_path,
        {"text": "where is my order", "label": "in_domain", "intnet": "orders", "id": 1},
        {"text": "a joke", "label": "off_topic", "source": "logs"},
    )
    data = load_dataset(path)
    assert data.warnings == (f"dataset {path}: ignored key 'intnet' (did you mean 'intent'?)",)
    assert data.examples[0].intent is None


def test_a_csv_problem_names_the_spreadsheet_row(tmp_path: Path) -> None:
    """In a CSV dataset the number is the spreadsheet's row (a quoted cell may span lines), and
    the error says 'row', not 'line'."""
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",in_domain\nhi,maybe\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"d\.csv, row 3: 'label' must be"):
        load_dataset(path)


def test_a_csv_row_longer_than_the_header_is_a_malformed_row(tmp_path: Path) -> None:
    """A dataset CSV row longer than the header is a malformed row, listed and skippable."""
    path = tmp_path / "d.csv"
    path.write_text(
        "text,label,intent\n"
        "my brakes squeak, can you look,in_domain,\n"
        "hi,maybe,\n"
        "fine,in_domain,\n",
        encoding="utf-8",
    )
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "2 malformed rows" in message
    assert "d.csv, row 2 has 4 cells but the header has 3" in message
    assert "double quotes" in message and "row 3: 'label'" in message
    data = load_dataset(path, skip_invalid=True)
    assert [e.text for e in data.examples] == ["fine"]
    assert len(data.skipped) == 2


def test_a_chat_with_labels_needs_no_label(tmp_path: Path) -> None:
    """A chat row with per-turn labels and no 'label' takes its last turn's (the README's
    shape); one example per customer turn."""
    chat = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Your name?"},
        {"role": "user", "content": "write my essay"},
    ]
    data = load_dataset(_jsonl(tmp_path, {"messages": chat, "labels": ["in_domain", "off_topic"]}))
    assert [(e.turn, e.label) for e in data.examples] == [(1, "in_domain"), (2, "off_topic")]


def test_empty_rows_are_skipped_and_counted_without_skip_invalid(tmp_path: Path) -> None:
    """Rows with no text (a benchmark's few empty ones) are skipped and counted, not fatal."""
    path = _jsonl(
        tmp_path,
        {"text": "fine", "label": "in_domain"},
        {"text": "", "label": "in_domain"},
        {"label": "off_topic"},
        {"text": "  ", "label": "off_topic", "intent": "x"},
        {"text": "also fine", "label": "off_topic"},
    )
    data = load_dataset(path)
    assert [e.text for e in data.examples] == ["fine", "also fine"]
    assert len(data.skipped) == 3 and "line 2: empty row" in data.skipped[0]


def test_dataset_csv_as_excel_saves_it(tmp_path: Path) -> None:
    """A labelled CSV with a BOM, 'Text;Label' header and an empty row loads."""
    path = tmp_path / "data.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + b"Text;Label;Intent\r\nwhere is my order;in_domain;orders\r\n;;\r\n"
        b"tell me a joke;off_topic;\r\n"
    )
    data = load_dataset(path)
    assert [(e.text, e.label, e.intent) for e in data.examples] == [
        ("where is my order", "in_domain", "orders"),
        ("tell me a joke", "off_topic", None),
    ]
    assert len(data.skipped) == 1


def test_every_malformed_row_is_reported_at_once(tmp_path: Path) -> None:
    """Without --skip-invalid, one error lists every malformed row (a line that is not JSON
    included), so a file is fixed in one pass; beyond ten rows the rest are counted."""
    good = json.dumps({"text": "where is my order", "label": "in_domain"})
    lines = [
        good,
        "{not json",
        json.dumps({"text": "hi", "label": "maybe"}),
        good,
        json.dumps({"text": "", "messages": "x", "label": "in_domain"}),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "3 malformed rows" in message and "--skip-invalid" in message
    assert all(f"line {n}" in message for n in (2, 3, 5))
    path.write_text("\n".join([good] + ["{bad"] * 12) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"12 malformed rows[\s\S]*\.\.\. and 2 more$"):
        load_dataset(path)


def _csv(tmp_path: Path, header: list[str], *rows: list[str]) -> Path:
    path = tmp_path / "data.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_csv_row_gives_per_turn_labels_as_json_text(tmp_path: Path) -> None:
    """A CSV 'labels' cell is JSON list text, as a 'messages' cell is; an empty cell gives none."""
    chat = json.dumps(
        [{"role": "user", "content": "where is my order"}, {"role": "user", "content": "a poem"}]
    )
    path = _csv(
        tmp_path,
        ["text", "messages", "label", "labels"],
        ["", chat, "off_topic", '["in_domain","off_topic"]'],
        ["", chat, "", '["in_domain","in_domain"]'],
        ["track my order", "", "in_domain", ""],
    )
    data = load_dataset(path)
    assert [(e.line, e.turn, e.label) for e in data.examples] == [
        (2, 1, "in_domain"),
        (2, 2, "off_topic"),
        (3, 1, "in_domain"),
        (3, 2, "in_domain"),
        (4, None, "in_domain"),
    ]


@pytest.mark.parametrize("cell", ["in_domain,off_topic", '{"turn": "in_domain"}'])
def test_a_csv_labels_cell_that_is_not_a_json_list_names_its_row(tmp_path: Path, cell: str) -> None:
    """A 'labels' cell that is not a JSON list is an error naming the row, skippable."""
    chat = json.dumps([{"role": "user", "content": "hi"}, {"role": "user", "content": "a poem"}])
    path = _csv(
        tmp_path,
        ["messages", "label", "labels"],
        [chat, "off_topic", '["in_domain","off_topic"]'],
        [chat, "off_topic", cell],
    )
    with pytest.raises(DatasetError, match=r"data\.csv, row 3: 'labels' must be a list"):
        load_dataset(path)
    assert len(load_dataset(path, skip_invalid=True)) == 2


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (["off_topic"], "disagrees with its 'label'"),
        (["in_domain", "in_domain"], "one customer turn"),
        ([], "one customer turn"),
    ],
)
def test_labels_on_a_text_row_must_agree_with_its_label(
    tmp_path: Path, labels: list[str], problem: str
) -> None:
    """A text row is one customer turn: its 'labels', if any, is its 'label' alone."""
    agreeing = {"text": "track my order", "label": "in_domain", "labels": ["in_domain"]}
    path = _jsonl(tmp_path, agreeing, {"text": "hi", "label": "in_domain", "labels": labels})
    with pytest.raises(DatasetError, match=rf"data\.jsonl, line 2: .*{problem}"):
        load_dataset(path)
    assert [e.text for e in load_dataset(path, skip_invalid=True).examples] == ["track my order"]


def test_a_huge_csv_cell_is_its_rows_error_as_in_jsonl(tmp_path: Path) -> None:
    """A CSV cell over csv's 131,072-character limit is its row's skippable error, as in JSONL."""
    limit = csv.field_size_limit()
    rows = [
        ["where is my order", "in_domain"],
        ["x" * 200_000, "off_topic"],
        ["a poem", "off_topic"],
    ]
    path = _csv(tmp_path, ["text", "label"], *rows)
    with pytest.raises(DatasetError, match=r"data\.csv, row 3: the message has 200000 characters"):
        load_dataset(path, max_chars=4000)
    data = load_dataset(path, max_chars=4000, skip_invalid=True)
    assert [e.text for e in data.examples] == ["where is my order", "a poem"]
    assert "row 3" in data.skipped[0] and csv.field_size_limit() == limit


def test_a_text_under_an_unknown_key_is_a_malformed_row_not_an_empty_one(tmp_path: Path) -> None:
    """A row whose only values are under unknown keys (the text as 'utterance') is an error
    naming the line and the key, not an empty row skipped."""
    path = _jsonl(
        tmp_path,
        {"text": "where is my order", "label": "in_domain"},
        {"utterance": "tell me a joke", "label": "off_topic"},
    )
    with pytest.raises(DatasetError, match=r"line 2: no 'text'.*unknown key 'utterance'"):
        load_dataset(path)


def test_with_skip_invalid_a_text_under_an_unknown_key_is_skipped_with_that_reason(
    tmp_path: Path,
) -> None:
    """With skip_invalid, a row with its text under an unknown key is skipped and recorded as
    such, not as an empty row."""
    path = _jsonl(
        tmp_path,
        {"text": "where is my order", "label": "in_domain"},
        {"utterance": "tell me a joke", "label": "off_topic"},
    )
    data = load_dataset(path, skip_invalid=True)
    assert len(data) == 1 and len(data.skipped) == 1
    assert "unknown key 'utterance'" in data.skipped[0] and "empty" not in data.skipped[0]


def test_a_blank_text_is_still_an_empty_row_skipped_without_skip_invalid(tmp_path: Path) -> None:
    """A row whose 'text' is present but blank is an empty row: skipped and counted, extra keys
    (an id) or not."""
    path = _jsonl(
        tmp_path,
        {"text": "where is my order", "label": "in_domain"},
        {"text": "  ", "label": "off_topic", "id": 7},
    )
    data = load_dataset(path)
    assert len(data) == 1 and data.skipped == (
        f"dataset {path}, line 2: empty row (no text), skipped",
    )


def test_keys_spelt_another_way_keep_their_did_you_mean_when_every_row_has_them(
    tmp_path: Path,
) -> None:
    """Every row under 'Text'/'Label': the error names the keys with "did you mean", with or
    without skip_invalid (no bare "has no rows left")."""
    path = _jsonl(tmp_path, {"Text": "where is my order", "Label": "in_domain"})
    for skip in (False, True):
        with pytest.raises(DatasetError, match=r"'Text' \(did you mean 'text'\?\)"):
            load_dataset(path, skip_invalid=skip)


def test_malformed_rows_are_listed_in_file_order(tmp_path: Path) -> None:
    """A line that is not JSON is listed among the malformed rows at its place in the file."""
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a", "label": "maybe"}\nnot json\n{"text": "b", "label": "in_domain"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert message.index("line 1:") < message.index("line 2:")


def test_a_row_without_a_label_says_the_label_is_missing(tmp_path: Path) -> None:
    """A row with no 'label' key says "missing 'label'", not "... not None"."""
    path = _jsonl(tmp_path, {"text": "where is my order", "intent": "order_status"})
    with pytest.raises(DatasetError, match="line 1: missing 'label'") as caught:
        load_dataset(path)
    assert "None" not in str(caught.value)


def test_a_tab_separated_csv_file_is_read_with_a_warning(tmp_path: Path) -> None:
    """A .csv file whose header has tabs is read as tab-separated, and a warning says so."""
    path = tmp_path / "data.csv"
    path.write_text("text\tlabel\nwhere is my order\tin_domain\n", encoding="utf-8")
    data = load_dataset(path)
    assert [e.text for e in data.examples] == ["where is my order"]
    assert any("read as tab-separated" in w for w in data.warnings)


@pytest.mark.parametrize(
    ("header", "rename"),
    [
        ("text,lable", "(rename the column 'lable' to 'label')"),
        ("Txt,Label", "(rename the column 'txt' to 'text')"),
        ("mesages,lable", "(rename the column 'mesages' to 'messages' and 'lable' to 'label')"),
    ],
)
def test_a_misspelt_csv_header_column_gets_a_did_you_mean(
    tmp_path: Path, header: str, rename: str
) -> None:
    """A dataset CSV headed 'lable' (or 'txt') is told which column to rename."""
    path = tmp_path / "d.csv"
    path.write_text(f"{header}\nfalta una pieza,in_domain\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="the CSV header needs 'label'") as caught:
        load_dataset(path)
    assert rename in str(caught.value)


def test_labels_ignore_case_and_surrounding_spaces_as_headers_do(tmp_path: Path) -> None:
    """'Off_Topic', 'in_domain ' and ' IN_DOMAIN' (also in per-turn 'labels') are the labels."""
    chat = [{"role": "user", "content": "hola"}, {"role": "user", "content": "un chiste"}]
    path = _jsonl(
        tmp_path,
        {"text": "¿dónde está mi pedido?", "label": "in_domain "},
        {"text": "cuéntame un chiste", "label": "Off_Topic"},
        {"text": "Wo ist mein Paket?", "label": " IN_DOMAIN", "labels": ["in_domain"]},
        {"messages": chat, "labels": ["In_Domain", "OFF_TOPIC "]},
    )
    data = load_dataset(path)
    assert [e.label for e in data.examples] == [
        "in_domain",
        "off_topic",
        "in_domain",
        "in_domain",
        "off_topic",
    ]


@pytest.mark.parametrize("label", ["in-domain", "OOS", "offtopic"])
def test_other_label_spellings_stay_errors_with_a_did_you_mean(tmp_path: Path, label: str) -> None:
    """'in-domain' (a hyphen), 'OOS' or 'offtopic' is still refused, as written, with a hint."""
    with pytest.raises(DatasetError, match=f"not '{label}' \\(did you mean"):
        load_dataset(_jsonl(tmp_path, {"text": "hi", "label": label}))
