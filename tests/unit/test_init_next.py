"""`gatekeeper init`'s next commands: true, and each runs as printed, in order (hashing
embedder)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.settings import load_settings
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXAMPLES = (
    "text,intent\n"
    "where is my parcel,delivery\n"
    "track my parcel please,delivery\n"
    "my parcel has not arrived,delivery\n"
    "I want to return my shoes,returns\n"
    "how do I return an order,returns\n"
    "can I send the jacket back,returns\n"
)
LABELLED = (
    '{"text": "where is my parcel now", "label": "in_domain"}\n'
    '{"text": "please track my parcel", "label": "in_domain"}\n'
    '{"text": "I want to return an order", "label": "in_domain"}\n'
    '{"text": "how do I return my shoes", "label": "in_domain"}\n'
    '{"text": "write me a poem about autumn", "label": "off_topic"}\n'
    '{"text": "who won the football world cup", "label": "off_topic"}\n'
)


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the owner's examples and labelled messages; init and the gates
    embed with the hashing embedder."""
    embedder = HashingEmbedder()
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: embedder)
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: embedder)
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples.csv").write_text(EXAMPLES, encoding="utf-8")
    (tmp_path / "labelled.jsonl").write_text(LABELLED, encoding="utf-8")
    return tmp_path


def _run_next_commands(output: str) -> list[str]:
    """Run the printed next commands in order (labelled.jsonl for the placeholder); the
    output of each, after asserting it exits 0."""
    commands = [
        line.strip() for line in output.split("next:")[1].splitlines() if "  gatekeeper " in line
    ]
    assert [c.split()[1] for c in commands] == ["index", "calibrate", "check"], output
    outputs = []
    for command in commands:
        args = shlex.split(command.replace("YOUR_LABELLED_MESSAGES.jsonl", "labelled.jsonl"))
        code, out = _invoke(*args[1:])
        assert code == 0, f"{command}\n{out}"
        outputs.append(out)
    return outputs


def _settings(path: Path, catalog: str, data_dir: Path) -> Path:
    path.write_text(
        f"catalog: {catalog}\ndata_dir: {data_dir}\nembedding:\n  max_length: 64\n"
        'gate:\n  threshold: 0.3\n  calibrated_for: {"model": "hashing:512", "rule": "density", '
        '"catalog": "0123456789abcdef"}\n',
        encoding="utf-8",
    )
    return path


def test_with_a_settings_file_of_another_catalog_the_commands_run_on_a_copy(shop: Path) -> None:
    """`init --config F` where F serves another catalog writes gatekeeper-<stem>.yaml (F's
    settings, its model too, serving the new catalog, no threshold) and names it: the printed
    commands run in order and F is left as it was (it named F, said F served the new catalog,
    and its calibrate --write was refused, exit 2)."""
    mine = _settings(shop / "mine.yaml", str(FIXTURES / "tiny_catalog.yaml"), shop / "data")
    before = mine.read_text(encoding="utf-8")
    code, output = _invoke("init", "examples.csv", "--out", "t5.yaml", "--config", mine)
    assert code == 0, output
    copy = shop / "gatekeeper-t5.yaml"
    assert f"--config {copy.name}" in output and f"--config {mine}" not in output
    assert f"wrote {copy.name}: the settings of {mine}" in output
    settings = load_settings(copy)
    assert settings.catalog == (shop / "t5.yaml").resolve()
    assert settings.embedding == load_settings(mine).embedding
    assert settings.gate.calibrated_for is None
    *_, checked = _run_next_commands(output)
    assert "route" in checked
    assert mine.read_text(encoding="utf-8") == before
    assert load_settings(copy).gate.calibrated_for is not None


def test_a_catalog_named_by_the_environment_does_not_make_a_file_serve_it(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GATEKEEPER_CATALOG naming the new catalog does not make F (serving another) its
    settings file: init writes and names gatekeeper-<stem>.yaml, the commands run in order with
    the variable still set, and F is left as it was (it named F, whose calibrate --write stored
    the new catalog's threshold there)."""
    mine = _settings(shop / "mine.yaml", str(FIXTURES / "tiny_catalog.yaml"), shop / "data")
    before = mine.read_text(encoding="utf-8")
    monkeypatch.setenv("GATEKEEPER_CATALOG", "t5.yaml")
    code, output = _invoke("init", "examples.csv", "--out", "t5.yaml", "--config", mine)
    assert code == 0, output
    assert "--config gatekeeper-t5.yaml" in output and f"--config {mine}" not in output
    _run_next_commands(output)
    assert mine.read_text(encoding="utf-8") == before
    assert load_settings(shop / "gatekeeper-t5.yaml").gate.calibrated_for is not None


def test_index_names_the_settings_file_init_named(shop: Path) -> None:
    """`index --config F --catalog C` on init's catalog advises calibrating into the same
    settings file init named and wrote (it advised gatekeeper-<stem>.yaml, init F)."""
    mine = _settings(shop / "mine.yaml", str(FIXTURES / "tiny_catalog.yaml"), shop / "data")
    code, output = _invoke("init", "examples.csv", "--out", "t5.yaml", "--config", mine)
    assert code == 0, output
    assert "calibrate --config gatekeeper-t5.yaml" in output
    code, output = _invoke("index", "--config", mine, "--catalog", "t5.yaml")
    assert code == 0, output
    assert "calibrate --config gatekeeper-t5.yaml" in output


def test_without_a_settings_file_calibrate_creates_the_named_one(shop: Path) -> None:
    """With no settings file of the owner's, the commands index the catalog, create
    gatekeeper-<stem>.yaml by calibrate --write and check with it, in order."""
    code, output = _invoke("init", "examples.csv", "--out", "shop.yaml")
    assert code == 0, output
    assert "YOUR_SETTINGS" not in output and "calibrate --write creates" in output
    assert not (shop / "gatekeeper-shop.yaml").exists()
    _run_next_commands(output)
    assert load_settings(shop / "gatekeeper-shop.yaml").catalog == (shop / "shop.yaml").resolve()


def test_a_settings_file_serving_the_catalog_is_named_as_it_is(shop: Path) -> None:
    """`init --config F` where F serves --out names F (no copy) and the commands run on it."""
    mine = _settings(shop / "mine.yaml", "t5.yaml", shop / "data")
    code, output = _invoke("init", "examples.csv", "--out", "t5.yaml", "--config", mine)
    assert code == 0, output
    assert f"{mine} serves t5.yaml" in output and not (shop / "gatekeeper-t5.yaml").exists()
    _run_next_commands(output)
    assert load_settings(mine).gate.calibrated_for is not None


def test_a_settings_file_of_another_catalog_is_refused_before_anything_is_written(
    shop: Path,
) -> None:
    """An existing gatekeeper-<stem>.yaml serving another catalog is refused (exit 2) before
    the catalog is written, so running init again after the fix works without --force (it
    wrote the catalog first, and the rerun then asked for --force)."""
    elsewhere = shop / "elsewhere"
    elsewhere.mkdir()
    _settings(shop / "gatekeeper-catalog.yaml", str(shop / "other.yaml"), shop / "data")
    code, output = _invoke("init", "examples.csv", "--out", elsewhere / "catalog.yaml")
    assert code == 2 and "serves another catalog" in output and "nothing was written" in output
    assert list(elsewhere.iterdir()) == []
    (shop / "gatekeeper-catalog.yaml").unlink()
    code, output = _invoke("init", "examples.csv", "--out", elsewhere / "catalog.yaml")
    assert code == 0, output


def test_a_small_share_of_off_topic_traffic_is_not_printed_as_zero(shop: Path) -> None:
    """One off-topic line in a traffic sample of 300 reads "(0.3%)", not "(0%)"."""
    lines = [f"where is my parcel number {i}" for i in range(299)]
    lines.append("write me a leetcode solution for two sum please")
    (shop / "traffic.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, output = _invoke("init", "examples.csv", "--out", "shop.yaml", "--traffic", "traffic.txt")
    assert code == 0, output
    assert "traffic sample: 1 of 300 lines (0.3%) look off-topic" in output, output
