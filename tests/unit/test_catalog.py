"""Catalog loading and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.catalog import load_catalog, parse_catalog
from gatekeeper.errors import CatalogError
from tests.conftest import SHOP_CATALOG, SHOP_ZH_CATALOG


def _write_yaml(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _base() -> dict[str, Any]:
    return {
        "domain": "test",
        "intents": [
            {"name": "order_status", "exemplars": ["where is my order"]},
            {"name": "refund", "exemplars": ["refund please"]},
        ],
        "off_topic": {"exemplars": ["tell me a joke"], "reply": "no"},
    }


@pytest.mark.parametrize("path", [SHOP_CATALOG, SHOP_ZH_CATALOG])
def test_default_catalogs_meet_the_brief(path: Path) -> None:
    """The shop catalogs have >=15 intents of >=20 exemplars, canned intents, >=200 off-topic."""
    catalog = load_catalog(path)
    served = [i for i in catalog.intents if not i.canned]
    assert len(served) >= 15
    assert all(len(i.exemplars) >= 20 for i in served)
    assert {i.name for i in catalog.intents if i.canned} >= {"greeting", "thanks", "goodbye"}
    assert len(catalog.off_topic.exemplars) >= 200
    assert catalog.off_topic.reply


def test_exemplar_ids_are_content_hashes() -> None:
    """Ids depend on content only: same text and intent, same id; any change, new id."""
    a = parse_catalog(_base()).exemplars()
    b = parse_catalog(_base()).exemplars()
    assert [e.id for e in a] == [e.id for e in b]
    changed = _base()
    changed["intents"][0]["exemplars"] = ["where is my parcel"]
    assert parse_catalog(changed).exemplars()[0].id != a[0].id
    assert len({e.id for e in a}) == len(a)


def test_duplicate_intent(tmp_path: Path) -> None:
    """An intent defined twice is an error naming it and the file."""
    data = _base()
    data["intents"].append({"name": "refund", "exemplars": ["money back"]})
    path = _write_yaml(tmp_path, data)
    with pytest.raises(CatalogError, match=r"'refund' is defined twice") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_empty_exemplars_names_the_intent(tmp_path: Path) -> None:
    """An intent with no exemplars is an error naming the intent."""
    data = _base()
    data["intents"][1]["exemplars"] = []
    with pytest.raises(CatalogError, match=r"intent 'refund' has no exemplars"):
        load_catalog(_write_yaml(tmp_path, data))


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A typo'd key is refused with a suggestion."""
    data = _base()
    data["intents"][0]["exemplar"] = data["intents"][0].pop("exemplars")
    with pytest.raises(
        CatalogError, match=r"unknown key 'exemplar' \(did you mean 'exemplars'\?\)"
    ):
        load_catalog(_write_yaml(tmp_path, data))


def test_bad_type(tmp_path: Path) -> None:
    """A threshold that is not a number is refused, naming intent and field."""
    data = _base()
    data["intents"][0]["threshold"] = "high"
    with pytest.raises(CatalogError, match=r"intent 'order_status': threshold"):
        load_catalog(_write_yaml(tmp_path, data))


def test_blank_exemplar(tmp_path: Path) -> None:
    """A blank exemplar is refused."""
    data = _base()
    data["intents"][0]["exemplars"] = ["ok", "   "]
    with pytest.raises(CatalogError, match="empty"):
        load_catalog(_write_yaml(tmp_path, data))


def test_same_exemplar_in_two_intents(tmp_path: Path) -> None:
    """One exemplar in two intents is a contradiction and refused."""
    data = _base()
    data["intents"][1]["exemplars"].append("Where is my order")
    with pytest.raises(CatalogError, match="belongs to both"):
        load_catalog(_write_yaml(tmp_path, data))


def test_reserved_intent_name(tmp_path: Path) -> None:
    """'off_topic' cannot be an intent name."""
    data = _base()
    data["intents"][0]["name"] = "off_topic"
    with pytest.raises(CatalogError, match="reserved"):
        load_catalog(_write_yaml(tmp_path, data))


def test_not_yaml(tmp_path: Path) -> None:
    """A file that is not YAML says so."""
    path = tmp_path / "c.yaml"
    path.write_text("intents: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(path)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    """A missing file or an unknown extension is a clear error."""
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")
    other = tmp_path / "c.txt"
    other.write_text("x")
    with pytest.raises(CatalogError, match="unknown format"):
        load_catalog(other)


def test_csv_rows(tmp_path: Path) -> None:
    """CSV text,intent rows load; intent off_topic marks off-topic exemplars."""
    path = tmp_path / "c.csv"
    path.write_text(
        'text,intent\nwhere is my order,order_status\n"refund, please",refund\n'
        "tell me a joke,off_topic\n"
    )
    catalog = load_catalog(path)
    assert [i.name for i in catalog.intents] == ["order_status", "refund"]
    assert catalog.intent("refund").exemplars == ("refund, please",)
    assert catalog.off_topic.exemplars == ("tell me a joke",)


def test_csv_missing_column(tmp_path: Path) -> None:
    """A CSV without an intent column is refused with the header shown."""
    path = tmp_path / "c.csv"
    path.write_text("text,label\nhi,x\n")
    with pytest.raises(CatalogError, match="missing \\['intent'\\]"):
        load_catalog(path)


def test_jsonl_rows_and_bad_line(tmp_path: Path) -> None:
    """JSONL rows load; a malformed line is reported with its number."""
    path = tmp_path / "c.jsonl"
    rows = [
        {"text": "where is my order", "intent": "order_status"},
        {"text": "weather?", "intent": "off_topic"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_catalog(path).off_topic.exemplars == ("weather?",)
    path.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(CatalogError, match="line 2"):
        load_catalog(path)


def test_content_hash_tracks_changes() -> None:
    """The catalog hash changes with a reply or threshold, not with nothing."""
    base = parse_catalog(_base())
    assert base.content_hash() == parse_catalog(_base()).content_hash()
    changed = _base()
    changed["intents"][0]["threshold"] = 0.7
    assert parse_catalog(changed).content_hash() != base.content_hash()
