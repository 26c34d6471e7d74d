"""CLI review fixes: user text is never read as markup, errors stay on one line, bad flag
combinations and unusable output paths fail fast (before the model loads) with exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatekeeper.cli import app
from gatekeeper.cli._app import setup
from gatekeeper.errors import ConfigError, InputError
from gatekeeper.eval.plan import EvalPlan, check_plan
from gatekeeper.eval.report_files import check_report_dir
from gatekeeper.eval.settings_file import store_threshold
from gatekeeper.eval.thresholds import check_target, choose_threshold

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = FIXTURES / "tiny_catalog.yaml"
EVAL = FIXTURES / "tiny_eval.jsonl"
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building an embedder fails the test: the command must stop before the model loads."""

    def refuse(settings: Any) -> Any:
        raise AssertionError("the embedding model was built")

    monkeypatch.setattr("gatekeeper.gate.build_embedder", refuse)


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# -- 1. user and data text is printed literally, never parsed as markup ----------------------


def test_markup_in_a_path_is_printed_literally(tmp_path: Path, no_model: None) -> None:
    """A catalog path with '[/]' gives the one-line error with the path intact, no MarkupError."""
    catalog = tmp_path / "x[/].yaml"
    code, output = _invoke("index", "--catalog", catalog)
    assert code == 2
    assert f"catalog {catalog} does not exist" in output


def test_brackets_in_an_error_survive(tmp_path: Path, no_model: None) -> None:
    """An intent name like '[red]x[/]' in a catalog error is printed whole."""
    catalog = tmp_path / "bad.yaml"
    catalog.write_text("intents:\n  - name: '[red]x[/]'\n    exemplars: []\n", encoding="utf-8")
    code, output = _invoke("index", "--catalog", catalog)
    assert code == 2
    assert "intent '[red]x[/]' has no exemplars" in output


def test_check_prints_reply_and_exemplar_text_literally(
    tmp_path: Path, hashing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` shows a canned reply and exemplar text containing '[red]' and '[/]' verbatim."""
    monkeypatch.setenv("COLUMNS", "200")
    catalog = tmp_path / "odd.yaml"
    catalog.write_text(
        "intents:\n  - name: help\n    exemplars: ['press [red] now']\n"
        "    reply: 'type [/] then [bold]'\n",
        encoding="utf-8",
    )
    config = tmp_path / "gk.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\ncatalog: {catalog}\ngate:\n  allow_uncalibrated: true\n",
        encoding="utf-8",
    )
    assert _invoke("index", "--config", config)[0] == 0
    code, output = _invoke("check", "--config", config, "press [red] now")
    assert code == 0, output
    assert "type [/] then [bold]" in output
    assert "help: press [red] now" in output


def test_eval_summary_prints_a_bracketed_file_name(
    config: Path, tmp_path: Path, hashing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A calibration file named 'c[red].jsonl' shows up whole in the progress and summary."""
    monkeypatch.setenv("COLUMNS", "200")
    calibration = tmp_path / "c[red].jsonl"
    shutil.copy(CALIBRATION, calibration)
    code, output = _invoke(
        "eval", "--config", config, "--dataset", EVAL, "--calibrate-on", calibration,
        "--target-pass-rate", "0.85", "--out", tmp_path / "out", "--bootstrap", "100",
        "--latency-sample", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "calibrated on c[red].jsonl" in output


# -- 2. errors are not hard-wrapped -----------------------------------------------------------


def test_a_long_error_stays_on_one_line(tmp_path: Path, no_model: None) -> None:
    """A one-line error longer than 80 columns is printed as one line when not on a terminal."""
    catalog = tmp_path / ("long_name_" * 12 + ".yaml")
    code, output = _invoke("index", "--catalog", catalog)
    assert code == 2
    assert output.strip().count("\n") == 0
    assert f"catalog {catalog} does not exist" in output


# -- 3. target pass rate and flag combinations ------------------------------------------------


@pytest.mark.parametrize("target", ["0", "1.5", "-0.1", "nan"])
@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_a_target_pass_rate_out_of_range_is_refused(
    command: str, target: str, config: Path, tmp_path: Path, no_model: None
) -> None:
    """--target-pass-rate outside (0, 1] exits 2 with a clear message, before the model loads."""
    args: list[str | Path] = ["--config", config, "--target-pass-rate", target]
    if command == "eval":
        args += ["--dataset", EVAL, "--calibrate-on", CALIBRATION, "--out", tmp_path / "o"]
    else:
        args += ["--dataset", CALIBRATION]
    code, output = _invoke(command, *args)
    assert code == 2
    assert f"--target-pass-rate must be above 0 and at most 1, got {float(target):g}" in output


def test_library_refuses_a_zero_target_with_input_error() -> None:
    """choose_threshold and check_plan raise InputError (not ValueError) for a target of 0."""
    with pytest.raises(InputError, match="target pass rate must be above 0"):
        choose_threshold(None, [], 0.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="target pass rate must be above 0"):
        check_plan(EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION, target_pass_rate=0.0))


def test_library_plan_errors_name_no_cli_flags() -> None:
    """An inconsistent EvalPlan is an InputError whose message names no command-line flag."""
    plans = [
        EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION),
        EvalPlan(datasets=(EVAL,), target_pass_rate=0.9),
        EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION, target_pass_rate=0.9, threshold=0.3),
    ]
    for plan in plans:
        with pytest.raises(InputError) as caught:
            check_plan(plan)
        assert "--" not in str(caught.value)


# -- 4. an unusable output path fails before the run ------------------------------------------


@pytest.mark.parametrize("command", ["eval", "demo"])
def test_out_pointing_at_a_file_fails_before_the_run(
    command: str, config: Path, tmp_path: Path, no_model: None
) -> None:
    """--out naming an existing file exits 2 with one line, before any model loads."""
    out = tmp_path / "taken"
    out.write_text("a file\n")
    args: list[str | Path] = [command, "--config", config, "--out", out]
    if command == "eval":
        args += ["--dataset", EVAL, "--threshold", "0.3"]
    code, output = _invoke(*args)
    assert code == 2
    assert f"cannot write the report to {out}: it exists and is not a directory" in output
    assert out.read_text() == "a file\n"


def test_check_report_dir_refuses_a_path_under_a_file(tmp_path: Path) -> None:
    """A report directory below an existing file is an InputError; a new directory is fine."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        check_report_dir(tmp_path / "file" / "reports")
    check_report_dir(tmp_path / "new" / "reports")
    assert not (tmp_path / "new").exists()


def test_check_report_dir_refuses_a_report_file_name_taken_by_a_directory(tmp_path: Path) -> None:
    """A directory named report.md inside the report directory is refused before the run (the
    run failed only when renaming the new report.md over it)."""
    (tmp_path / "out" / "report.md").mkdir(parents=True)
    with pytest.raises(InputError, match=r"report\.md is a directory, not a report file"):
        check_report_dir(tmp_path / "out")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_check_report_dir_tries_to_create_the_directory() -> None:
    """A directory the permission check allows but that cannot be created (/proc/x) is
    refused before the run; it ran the whole eval, then failed with [Errno 2]."""
    with pytest.raises(InputError, match="cannot write the report to /proc/gatekeeper-h59-report"):
        check_report_dir(Path("/proc/gatekeeper-h59-report"))


def test_calibrate_write_to_an_unusable_settings_path_fails_first(
    tmp_path: Path, no_model: None
) -> None:
    """calibrate --write into a settings path below a file exits 2 before the model loads."""
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "gk.yaml"
    code, output = _invoke(
        "calibrate", "--config", target, "--dataset", CALIBRATION,
        "--target-pass-rate", "0.9", "--write",
    )  # fmt: skip
    assert code == 2
    assert f"cannot write the threshold to settings file {target}" in output


@pytest.mark.parametrize("command", ["calibrate", "tune"])
def test_write_never_targets_the_packages_own_settings(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_model: None
) -> None:
    """--write without --config, outside a directory with configs/gatekeeper.yaml, exits 2
    asking for --config (it used to write the settings every project shares); the file it
    would have written is untouched."""
    bundled = Path(__file__).resolve().parents[2] / "configs" / "gatekeeper.yaml"
    before = bundled.read_bytes()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    args: list[str | Path] = ["--write"]
    if command == "calibrate":
        args += ["--dataset", CALIBRATION, "--target-pass-rate", "0.9"]
    code, output = _invoke(command, *args)
    assert code == 2
    assert "--write needs a settings file of yours: pass --config" in " ".join(output.split())
    assert bundled.read_bytes() == before


def test_store_threshold_wraps_os_errors(tmp_path: Path) -> None:
    """store_threshold into a directory raises ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="is a directory"):
        store_threshold(tmp_path, 0.3, "note")


# -- 5. silently ignored or mismatched flags --------------------------------------------------


def test_eval_target_without_calibrate_on_is_refused(
    config: Path, tmp_path: Path, no_model: None
) -> None:
    """eval --target-pass-rate without --calibrate-on exits 2 instead of being ignored."""
    code, output = _invoke(
        "eval", "--config", config, "--dataset", EVAL, "--target-pass-rate", "0.9",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2
    assert "--target-pass-rate needs --calibrate-on" in output


def test_calibrate_write_for_another_catalog_is_refused(tmp_path: Path, no_model: None) -> None:
    """calibrate --write --catalog X into settings serving another catalog exits 2, file kept."""
    config = tmp_path / "gk.yaml"
    original = f"data_dir: {tmp_path / 'data'}\ngate:\n  threshold: 0.2\n"
    config.write_text(original, encoding="utf-8")
    code, output = _invoke(
        "calibrate", "--config", config, "--dataset", CALIBRATION, "--target-pass-rate", "0.9",
        "--catalog", CATALOG, "--write",
    )  # fmt: skip
    assert code == 2
    assert f"set 'catalog: {CATALOG}' in {config}" in output
    assert config.read_text() == original


# -- 6. quiet commands keep an explicitly set log level ---------------------------------------


@pytest.mark.parametrize(("yaml_level", "expected"), [("DEBUG", "DEBUG"), (None, "WARNING")])
def test_quiet_commands_keep_a_log_level_set_in_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_level: str | None, expected: str
) -> None:
    """A logging.level set in the settings file wins over a quiet command's WARNING."""
    seen: list[str] = []
    monkeypatch.setattr("gatekeeper.logging.configure_logging", lambda s, **_: seen.append(s.level))
    config = tmp_path / "gk.yaml"
    config.write_text(
        f"logging:\n  level: {yaml_level}\n"
        if yaml_level
        else "gate:\n  threshold: 0.2\n  allow_uncalibrated: true\n",
        encoding="utf-8",
    )
    setup(config, quiet=True)
    assert seen == [expected]


def test_a_target_given_as_a_percentage_gets_a_did_you_mean() -> None:
    """A target pass rate of 99 is refused with "did you mean 0.99?"."""
    with pytest.raises(InputError, match=r"got 99 \(did you mean 0\.99\?\)"):
        check_target(99.0)
