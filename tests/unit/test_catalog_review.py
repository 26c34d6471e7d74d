"""A typo'd catalog key is reported once, without the errors it merely causes."""

from __future__ import annotations

import pytest

from gatekeeper.catalog import parse_catalog
from gatekeeper.errors import CatalogError


def _problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(raw, source="c.yaml")
    header, *lines = str(caught.value).splitlines()
    assert header == "catalog c.yaml:"
    return [line.strip() for line in lines]


def test_a_typo_in_the_only_intent_is_one_line() -> None:
    """'exemplrs' gives just the did-you-mean line: no 'Field required', no empty 'intents'."""
    problems = _problems({"intents": [{"name": "orders", "exemplrs": ["where is my order"]}]})
    assert len(problems) == 1
    assert problems[0].startswith(
        "intent 'orders': unknown key 'exemplrs' (did you mean 'exemplars'?)"
    )


def test_a_typo_beside_valid_intents_is_one_line() -> None:
    """With other intents valid, the typo'd intent still gets exactly one line."""
    problems = _problems(
        {
            "intents": [
                {"name": "orders", "exemplrs": ["where is my order"]},
                {"name": "refunds", "exemplars": ["refund please"]},
            ]
        }
    )
    assert problems == [
        "intent 'orders': unknown key 'exemplrs' (did you mean 'exemplars'?); "
        "allowed: description, exemplars, name, reply, threshold"
    ]


def test_an_unrelated_missing_field_is_still_reported() -> None:
    """A typo only hides the field it was meant to be; another missing field stays listed."""
    problems = _problems({"intents": [{"nme": "orders"}]})
    assert any("unknown key 'nme' (did you mean 'name'?)" in p for p in problems)
    assert any("has no exemplars" in p for p in problems)
    assert not any("name: Field required" in p for p in problems)


def test_an_empty_intents_list_is_still_reported() -> None:
    """'intents: []' keeps its too-short error: it is the real problem there."""
    problems = _problems({"intents": []})
    assert len(problems) == 1 and problems[0].startswith("intents:")


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            {"intents": [{"name": "a", "exemplars": "book a visit"}]},
            "intent 'a': exemplars: must be a list (one '- item' line each), got one text",
        ),
        ({"intents": [{"name": "a", "exemplars": None}]}, "intent 'a' has no exemplars"),
        (
            {"intents": [{"name": "a", "exemplars": ["ok", "\u200b"]}]},
            "intent 'a': exemplars: an exemplar is empty (or only invisible characters)",
        ),
        (
            {"intents": {"a": ["x"]}},
            "intents: must be a list (one '- item' line each), got dict",
        ),
        (
            {"intents": [{"name": "a", "exemplars": ["x"]}], "off_topic": ["y"]},
            "off_topic block: must be a mapping ('key: value' lines), got list",
        ),
    ],
)
def test_wrong_shapes_are_said_in_the_files_terms(raw: dict[str, object], line: str) -> None:
    """A string for a list, an empty key, a mapping for a list: said as the file's shapes, not
    pydantic's ("Input should be a valid tuple", "instance of OffTopic")."""
    problems = _problems(raw)
    assert line in problems
    assert not any("Input should" in p or "instance of" in p for p in problems)
