"""A key given twice in a catalog, settings file or dataset is an error naming it, never
"the last one wins"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper._rows import load_yaml
from gatekeeper.catalog import load_catalog
from gatekeeper.errors import CatalogError, ConfigError, DatasetError
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.settings import load_settings


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_second_exemplars_block_in_a_yaml_intent_is_refused(tmp_path: Path) -> None:
    """Two `exemplars:` keys in one intent: an error at the second one's line (it used to drop
    the first block's exemplars silently)."""
    catalog = _write(
        tmp_path / "c.yaml",
        "intents:\n  - name: billing\n    exemplars: [pay my bill, refund]\n"
        "    description: money\n    exemplars: [refund please]\n",
    )
    with pytest.raises(CatalogError, match=r"line 5, column 5: .*'exemplars' is given twice"):
        load_catalog(catalog)


def test_a_yaml_merge_may_still_override() -> None:
    """Keys brought in by a merge (`<<: *base`) may be overridden: that is no duplicate."""
    data = load_yaml("base: &b {reply: hi, threshold: 0.3}\nintent:\n  <<: *b\n  reply: hello\n")
    assert data["intent"] == {"reply": "hello", "threshold": 0.3}


def test_a_settings_key_given_twice_is_refused(tmp_path: Path) -> None:
    """`catalog:` twice in a settings file is a ConfigError naming the key and line."""
    config = _write(
        tmp_path / "s.yaml", "catalog: a.yaml\ngate:\n  threshold: 0.3\ncatalog: b.yaml\n"
    )
    with pytest.raises(ConfigError, match=r"line 4, column 1: .*'catalog' is given twice"):
        load_settings(config)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "d.jsonl",
            '{"text": "hi", "label": "in_domain", "label": "off_topic"}\n',
            "line 1: the key 'label' is given twice",
        ),
        ("d.csv", "text,label,Label\nhi,in_domain,off_topic\n", "names the column 'label' twice"),
        (
            "c.jsonl",
            '{"messages": [{"role": "user", "content": "a", "content": "b"}], '
            '"label": "in_domain"}\n',
            "the key 'content' is given twice",
        ),
    ],
)
def test_a_dataset_key_given_twice_is_refused(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    """A JSONL row (at any depth) or a CSV header naming a key twice is a DatasetError."""
    with pytest.raises(DatasetError, match=problem):
        load_dataset(_write(tmp_path / name, text))
