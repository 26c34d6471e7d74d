"""Likely typos in a catalog: intent names and exemplars that would otherwise split an intent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import parse_catalog, read_catalog
from gatekeeper.catalog_review import near_names
from gatekeeper.cli import app
from gatekeeper.errors import CatalogError
from gatekeeper.testing import HashingEmbedder


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _warnings(path: Path) -> str:
    return "\n".join(read_catalog(path).warnings)


def test_names_that_differ_only_in_case_or_underscores_are_an_error(tmp_path: Path) -> None:
    """Intent names differing only in case, spaces or underscores are an error naming both."""
    path = _file(
        tmp_path,
        "c.csv",
        "text,intent\n"
        "how much is a day rental,rental_prices \n"
        "weekly rate?,Rental_Prices\n"
        "price of an e-bike,rental prices\n"
        "is my bike ready,repair_status\n",
    )
    with pytest.raises(CatalogError) as caught:
        read_catalog(path)
    message = str(caught.value)
    assert "intents 'rental_prices' and 'Rental_Prices' differ only in case" in message
    assert "intents 'rental_prices' and 'rental prices' differ only in case" in message


def test_a_name_within_a_small_edit_distance_is_a_warning(tmp_path: Path) -> None:
    """'repiar_status' beside 'repair_status' is warned about, with counts and as single."""
    path = _file(
        tmp_path,
        "c.csv",
        "text,intent\n"
        "is my bike ready yet,repair_status\n"
        "any update on my repair,repair_status\n"
        "when can I pick up my bike,repiar_status\n",
    )
    warnings = _warnings(path)
    assert "'repair_status' (2 exemplars) ~ 'repiar_status' (1 exemplar)" in warnings
    assert "1 intent has a single exemplar ('repiar_status')" in warnings


def test_real_catalogs_close_names_are_not_typos() -> None:
    """Real catalogs' closest legitimate names are no typo; two swapped letters are."""
    names = [
        "change_order",
        "cancel_order",
        "pending_cash_withdrawal",
        "declined_cash_withdrawal",
        "card_payment_not_recognised",
        "direct_debit_payment_not_recognised",
    ]
    assert near_names(names) == []
    assert near_names(["refund", "refnud"]) == [("refund", "refnud")]


def test_an_exemplar_in_two_intents_but_for_case_and_punctuation_is_flagged(
    tmp_path: Path,
) -> None:
    """Two intents' exemplars equal but for case and punctuation warn; exact repeats stay errors."""
    path = _file(
        tmp_path,
        "c.csv",
        "text,intent\n"
        "how much is a day rental,rental_prices\n"
        "weekly rate,rental_prices\n"
        "How much is a DAY rental?,repair_prices\n"
        "full service price,repair_prices\n",
    )
    assert (
        "'How much is a DAY rental?' (repair_prices) ~ 'how much is a day rental' "
        "(rental_prices)" in _warnings(path)
    )
    path.write_text(
        path.read_text(encoding="utf-8").replace("DAY rental?", "DAY rental"), encoding="utf-8"
    )
    with pytest.raises(CatalogError, match="belongs to both 'rental_prices' and 'repair_prices'"):
        read_catalog(path)


def test_an_exemplar_listed_twice_in_one_yaml_intent_is_a_warning(tmp_path: Path) -> None:
    """A YAML intent listing an exemplar twice loads it once and warns."""
    path = _file(
        tmp_path,
        "c.yaml",
        "intents:\n"
        "  - name: orders\n"
        "    exemplars: ['where is my order', 'track my parcel', 'where is my order ']\n",
    )
    loaded = read_catalog(path)
    assert loaded.catalog.intent("orders").exemplars == ("where is my order", "track my parcel")
    assert loaded.warnings == (
        "1 exemplar is listed twice in one intent (kept once): 'where is my order' in 'orders'",
    )


def test_init_prints_the_typo_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gatekeeper init` prints the likely-typo warnings of the examples it reads."""
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)  # init may write the settings file its next commands name here
    examples = _file(
        tmp_path,
        "examples.csv",
        "text,intent\n"
        "is my bike ready yet,repair_status\n"
        "any update on my repair,repair_status\n"
        "when can I pick up my bike,repiar_status\n",
    )
    result = CliRunner().invoke(app, ["init", str(examples), "--out", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert "'repair_status' (2 exemplars) ~ 'repiar_status' (1 exemplar)" in result.output


def test_a_yaml_catalogs_errors_arrive_in_one_round(tmp_path: Path) -> None:
    """An empty exemplar, a misspelt key and an intent defined twice (one of its definitions
    among the broken intents) are all listed at once, not the duplicate only after a fix."""
    path = tmp_path / "hand.yaml"
    path.write_text(
        "intents:\n"
        "  - name: devoluciones\n"
        "    exemplars: ['quiero devolver un pedido', '', 'Rücksendung bitte',\n"
        "                'Wo ist mein Paket?']\n"
        "  - name: Lieferstatus\n"
        "    exemplars: ['¿dónde está mi pedido?', 'Wo ist mein Paket?']\n"
        "    treshold: 0.9\n"
        "  - name: devoluciones\n"
        "    exemplars: ['¿cómo devuelvo algo?']\n"
        "off_topic:\n"
        "  exemplars: ['cuéntame un chiste', '', 'Rücksendung bitte']\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as caught:
        read_catalog(path)
    problems = str(caught.value)
    assert "intent 'devoluciones': exemplars: an exemplar is empty" in problems
    assert "unknown key 'treshold' (did you mean 'threshold'?)" in problems
    assert "intent 'devoluciones' is defined twice" in problems
    assert "'Wo ist mein Paket?' belongs to both 'devoluciones' and 'Lieferstatus'" in problems
    assert "exemplar 'Rücksendung bitte' belongs to both 'devoluciones' and 'off_topic'" in problems


def test_a_broken_off_topic_block_does_not_hide_the_other_problems() -> None:
    """An off_topic block that is a list, not a mapping, is one problem among the others."""
    raw = {"intents": [{"name": "a", "exemplars": ["x"]}, {"name": "a", "exemplars": ["y"]}]}
    with pytest.raises(CatalogError) as caught:
        parse_catalog({**raw, "off_topic": ["tell me a joke"]})
    assert "off_topic block: must be a mapping" in str(caught.value)
    assert "intent 'a' is defined twice" in str(caught.value)
