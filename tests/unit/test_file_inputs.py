"""Files the CLI reads and writes on a user's say-so: devices and FIFOs are no files, reads of
a conversation are capped, quoted content is cut short, links to nothing are not written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import read_catalog
from gatekeeper.cli import app
from gatekeeper.errors import CatalogError, ConfigError, DatasetError, InputError
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.settings_file import store_threshold
from gatekeeper.paths import why_not_a_file
from gatekeeper.scaffold import read_traffic

#: Long enough that quoting it whole would be plain (the reviewer's header was 300 MB).
LONG = 100_000


def _invoke(
    *args: str | Path, env: dict[str, str] | None = None, stdin: str = ""
) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, input=stdin)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_a_device_or_fifo_is_no_regular_file(tmp_path: Path) -> None:
    """A catalog or dataset that is a device or a FIFO is refused as "not a regular file" (it
    said "does not exist"), before any read that would block or never end."""
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    assert why_not_a_file(Path("/dev/zero")) == "is not a regular file (a device, FIFO or socket)"
    with pytest.raises(CatalogError, match="is not a regular file"):
        read_catalog(fifo)
    with pytest.raises(DatasetError, match="is not a regular file"):
        load_dataset(fifo)
    with pytest.raises(CatalogError, match="is not a regular file"):
        read_catalog("/dev/null")


def test_check_refuses_a_conversation_that_is_a_device(config: Path) -> None:
    """`check --conversation /dev/null` exits 2 calling it no regular file (a device such as
    /dev/zero was read without end, to a MemoryError)."""
    code, output = _invoke("check", "hi", "--conversation", "/dev/null", "--config", config)
    assert code == 2 and "is not a regular file" in output


def test_check_caps_a_conversation_and_stdin_at_the_body_limit(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """A --conversation file or stdin message over server.max_body_bytes exits 2 naming the
    limit; one under it is judged."""
    env = {"GATEKEEPER_SERVER__MAX_BODY_BYTES": "1024"}
    chat = tmp_path / "chat.json"
    turns = [{"role": "user", "content": "tell me a joke"}] * 40  # 1,600 bytes of JSON
    chat.write_text(json.dumps(turns), encoding="utf-8")
    code, output = _invoke("check", "--conversation", chat, "--config", config, env=env)
    assert code == 2 and "more than 1,024 bytes (server.max_body_bytes)" in output
    code, output = _invoke("check", "-", "--config", config, env=env, stdin="a" * 1025)
    assert code == 2 and "more than 1,024 bytes (server.max_body_bytes)" in output
    code, output = _invoke("check", "-", "--config", config, "--json", env=env, stdin="a" * 1024)
    assert code == 0, output


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


def test_a_settings_file_linked_to_nothing_is_not_written(tmp_path: Path) -> None:
    """calibrate --write refuses a settings file that is a symbolic link to nothing (writing
    would create the file it points to, elsewhere)."""
    elsewhere = tmp_path / "elsewhere.yaml"
    link = tmp_path / "gk.yaml"
    link.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link to nothing"):
        store_threshold(link, 0.3, "note")
    assert not elsewhere.exists() and link.is_symlink()


def test_a_traffic_sample_that_is_a_device_is_refused() -> None:
    """`init --traffic` refuses a device as no regular file (/dev/zero was read without end)."""
    with pytest.raises(InputError, match="traffic sample /dev/null is not a regular file"):
        read_traffic(Path("/dev/null"))
