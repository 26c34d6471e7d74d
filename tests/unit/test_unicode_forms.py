"""Text pasted from macOS or a web form is often decomposed (NFD: ``o`` + a combining accent):
catalogs and datasets take intent names (and catalog exemplars) in the composed form (NFC), so
a name typed on one machine and pasted from another is one name."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from gatekeeper.catalog import parse_catalog, read_catalog
from gatekeeper.errors import CatalogError
from gatekeeper.eval.checks import leakage_warnings, mark_unsupported
from gatekeeper.eval.datasets import load_dataset

COMPOSED = unicodedata.normalize("NFC", "cancelación")
DECOMPOSED = unicodedata.normalize("NFD", "cancelación")


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".csv":
        lines = ["text,intent"] + [f"{r['text']},{r['intent']}" for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_two_forms_differ_as_strings() -> None:
    """The premise: the two spellings look alike but are different strings."""
    assert COMPOSED != DECOMPOSED and len(DECOMPOSED) == len(COMPOSED) + 1


@pytest.mark.parametrize("name", ["c.csv", "c.jsonl"])
def test_rows_of_one_intent_in_both_forms_are_one_intent(tmp_path: Path, name: str) -> None:
    """A CSV or JSONL catalog with the intent composed on one row and decomposed on another has
    one intent (named in NFC) with both exemplars, and no near-name warning."""
    rows = [
        {"text": "quiero cancelar mi pedido", "intent": COMPOSED},
        {"text": "¿puedo anular la compra?", "intent": DECOMPOSED},
        {"text": "Wo ist mein Paket?", "intent": "Lieferstatus"},
        {"text": "Wann kommt meine Lieferung?", "intent": "Lieferstatus"},
    ]
    loaded = read_catalog(_write(tmp_path / name, rows))
    assert [i.name for i in loaded.catalog.intents] == [COMPOSED, "Lieferstatus"]
    assert len(loaded.catalog.intent(COMPOSED).exemplars) == 2
    assert not any("may be one intent" in w for w in loaded.warnings)


def test_a_yaml_intent_name_and_exemplars_are_taken_composed() -> None:
    """A YAML intent named (and exemplified) in NFD is held in NFC, so a decomposed repeat of
    an exemplar is kept once."""
    catalog = parse_catalog(
        {"intents": [{"name": DECOMPOSED, "exemplars": [f"{COMPOSED} ya", f"{DECOMPOSED} ya"]}]}
    )
    assert catalog.intents[0].name == COMPOSED
    assert catalog.intents[0].exemplars == (f"{COMPOSED} ya",)


def test_one_exemplar_in_two_intents_is_found_across_forms(tmp_path: Path) -> None:
    """The same exemplar, composed in one intent and decomposed in another, is the "belongs to
    both" error, as it is when typed the same way twice."""
    rows = [
        {"text": f"{COMPOSED} del pedido", "intent": "pedidos"},
        {"text": f"{DECOMPOSED} del pedido", "intent": "anular"},
    ]
    with pytest.raises(CatalogError, match="belongs to both 'pedidos' and 'anular'"):
        read_catalog(_write(tmp_path / "c.jsonl", rows))


def test_a_dataset_intent_in_nfd_names_the_catalogs_intent(tmp_path: Path) -> None:
    """A labelled row whose intent is decomposed matches the catalog's composed intent (so it is
    not counted as an unsupported question); its message is kept as written."""
    catalog = parse_catalog({"intents": [{"name": COMPOSED, "exemplars": ["anular mi pedido"]}]})
    row = {"text": f"{DECOMPOSED} por favor", "label": "in_domain", "intent": DECOMPOSED}
    data = load_dataset(_write(tmp_path / "d.jsonl", [row]))
    assert data.examples[0].intent == COMPOSED
    assert data.examples[0].text == f"{DECOMPOSED} por favor"
    assert not mark_unsupported(data, catalog).examples[0].unsupported


def test_a_row_repeated_in_the_other_form_is_a_repeat(tmp_path: Path) -> None:
    """A dataset row repeated in the other normal form is warned about as a repeat."""
    rows = [
        {"text": f"{COMPOSED} ya", "label": "in_domain"},
        {"text": f"{DECOMPOSED} ya", "label": "in_domain"},
    ]
    data = load_dataset(_write(tmp_path / "d.jsonl", rows))
    assert any("1 row repeats an earlier one" in w for w in data.warnings)


def test_a_decomposed_test_message_that_is_an_exemplar_is_leakage(tmp_path: Path) -> None:
    """A decomposed test message that is a (composed) catalog exemplar is leakage."""
    catalog = parse_catalog({"intents": [{"name": "anular", "exemplars": [f"{COMPOSED} ya"]}]})
    row = {"text": f"{DECOMPOSED} ya", "label": "in_domain"}
    data = load_dataset(_write(tmp_path / "d.jsonl", [row]))
    assert any("are exemplars of the catalog" in w for w in leakage_warnings(data, catalog))
