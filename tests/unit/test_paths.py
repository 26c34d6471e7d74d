"""Paths a user names: a directory where a file should be is called one, not "missing"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.catalog import read_catalog
from gatekeeper.errors import CatalogError, ConfigError, DatasetError
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.paths import why_not_a_file, why_unwritable
from gatekeeper.settings import load_settings


def test_a_directory_given_as_a_file_is_called_a_directory(tmp_path: Path) -> None:
    """A catalog, dataset or settings path that is a directory says so (each said "does not
    exist", which sent users looking for a typo)."""
    folder = tmp_path / "adir.yaml"
    folder.mkdir()
    for load, error in ((read_catalog, CatalogError), (load_dataset, DatasetError)):
        with pytest.raises(error, match="is a directory, not a file"):
            load(folder)
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        load_settings(folder)
    assert why_not_a_file(tmp_path / "missing.csv") == "does not exist"


def test_why_unwritable_names_a_file_in_the_way(tmp_path: Path) -> None:
    """A path under a regular file cannot be written, and the reason names that file."""
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    assert why_unwritable(blocker / "out", want_dir=True) == f"{blocker} is not a directory"
    assert why_unwritable(tmp_path / "new" / "out", want_dir=True) is None


def test_nan_in_a_catalog_or_the_settings_is_no_number(tmp_path: Path) -> None:
    """A threshold of .nan says it is not a finite number (it said "less than or equal to 1")."""
    catalog = tmp_path / "c.yaml"
    catalog.write_text(
        "intents:\n  - name: a\n    threshold: .nan\n    exemplars: [where is my order]\n"
        "off_topic:\n  reply: Sorry.\n  exemplars: [tell me a joke]\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="threshold: Input should be a finite number"):
        read_catalog(catalog)
    settings = tmp_path / "g.yaml"
    settings.write_text("gate:\n  threshold: .inf\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"gate\.threshold .*finite number"):
        load_settings(settings)
