"""Files the CLI reads and writes on a user's say-so: devices and FIFOs are no files, reads of
a conversation are capped, quoted content is cut short, links to nothing are not written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatekeeper.catalog import read_catalog
from gatekeeper.errors import CatalogError, DatasetError
from gatekeeper.eval.datasets import load_dataset

#: Long enough that quoting it whole would be plain (the reviewer's header was 300 MB).
LONG = 100_000


def test_a_long_csv_header_is_quoted_cut_short(tmp_path: Path) -> None:
    """A CSV header that fails the check, or names unknown columns, is quoted in at most about
    200 characters ending in "…" (a 300 MB header was quoted whole)."""
    catalog = tmp_path / "c.csv"
    catalog.write_text("a" * LONG + "\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        read_catalog(catalog)
    assert len(str(caught.value)) < 500 and "…" in str(caught.value)
    dataset = tmp_path / "d.csv"
    dataset.write_text("text," + "b" * LONG + "\nhi,x\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught_d:
        load_dataset(dataset)
    assert len(str(caught_d.value)) < 500 and "…" in str(caught_d.value)
    catalog.write_text(
        f"text,intent,{'c' * LONG}\nhi,greeting,x\nhello,greeting,x\njoke,off_topic,x\n",
        encoding="utf-8",
    )
    warnings = read_catalog(catalog).warnings
    assert warnings and all(len(w) < 500 for w in warnings)
    assert any("…" in w for w in warnings)


def test_a_long_intent_name_is_quoted_cut_short(tmp_path: Path) -> None:
    """An intent or label from a row is quoted in an error in at most about 200 characters."""
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"text": "hi", "label": "x" * LONG}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_dataset(dataset)
    assert len(str(caught.value)) < 500 and "…" in str(caught.value)
