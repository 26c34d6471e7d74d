"""`gatekeeper eval` and `gatekeeper calibrate` through Typer's CliRunner, on the hashing
embedder; and the settings-file round trip of a calibrated threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gatekeeper.catalog import read_catalog
from gatekeeper.cli import app
from gatekeeper.errors import ConfigError
from gatekeeper.eval.settings_file import store_threshold
from gatekeeper.settings import load_settings
from gatekeeper.testing import HashingEmbedder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DESIGN_FIELDS = {
    "n_queries", "n_in_domain", "n_off_topic", "llm_calls", "llm_calls_saved", "saved_rate",
    "in_domain_pass_rate", "false_block_rate", "off_topic_block_rate", "auroc", "fpr_at_95tpr",
    "threshold", "latency_ms", "cost",
}  # fmt: skip


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file with its own data dir; gates built by the CLI use the hashing embedder."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"# my settings\ndata_dir: {tmp_path / 'data'}\ngate:\n  rule: contrast  # keep\n"
        "  threshold: 0.2\nstore:\n  top_k: 5\n",
        encoding="utf-8",
    )
    return path


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_eval_writes_the_whole_report(config: Path, tmp_path: Path) -> None:
    """eval --catalog --calibrate-on writes report.json (DESIGN fields), md, html and plots."""
    out = tmp_path / "report"
    code, output = _invoke(
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--catalog", FIXTURES / "tiny_catalog.yaml",
        "--calibrate-on", FIXTURES / "tiny_calibration.jsonl", "--target-pass-rate", "0.85",
        "--out", out, "--latency-sample", "3", "--bootstrap", "100",
        "--off-topic-share", "0.7", "--off-topic-share", "0.5",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= DESIGN_FIELDS
    assert {"p50", "p95", "p99"} <= set(report["latency_ms"])
    assert report["n_queries"] == 18 and report["llm_calls"] + report["llm_calls_saved"] == 18
    assert report["calibration"]["source"] == "tiny_calibration.jsonl"
    assert report["meta"]["collection"].startswith("gatekeeper-tiny_catalog-")
    assert [p["off_topic_share"] for p in report["projections"]] == [0.7, 0.5]
    for name in ("scores.png", "tradeoff.png", "intents.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "| LLM calls saved |" in (out / "report.md").read_text()
    assert "LLM calls saved" in output and "report.html" in output


def test_the_recommended_command_for_another_catalog_writes_a_file_of_its_own(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval --catalog on a catalog the default settings file does not serve recommends a
    calibrate command into a new settings file; run as printed, it creates that file serving
    the catalog with the threshold the report showed (into the default file it was refused)."""
    import shlex

    monkeypatch.setenv("GATEKEEPER_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    catalog = FIXTURES / "tiny_catalog.yaml"
    code, output = _invoke(
        "eval", "--dataset", FIXTURES / "tiny_eval.jsonl", "--catalog", catalog,
        "--calibrate-on", FIXTURES / "tiny_calibration.jsonl", "--target-pass-rate", "0.85",
        "--out", tmp_path / "report", "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rec = next(r for r in report["recommended_thresholds"] if r["threshold"] is not None)
    assert " --config gatekeeper-tiny_catalog.yaml " in rec["command"]
    code, output = _invoke(*shlex.split(rec["command"])[1:])
    assert code == 0, output
    written = load_settings(tmp_path / "gatekeeper-tiny_catalog.yaml")
    assert written.catalog == catalog and written.gate.threshold == rec["threshold"]
    assert written.gate.calibrated_for is not None


def test_eval_accepts_a_csv_catalog_and_fixed_threshold(config: Path, tmp_path: Path) -> None:
    """A text,intent CSV catalog works, and --threshold is used and reported as given."""
    out = tmp_path / "csv"
    code, output = _invoke(
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--catalog", FIXTURES / "tiny_catalog.csv", "--threshold", "0.4", "--out", out,
        "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert report["threshold"] == 0.4 and report["calibration"] is None
    assert report["meta"]["threshold_given"] == 0.4
    assert "0.4000 (given (--threshold))" in (out / "report.md").read_text()
    assert report["latency_ms"]["n_sampled"] == 0


@pytest.mark.parametrize("threshold", ["7", "-1.5", "nan"])
def test_eval_refuses_a_threshold_no_cosine_can_reach(
    config: Path, tmp_path: Path, threshold: str
) -> None:
    """--threshold outside [-1, 1] exits 2 (it ran and blocked everything, exit 0)."""
    code, output = _invoke(
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--threshold", threshold, "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2 and "--threshold must be a cosine similarity from -1 to 1" in output


def test_eval_reports_a_malformed_dataset(config: Path, tmp_path: Path) -> None:
    """A bad row exits 2 naming the file and line; --skip-invalid leaves it out instead."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": "in_domain"}\n{"text": "x", "label": "spam"}\n')
    code, output = _invoke("eval", "--config", config, "--dataset", bad, "--out", tmp_path / "o")
    assert code == 2 and "bad.jsonl, line 2" in " ".join(output.split())
    code, output = _invoke(
        "eval", "--config", config, "--dataset", bad, "--out", tmp_path / "o", "--skip-invalid",
        "--catalog", FIXTURES / "tiny_catalog.yaml", "--latency-sample", "1",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["n_queries"] == 1 and len(report["meta"]["skipped_rows"]) == 1
    assert report["auroc"] is None  # one class only: no ROC


def test_calibrate_needs_a_target(config: Path) -> None:
    """eval --calibrate-on without --target-pass-rate is refused."""
    code, output = _invoke(
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--calibrate-on", FIXTURES / "tiny_calibration.jsonl",
    )  # fmt: skip
    assert code == 2 and "--target-pass-rate" in " ".join(output.split())


def test_calibrate_write_round_trip(config: Path) -> None:
    """calibrate --write stores the printed threshold, keeping the file's other keys."""
    catalog = FIXTURES / "tiny_catalog.yaml"
    config.write_text(config.read_text() + f"catalog: {catalog}\n", encoding="utf-8")
    code, output = _invoke(
        "calibrate", "--config", config, "--dataset", FIXTURES / "tiny_calibration.jsonl",
        "--target-pass-rate", "0.85", "--catalog", FIXTURES / "tiny_catalog.yaml", "--write",
    )  # fmt: skip
    assert code == 0, output
    printed = float(output.split("threshold ", 1)[1].split(":", 1)[0])
    settings = load_settings(config)
    assert settings.gate.threshold == pytest.approx(printed)
    assert settings.gate.rule == "contrast" and settings.store.top_k == 5
    text = config.read_text()
    assert text.startswith("# my settings") and "rule: contrast  # keep" in text
    assert (
        f"gatekeeper calibrate --config {config} --dataset" in text
        and text.count("threshold:") == 1
    )


def test_calibrate_with_another_rule_writes_a_file_that_serves(config: Path) -> None:
    """calibrate --rule top1 --write sets gate.rule as well (the file's rule was contrast) and
    says so, and its note's command names --rule: the file serves what it records."""
    catalog = FIXTURES / "tiny_catalog.yaml"
    config.write_text(config.read_text() + f"catalog: {catalog}\n", encoding="utf-8")
    code, output = _invoke(
        "calibrate", "--config", config, "--dataset", FIXTURES / "tiny_calibration.jsonl",
        "--target-pass-rate", "0.85", "--rule", "top1", "--write",
    )  # fmt: skip
    assert code == 0, output
    assert "and gate.rule = top1" in " ".join(output.split())  # it was written silently
    settings = load_settings(config)
    assert settings.gate.rule == "top1"
    assert settings.gate.calibrated_for is not None and settings.gate.calibrated_for.rule == "top1"
    assert "--rule top1 --write" in config.read_text()
    code, output = _invoke("check", "--config", config, "where is my order")
    assert code == 0, output


def test_calibrate_never_writes_a_threshold_that_misses_the_target(
    config: Path, tmp_path: Path
) -> None:
    """When no threshold passes the target (an in-domain message nearer off-topic exemplars
    than any intent), calibrate --write exits 2 and leaves the file alone, instead of writing
    -1 (a gate that forwards everything); without --write it only warns."""
    catalog = f"catalog: {FIXTURES / 'tiny_catalog.yaml'}\n"
    config.write_text(config.read_text().replace("top_k: 5", "top_k: 1") + catalog)
    before = config.read_text()
    data = tmp_path / "cal.jsonl"
    rows = [("where is my order", "in_domain"), ("tell me a joke", "in_domain"),
            ("write a poem", "off_topic")]  # fmt: skip
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    args: list[str | Path] = ["calibrate", "--config", config, "--dataset", data,
                              "--target-pass-rate", "1.0",
                              "--catalog", FIXTURES / "tiny_catalog.yaml"]  # fmt: skip
    code, output = _invoke(*args, "--write")
    assert code == 2 and "nothing was written" in " ".join(output.split())
    assert config.read_text() == before
    code, output = _invoke(*args)
    assert code == 0 and "no threshold reaches the target" in output


def test_eval_says_when_its_calibration_missed_the_target(config: Path, tmp_path: Path) -> None:
    """eval --calibrate-on a file where no threshold reaches the target warns and says so in
    the report's summary (it said "calibrated ... for 100.0% in-domain pass" at -1, exit 0)."""
    config.write_text(config.read_text().replace("top_k: 5", "top_k: 1"))
    data = tmp_path / "cal.jsonl"
    rows = [("where is my order", "in_domain"), ("tell me a joke", "in_domain"),
            ("write a poem", "off_topic")]  # fmt: skip
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    out = tmp_path / "r"
    code, output = _invoke(
        "eval", "--config", config, "--catalog", FIXTURES / "tiny_catalog.yaml",
        "--dataset", FIXTURES / "tiny_eval.jsonl", "--calibrate-on", data,
        "--target-pass-rate", "1.0", "--out", out, "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    assert "no threshold reaches 100.0% in-domain pass" in " ".join(output.split())
    assert "NOT reached, 50.0% at best" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "chats", ["missing.jsonl", "broken.jsonl", "no_drifts.jsonl", "first_turn_drifts.jsonl"]
)
def test_calibrate_with_a_bad_chats_file_writes_nothing(
    config: Path, tmp_path: Path, chats: str
) -> None:
    """calibrate --write --conversations with a missing or malformed chats file, or one with
    no drift turn a setting could change (none, or only chat openers), exits 2 and leaves the
    settings file as it was (the threshold was written before the chats were read; chats
    without such drifts wrote the loosest settings)."""
    catalog = FIXTURES / "tiny_catalog.yaml"
    config.write_text(config.read_text() + f"catalog: {catalog}\n", encoding="utf-8")
    before = config.read_text()
    (tmp_path / "broken.jsonl").write_text('{"messages": [\n', encoding="utf-8")
    turn = {"messages": [{"role": "user", "content": "where is my order"}], "labels": ["in_domain"]}
    (tmp_path / "no_drifts.jsonl").write_text(json.dumps(turn) + "\n", encoding="utf-8")
    opener = {"messages": [{"role": "user", "content": "tell me a joke"}], "labels": ["off_topic"]}
    (tmp_path / "first_turn_drifts.jsonl").write_text(
        json.dumps(turn) + "\n" + json.dumps(opener) + "\n", encoding="utf-8"
    )
    code, output = _invoke(
        "calibrate", "--config", config, "--dataset", FIXTURES / "tiny_calibration.jsonl",
        "--target-pass-rate", "0.85", "--write", "--conversations", tmp_path / chats,
    )  # fmt: skip
    assert code == 2 and "wrote" not in output, output
    assert config.read_text() == before


def test_calibrate_conversations_records_the_model_and_later_warns(
    config: Path, tmp_path: Path
) -> None:
    """calibrate --conversations --write records what the conversation settings were made for;
    a later threshold-only calibration for another model warns that they are foreign."""
    catalog = FIXTURES / "tiny_catalog.yaml"
    config.write_text(config.read_text() + f"catalog: {catalog}\n", encoding="utf-8")
    base = _calibrate_into(config)
    code, output = _invoke(*base, "--conversations", FIXTURES / "tiny_chats.jsonl")
    assert code == 0, output
    made_for = load_settings(config).gate.conversations_calibrated_for
    assert made_for is not None and made_for.model == HashingEmbedder().identity
    assert made_for.rule == "contrast"
    margin_line = next(x for x in config.read_text().splitlines() if "session_margin:" in x)
    assert f"# gatekeeper calibrate --config {config} --dataset " in margin_line  # as it was run
    assert "--conversations " in margin_line and " ... " not in margin_line
    code, output = _invoke(*base)
    assert code == 0 and "conversation settings" not in output, output
    code, output = _invoke(*base, "--rule", "top1")
    assert code == 0, output
    assert "were calibrated for rule 'contrast' (now 'top1')" in " ".join(output.split())


def _calibrate_into(config: Path) -> list[str | Path]:
    """The arguments of a threshold-only `calibrate --write` of the tiny files into ``config``."""
    return [
        "calibrate", "--config", config, "--dataset", FIXTURES / "tiny_calibration.jsonl",
        "--target-pass-rate", "0.85", "--write",
    ]  # fmt: skip


def _with_old_conversation_settings(config: Path) -> None:
    """``config`` as an older gatekeeper's `calibrate --conversations --write` left it: the
    threshold with its record, the conversation settings with none."""
    made_for = json.dumps({"model": HashingEmbedder().identity, "rule": "contrast"})
    catalog = FIXTURES / "tiny_catalog.yaml"
    old = "  threshold: 0.2\n"
    new = (
        f"  threshold: 0.2\n  calibrated_for: {made_for}\n  followup_max_words: 6\n"
        "  session_margin: 0.05  # gatekeeper calibrate ... --conversations chats.jsonl --write\n"
    )
    config.write_text(config.read_text().replace(old, new) + f"catalog: {catalog}\n")


def test_calibrate_warns_once_about_conversation_settings_without_a_record(config: Path) -> None:
    """A threshold-only calibrate --write into a file whose conversation settings have no
    record (an older calibrate --conversations wrote none) warns once with the command that
    calibrates them; with --conversations they are recorded and the warning ends."""
    _with_old_conversation_settings(config)
    base = _calibrate_into(config)
    code, output = _invoke(*base)
    said = " ".join(output.split())
    assert code == 0 and said.count("set with no record") == 1, output
    command = (
        f"`gatekeeper calibrate --config {config} --dataset {FIXTURES / 'tiny_calibration.jsonl'} "
        "--target-pass-rate 0.85 --rule contrast --write --conversations CHATS.jsonl`"
    )
    assert command in said
    code, output = _invoke(*base, "--conversations", FIXTURES / "tiny_chats.jsonl")
    assert code == 0 and "set with no record" not in output, output  # they are being chosen
    code, output = _invoke(*base)
    assert code == 0 and "conversation" not in output, output


def test_calibrate_says_once_that_the_conversation_settings_are_foreign(config: Path) -> None:
    """A threshold-only calibrate --write for another rule than the conversation settings'
    says they are foreign once (it said so twice: a log line, then the printed warning); one
    with --conversations, which recalibrates them, not at all (it logged it twice)."""
    _with_old_conversation_settings(config)
    base = _calibrate_into(config)
    code, output = _invoke(*base, "--conversations", FIXTURES / "tiny_chats.jsonl")
    assert code == 0, output
    foreign = "were calibrated for rule 'contrast' (now 'top1')"
    for extra, times in (((), 1), (("--conversations", FIXTURES / "tiny_chats.jsonl"), 0)):
        code, output = _invoke(*base, "--rule", "top1", *extra)
        assert code == 0 and " ".join(output.split()).count(foreign) == times, output


def test_check_and_eval_of_chats_warn_once_about_unrecorded_conversation_settings(
    config: Path, tmp_path: Path
) -> None:
    """check --conversation and an eval with chats (also one that calibrates first) log the
    unrecorded-conversation-settings warning once; check TEXT and an eval of single messages,
    which they do not act on, not."""
    _with_old_conversation_settings(config)
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": "where is my order"}]))
    single = tmp_path / "single.jsonl"
    lines = (FIXTURES / "tiny_eval.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    single.write_text("".join(line for line in lines if '"messages"' not in line), "utf-8")
    out: list[str | Path] = [
        "--out",
        tmp_path / "report",
        "--latency-sample",
        "0",
        "--bootstrap",
        "0",
    ]
    calibration = FIXTURES / "tiny_calibration.jsonl"
    calibrating = [*out, "--calibrate-on", calibration, "--target-pass-rate", "0.85"]
    runs: list[tuple[tuple[str | Path, ...], int]] = [
        (("check", "--config", config, "--conversation", chat), 1),
        (("check", "--config", config, "where is my order"), 0),
        (("eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl", *out), 1),
        (("eval", "--config", config, "--dataset", single, *out), 0),
        (("eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl", *calibrating), 1),
    ]
    for args, warnings in runs:
        code, output = _invoke(*args)
        assert code == 0, output
        assert output.count("set with no record") == warnings, (args, output)


def test_store_threshold_creates_a_missing_file(tmp_path: Path) -> None:
    """A settings file that does not exist yet is created with gate.threshold."""
    path = tmp_path / "new" / "gatekeeper.yaml"
    store_threshold(path, 0.4321, "made by a test")
    assert yaml.safe_load(path.read_text()) == {"gate": {"threshold": 0.4321}}
    assert "# made by a test" in path.read_text()


def test_store_threshold_adds_a_gate_block_and_handles_flow_style(tmp_path: Path) -> None:
    """Without a gate block one is appended; a flow-style gate mapping is rewritten."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("store:\n  top_k: 4\n")
    store_threshold(plain, 0.3, "note")
    assert yaml.safe_load(plain.read_text()) == {"store": {"top_k": 4}, "gate": {"threshold": 0.3}}
    flow = tmp_path / "flow.yaml"
    flow.write_text("gate: {rule: top1, threshold: 0.9}\n")
    store_threshold(flow, 0.25, "note")
    assert yaml.safe_load(flow.read_text())["gate"] == {"rule": "top1", "threshold": 0.25}


def test_store_threshold_leaves_an_invalid_file_untouched(tmp_path: Path) -> None:
    """When the result would not load as settings, the original file is restored."""
    path = tmp_path / "bad.yaml"
    original = "gate:\n  threshold: 0.5\nnot_a_setting: 1\n"
    path.write_text(original)
    with pytest.raises(ConfigError):
        store_threshold(path, 0.3, "note")
    assert path.read_text() == original


def test_index_shows_no_progress_bar_when_nothing_needs_embedding(config: Path) -> None:
    """A first index draws the embedding bar; a second, with nothing to embed, does not."""
    code, first = _invoke("index", "--config", config)
    assert code == 0 and "embedding exemplars" in first, first
    code, again = _invoke("index", "--config", config)
    assert code == 0 and "0 added" in again and "embedding exemplars" not in again, again


def _two_files_named_x(tmp_path: Path) -> list[Path]:
    lines = (FIXTURES / "tiny_eval.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    paths = [tmp_path / "d1" / "x.jsonl", tmp_path / "d2" / "x.jsonl"]
    for path, half in zip(paths, (lines[::2], lines[1::2]), strict=True):
        path.parent.mkdir()
        path.write_text("".join(half), encoding="utf-8")
    return paths


def test_rows_and_report_name_datasets_as_by_source_does(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two x.jsonl datasets stay apart in rows.jsonl and report.md, named as in by_source."""
    _two_files_named_x(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    code, output = _invoke(
        "eval", "--config", config, "--dataset", "d1/x.jsonl", "--dataset", "d2/x.jsonl",
        "--catalog", FIXTURES / "tiny_catalog.yaml", "--out", out,
        "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    named = ["d1/x.jsonl", "d2/x.jsonl"]
    assert report["meta"]["datasets"] == named
    assert [s["source"] for s in report["by_source"]] == named
    assert sorted({r["source"] for r in rows}) == named
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Gate eval: d1/x.jsonl, d2/x.jsonl\n")
    assert "| d1/x.jsonl |" in markdown and "| d2/x.jsonl |" in markdown


@pytest.mark.parametrize("again", ["d1/x.jsonl", "d1/../d1/./x.jsonl"])
def test_eval_refuses_a_dataset_given_twice(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: str
) -> None:
    """One dataset file given twice (or by two paths to it) exits 2 naming it, not counted twice."""
    _two_files_named_x(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, output = _invoke(
        "eval", "--config", config, "--dataset", "d1/x.jsonl", "--dataset", again,
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2, output
    assert "d1/x.jsonl" in output and "given twice" in " ".join(output.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("draws", ["1", "99"])
def test_eval_refuses_too_few_bootstrap_draws(config: Path, tmp_path: Path, draws: str) -> None:
    """--bootstrap from 1 to 99 exits 2 before any work (1 draw gave an interval beside the
    estimate); --bootstrap 0 still means no intervals."""
    args = (
        "eval", "--config", config, "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--catalog", FIXTURES / "tiny_catalog.csv", "--threshold", "0.4",
        "--latency-sample", "0",
    )  # fmt: skip
    code, output = _invoke(*args, "--out", tmp_path / "few", "--bootstrap", draws)
    assert code == 2 and "at least 100" in output, output
    assert not (tmp_path / "few").exists()
    code, output = _invoke(*args, "--out", tmp_path / "none", "--bootstrap", "0")
    assert code == 0, output
    report = json.loads((tmp_path / "none" / "report.json").read_text())
    assert report["confidence_intervals"] == {}


def test_eval_of_off_topic_rows_alone_leaves_out_the_in_domain_plots(
    config: Path, tmp_path: Path
) -> None:
    """With only off-topic rows, tradeoff.png and intents.png (empty charts) are not written,
    an older run's copies are removed, and the CLI counts the one plot written."""
    rows = [json.loads(line) for line in (FIXTURES / "tiny_eval.jsonl").read_text().splitlines()]
    off_topic = tmp_path / "off_topic.jsonl"
    off_topic.write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r["label"] == "off_topic"), "utf-8"
    )
    out = tmp_path / "report"
    common = (
        "eval", "--config", config, "--catalog", FIXTURES / "tiny_catalog.csv",
        "--threshold", "0.4", "--out", out, "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    code, output = _invoke(*common, "--dataset", FIXTURES / "tiny_eval.jsonl")
    assert code == 0 and "3 plots in" in output and (out / "tradeoff.png").is_file(), output
    code, output = _invoke(*common, "--dataset", off_topic)
    assert code == 0 and "1 plot in" in output, output
    assert (out / "scores.png").is_file()
    assert not (out / "tradeoff.png").exists() and not (out / "intents.png").exists()
    markdown = (out / "report.md").read_text()
    assert "scores.png" in markdown and "tradeoff.png" not in markdown


def test_calibrate_warns_when_the_file_has_too_few_rows_for_the_target(config: Path) -> None:
    """calibrate with 7 in-domain rows for a 99% target (99 needed) warns, naming both counts
    and that the threshold is just the lowest in-domain score; 85% (6 needed) does not."""
    args = (
        "calibrate", "--config", config, "--dataset", FIXTURES / "tiny_calibration.jsonl",
        "--catalog", FIXTURES / "tiny_catalog.yaml", "--target-pass-rate",
    )  # fmt: skip
    code, output = _invoke(*args, "0.99")
    said = " ".join(output.split())
    assert code == 0, output
    assert "only 7 in-domain rows" in said and "needs about 99 or more" in said
    assert "just the lowest in-domain score" in said
    code, output = _invoke(*args, "0.85")
    assert code == 0 and "in-domain rows;" not in output, output


def test_eval_records_a_calibration_file_too_small_for_its_target(
    config: Path, tmp_path: Path
) -> None:
    """eval --calibrate-on 7 in-domain rows at 99.9% records enough_rows false and
    rows_needed 999 beside reached, warns in meta.dataset_warnings and on the console, and
    its "apply with" command carries the run's own target (it printed 0.99)."""
    out = tmp_path / "r"
    code, output = _invoke(
        "eval", "--config", config, "--catalog", FIXTURES / "tiny_catalog.yaml",
        "--dataset", FIXTURES / "tiny_eval.jsonl",
        "--calibrate-on", FIXTURES / "tiny_calibration.jsonl", "--target-pass-rate", "0.999",
        "--out", out, "--latency-sample", "0", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    calibration = report["calibration"]
    assert calibration["reached"] is True
    assert calibration["enough_rows"] is False and calibration["rows_needed"] == 999
    assert any("only 7 in-domain rows" in w for w in report["meta"]["dataset_warnings"])
    said = " ".join(output.split())
    assert "needs about 999 or more" in said
    assert "--target-pass-rate 0.999 " in said.split("apply with: ", 1)[1]


def test_check_refuses_another_catalogs_threshold_as_eval_does(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check --catalog C at a threshold calibrated on the settings' own catalog exits 2 with
    the calibrate command (it decided at that threshold and hinted to create C's settings
    file), and names C's own settings file once one serves C."""
    identity = HashingEmbedder().identity
    own = read_catalog(load_settings(config).served_catalog).catalog.content_hash()
    made_for = json.dumps({"model": identity, "rule": "contrast", "catalog": own})
    config.write_text(
        config.read_text().replace(
            "  threshold: 0.2\n", f"  threshold: 0.2\n  calibrated_for: {made_for}\n"
        )
    )
    monkeypatch.chdir(tmp_path)
    catalog = FIXTURES / "tiny_catalog.yaml"
    args = ("check", "--config", config, "--catalog", catalog, "where is my order")
    code, output = _invoke(*args)
    said = " ".join(output.split())
    assert code == 2 and "nobody chose" in said, output
    assert "calibrate --config gatekeeper-tiny_catalog.yaml" in said
    assert "Use --config" not in said
    (tmp_path / "gatekeeper-tiny_catalog.yaml").write_text(f"catalog: {catalog}\n")
    code, output = _invoke(*args)
    said = " ".join(output.split())
    assert code == 2 and "Use --config gatekeeper-tiny_catalog.yaml, which serves" in said
