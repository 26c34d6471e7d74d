"""The CLI turns user mistakes into one clear line and an exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app

runner = CliRunner()


def test_catalog_typo_is_one_clear_error(tmp_path: Path) -> None:
    """A catalog with a typo'd key exits 2 naming the file, intent and key."""
    catalog = tmp_path / "typo.yaml"
    catalog.write_text("intents:\n  - name: refund\n    exemplar: [refund please]\n")
    result = runner.invoke(
        app, ["index", "--catalog", str(catalog)], env={"GATEKEEPER_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "unknown key 'exemplar'" in result.output
    assert str(catalog) in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["index"], ["check", "where is my order"]])
def test_catalog_text_under_an_unknown_key_is_one_clear_error(
    tmp_path: Path, command: list[str]
) -> None:
    """A JSONL catalog row with its text under 'utterance': index and check exit 2 naming the
    row, the key and 'text' (they warned and served the catalog without that exemplar)."""
    catalog = tmp_path / "rows.jsonl"
    catalog.write_text(
        '{"text": "where is my order", "intent": "orders"}\n'
        '{"utterance": "track my parcel", "intent": "orders"}\n'
    )
    result = runner.invoke(
        app, [*command, "--catalog", str(catalog)], env={"GATEKEEPER_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "row 2: no 'text', but a value under the unknown key 'utterance'" in result.output
    assert "Traceback" not in result.output


def test_bad_settings_file(tmp_path: Path) -> None:
    """An invalid settings value exits 2 naming the field."""
    config = tmp_path / "gk.yaml"
    config.write_text("gate:\n  threshold: 7\n")
    result = runner.invoke(app, ["check", "hello", "--config", str(config)])
    assert result.exit_code == 2
    assert "gate.threshold" in result.output


def test_missing_message(tmp_path: Path) -> None:
    """`check` without a message says what to give."""
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2
    assert "give the message" in result.output


def test_unreadable_conversation_file(tmp_path: Path) -> None:
    """A conversation file that is not JSON is a clear error."""
    bad = tmp_path / "chat.json"
    bad.write_text("{nope")
    result = runner.invoke(app, ["check", "--conversation", str(bad)])
    assert result.exit_code == 2
    assert "cannot read conversation" in result.output


def test_a_conversation_with_roles_of_its_own_is_refused(tmp_path: Path) -> None:
    """A chat file with a 'customer' role is an input error naming the message and the roles a
    chat has (it was skipped with a warning: the gate judged another chat than the file's)."""
    chat = tmp_path / "chat.json"
    chat.write_text(
        '[{"role": "user", "content": "where is my order"},'
        ' {"role": "customer", "content": "Maria Lopez"}]'
    )
    result = runner.invoke(
        app, ["check", "--conversation", str(chat)], env={"GATEKEEPER_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2, result.output
    shown = " ".join(result.output.split())
    assert "messages[1].role 'customer' is not a chat role" in shown
    assert "the customer's turns are 'user'" in shown


@pytest.mark.parametrize("command", ["index", "check", "serve"])
def test_every_command_takes_config(command: str) -> None:
    """Every command documents --config."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output


def test_serve_with_a_bad_catalog_stops_before_listening(tmp_path: Path) -> None:
    """`serve` with a broken catalog exits 2 with the catalog error, before any server starts."""
    result = runner.invoke(
        app,
        ["serve", "--port", "1"],
        env={"GATEKEEPER_DATA_DIR": str(tmp_path), "GATEKEEPER_CATALOG": str(tmp_path / "no.yaml")},
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_serve_on_a_taken_port_says_so_before_loading_the_model(tmp_path: Path) -> None:
    """`serve` on a port another server holds exits 2 naming the address, with no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["serve", "--port", str(port)], env={"GATEKEEPER_DATA_DIR": str(tmp_path)}
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_serve_refuses_a_port_out_of_range(port: str) -> None:
    """`serve --port` outside 1-65535 is a usage error (it used to hang on 99999)."""
    result = runner.invoke(app, ["serve", "--port", port])
    assert result.exit_code == 2
    assert "--port" in result.output


def test_serve_with_a_bad_upstream_url(tmp_path: Path) -> None:
    """A malformed upstream URL is a settings error naming the field."""
    result = runner.invoke(app, ["serve"], env={"GATEKEEPER_UPSTREAM__BASE_URL": "http://[::1"})
    assert result.exit_code == 2
    assert "upstream.base_url" in result.output


def test_the_readme_error_table_matches_the_exit_codes() -> None:
    """Every error class in README.md's error table exits with the code the table gives."""
    import re

    from gatekeeper import errors
    from gatekeeper.cli._app import exit_code

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `\w+", line)]
    checked = 0
    for row in rows:
        names_cell, _, code_cell = (cell.strip() for cell in row.strip("|").split("|")[:3])
        for name in re.findall(r"`(\w+Error)`", names_cell):
            assert exit_code(getattr(errors, name)("x")) == int(code_cell), name
            checked += 1
    assert checked >= 12  # the table still lists the hierarchy


def test_a_conversation_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    """A conversation file in another encoding exits 2 naming it; a UTF-8 BOM is accepted."""
    bad = tmp_path / "chat.json"
    bad.write_bytes(b"\xff\xfe[]")
    env = {"GATEKEEPER_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["check", "--conversation", str(bad)], env=env)
    assert result.exit_code == 2 and "cannot read conversation" in result.output
    assert "Traceback" not in result.output
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf[]")
    result = runner.invoke(app, ["check", "--conversation", str(bom)], env=env)
    assert result.exit_code == 2 and "must be a non-empty list" in result.output


def test_help_text_reflows_docstring_paragraphs() -> None:
    """`--help` reflows a command's docstring: no line breaks from the source, no lost `<...>`."""
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "messages (and, with --conversations, the conversation settings)" in result.output
    tune = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"})
    assert "<data_dir>/adapters/<catalog>-<hash>/" in tune.output


def _usage_error(args: list[str]) -> list[str]:
    """The stderr lines of a run that is a usage error (exit 2, nothing on stdout)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    return result.stderr.splitlines()


@pytest.mark.parametrize(
    ("args", "problem", "where"),
    [
        (["calibrate", "-d", "d.jsonl"], "missing option '--target-pass-rate'", "calibrate"),
        (
            ["calibrate", "-d", "d.jsonl", "--target-pass-rate", "abc"],
            "invalid value for '--target-pass-rate': ",
            "calibrate",
        ),
        (["serve", "--port", "99999"], "invalid value for '--port': ", "serve"),
        (["eval"], "missing option '--dataset'", "eval"),
        (["nosuch"], "no such command 'nosuch'", ""),
        (["--bogus"], "no such option: --bogus", ""),
    ],
)
def test_a_usage_error_is_one_error_line(args: list[str], problem: str, where: str) -> None:
    """A missing option, a bad value, an unknown command or option is one `error:` line and one
    `try: gatekeeper <command> --help` line on stderr, exit 2, as the CLI's other errors (it was
    Click's usage lines and a boxed panel)."""
    error, hint = _usage_error(args)
    assert error.startswith(f"error: {problem}"), error
    assert hint == " ".join(["try: gatekeeper", *([where] if where else []), "--help"])


@pytest.mark.parametrize(
    ("args", "where"),
    [(["index", "--catalog"], "index"), (["check", "--conversation"], "check"),
     (["eval", "--dataset"], "eval")],
)  # fmt: skip
def test_an_option_missing_its_value_points_to_its_commands_help(
    args: list[str], where: str
) -> None:
    """An option given last without its value points to its command's help (it said `try:
    gatekeeper --help`: Click's error carries no context there)."""
    error, hint = _usage_error(args)
    assert error == f"error: option '{args[1]}' requires an argument", error
    assert hint == f"try: gatekeeper {where} --help"


def test_every_command_says_a_usage_error_in_one_line() -> None:
    """Every command's unknown option is the one `error:` line and its `try:` line."""
    from typer.main import get_command

    commands = list(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"init", "index", "check", "serve", "eval", "calibrate", "demo", "tune"} <= set(commands)
    for command in commands:
        lines = _usage_error([command, "--no-such-option"])
        assert lines == [
            f"error: no such option: --no-such-option{_after_dashes(command)}",
            f"try: gatekeeper {command} --help",
        ]


def _after_dashes(command: str) -> str:
    return " (a message starting with '-' goes after --: gatekeeper check -- '-50 euro off?')" * (
        command == "check"
    )


def test_a_message_starting_with_a_dash_goes_after_two_dashes(config: Path, hashing: None) -> None:
    """`check "-50 euro off?"` says to put it after `--` (it was "No such option: -5" in a
    panel), `check --help` says so too, and after `--` it is decided."""
    (error, _) = _usage_error(["check", "-50 euro off?", "--config", str(config)])
    assert error.endswith(_after_dashes("check")), error
    shown = " ".join(runner.invoke(app, ["check", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "A message starting with '-' goes after --: gatekeeper check -- '-50 euro off?'" in shown
    result = runner.invoke(app, ["check", "--config", str(config), "--json", "--", "-50 euro off?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["route"] in {"llm", "off_topic", "canned"}


def test_serve_with_server_keys_set_empty_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` with GATEKEEPER_SERVER__API_KEYS="" exits 2 naming the variable before it
    starts (it served without inbound auth)."""
    started: list[object] = []
    monkeypatch.setattr(
        "gatekeeper.interfaces.proxy.runner.run_server", lambda *a, **k: started.append(a)
    )
    result = runner.invoke(app, ["serve"], env={"GATEKEEPER_SERVER__API_KEYS": ""})
    assert result.exit_code == 2, result.output
    assert "GATEKEEPER_SERVER__API_KEYS" in result.output and "holds no key" in result.output
    assert started == []
