"""Thresholds belong to the model and rule they were calibrated for."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from gatekeeper.calibration import check_calibrated, record
from gatekeeper.errors import UncalibratedError
from gatekeeper.eval.settings_file import store_threshold
from gatekeeper.settings import CalibrationRecord, GateSettings, load_settings
from gatekeeper.testing import make_gate

MODEL, RULE = "local:minilm:mean", "density"


def _gate(**fields: object) -> GateSettings:
    return GateSettings(threshold=0.3, **fields)  # type: ignore[arg-type]


def test_a_threshold_calibrated_for_this_gate_is_used() -> None:
    """Same model and rule: no error, no warning."""
    gate = _gate(calibrated_for=record(MODEL, RULE, "c1"))
    outcome = check_calibrated(gate, model=MODEL, rule=RULE, catalog_hash="c1", catalog="x")
    assert outcome.warnings == ()


@pytest.mark.parametrize(
    ("model", "rule", "named", "command"),
    [
        ("openai:e5-query", RULE, "model", "--catalog shop.yaml`"),
        (MODEL, "top1", "rule", "--catalog shop.yaml --rule top1`"),
    ],
)
def test_another_model_or_rule_is_refused_with_the_command(
    model: str, rule: str, named: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A threshold from another model or rule raises, naming what differs, on whose scale,
    and a command that calibrates for it (it lacked --rule, so it wrote the old rule's
    threshold again)."""
    monkeypatch.delenv("GATEKEEPER_GATE__RULE", raising=False)
    gate = _gate(calibrated_for=record(MODEL, RULE, "c1"))
    with pytest.raises(UncalibratedError) as raised:
        check_calibrated(gate, model=model, rule=rule, catalog_hash="c1", catalog="shop.yaml")
    message = str(raised.value)
    assert f"calibrated for {named} " in message and f"on another {named}'s scale" in message
    assert command in message


def test_a_never_calibrated_threshold_is_refused_unless_allowed() -> None:
    """No record: refused; gate.allow_uncalibrated (explicit) lets it decide."""
    with pytest.raises(UncalibratedError, match="never calibrated"):
        check_calibrated(_gate(), model=MODEL, rule=RULE, catalog_hash="c", catalog="x")
    allowed = _gate(allow_uncalibrated=True)
    assert check_calibrated(allowed, model=MODEL, rule=RULE, catalog_hash="c", catalog="x")


def test_a_changed_catalog_only_warns() -> None:
    """The same model and rule on an edited catalog decides, with a recalibration hint."""
    gate = _gate(calibrated_for=record(MODEL, RULE, "old"))
    outcome = check_calibrated(gate, model=MODEL, rule=RULE, catalog_hash="new", catalog="x")
    (warning,) = outcome.warnings
    assert "gatekeeper calibrate" in warning


def test_conversation_settings_of_another_model_warn_with_the_command() -> None:
    """Conversation settings calibrated for another model: the gate decides, with a warning
    naming the model they were made for and the command with --conversations."""
    gate = _gate(
        calibrated_for=record("openai:e5-query", RULE, "c"),
        conversations_calibrated_for=record(MODEL, RULE, "c"),
    )
    outcome = check_calibrated(
        gate, model="openai:e5-query", rule=RULE, catalog_hash="c", catalog="x"
    )
    (warning,) = outcome.warnings
    assert f"gate.followup_*) were calibrated for model {MODEL!r}" in warning
    assert "--conversations CHATS.jsonl" in warning


def test_conversation_settings_of_this_model_defaults_or_beside_no_record_do_not_warn() -> None:
    """No warning when the conversation settings were calibrated for this model and rule, are
    the built-in defaults, or sit beside a threshold with no record (allowed uncalibrated)."""
    made_here = _gate(
        calibrated_for=record(MODEL, RULE, "c"),
        conversations_calibrated_for=record(MODEL, RULE, "c"),
        **OLD_CALIBRATION,
    )
    defaults = _gate(calibrated_for=record(MODEL, RULE, "c"))
    uncalibrated = _gate(allow_uncalibrated=True, **OLD_CALIBRATION)
    for gate in (made_here, defaults, uncalibrated):
        outcome = check_calibrated(gate, model=MODEL, rule=RULE, catalog_hash="c", catalog="x")
        assert outcome.warnings == ()


#: Conversation settings as an older `calibrate --conversations --write` left them: no record.
OLD_CALIBRATION = {"session_margin": 0.05, "followup_max_words": 6}


def test_unrecorded_conversation_settings_beside_a_calibrated_threshold_warn() -> None:
    """Conversation settings other than the defaults with no record, beside a threshold that
    has one (an older calibrate --conversations --write wrote none): one warning naming them,
    the calibrate command with --conversations, and the record that would end it."""
    gate = _gate(calibrated_for=record(MODEL, RULE, "c"), **OLD_CALIBRATION)
    outcome = check_calibrated(
        gate, model=MODEL, rule=RULE, catalog_hash="c", catalog="x", config_flag=" --config my.yaml"
    )
    (warning,) = outcome.warnings
    assert "gate.session_margin, gate.followup_max_words are set with no record" in warning
    assert "`gatekeeper calibrate --config my.yaml --dataset " in warning
    assert "--write --catalog x --conversations CHATS.jsonl`" in warning
    made_for = json.dumps({"model": MODEL, "rule": RULE})
    assert warning.endswith(f"gate.conversations_calibrated_for: {made_for}")


def test_the_record_an_unrecorded_warning_advises_ends_it_and_catches_a_later_model() -> None:
    """Setting the record the warning names ends the warning; a later change of model then
    warns that the conversation settings were calibrated for the old one."""
    gate = _gate(calibrated_for=record(MODEL, RULE, "c"), **OLD_CALIBRATION)
    (warning,) = check_calibrated(
        gate, model=MODEL, rule=RULE, catalog_hash="c", catalog="x"
    ).warnings
    advised = yaml.safe_load(warning.rsplit("gate.", 1)[1])["conversations_calibrated_for"]
    recorded = gate.model_copy(
        update={"conversations_calibrated_for": CalibrationRecord(**advised)}
    )
    outcome = check_calibrated(recorded, model=MODEL, rule=RULE, catalog_hash="c", catalog="x")
    assert outcome.warnings == ()
    moved = recorded.model_copy(update={"calibrated_for": record("openai:e5-query", RULE, "c")})
    (later,) = check_calibrated(
        moved, model="openai:e5-query", rule=RULE, catalog_hash="c", catalog="x"
    ).warnings
    assert f"were calibrated for model {MODEL!r}" in later


def test_a_refused_threshold_mentions_chats_when_the_conversation_settings_have_no_record() -> None:
    """Another model's threshold is refused with --conversations advised when the conversation
    settings were set with no record (they may be the old model's too)."""
    gate = _gate(calibrated_for=record(MODEL, RULE, "c"), **OLD_CALIBRATION)
    with pytest.raises(UncalibratedError) as raised:
        check_calibrated(gate, model="openai:e5-query", rule=RULE, catalog_hash="c", catalog="x")
    assert "add --conversations CHATS.jsonl" in str(raised.value)
    assert "nothing records which model they were chosen for" in str(raised.value)


def test_the_gate_logs_unrecorded_conversation_settings_once(tmp_path: Path) -> None:
    """A library gate whose conversation settings have no record beside a calibrated threshold
    logs one gate.calibration_stale event, however many chats it then decides."""
    from structlog.testing import capture_logs

    from gatekeeper.testing import HashingEmbedder

    made_for = CalibrationRecord(model=HashingEmbedder().identity, rule="contrast")
    gate = make_gate(tmp_path, gate={"calibrated_for": made_for, **OLD_CALIBRATION})
    chat = [{"role": "user", "content": "where is my order"}]
    with capture_logs() as logs:
        gate.check(chat)
        gate.check(chat)
    (hint,) = [entry["hint"] for entry in logs if entry["event"] == "gate.calibration_stale"]
    assert "set with no record" in hint and "--conversations CHATS.jsonl" in hint


def test_the_gate_refuses_before_deciding(tmp_path: Path) -> None:
    """A gate whose settings carry another model's calibration raises on its first check."""
    gate = make_gate(
        tmp_path,
        gate={"allow_uncalibrated": False, "calibrated_for": record(MODEL, RULE, "c")},
    )
    with pytest.raises(UncalibratedError):
        gate.check("where is my order")


def test_the_advised_command_reads_the_same_settings_file(tmp_path: Path) -> None:
    """Settings read from a file of the user's own: the advised `gatekeeper calibrate` names
    it with --config (run without it, --write would change another file); the default file
    is not named."""
    own = tmp_path / "shop-b.yaml"
    own.write_text(f"gate:\n  threshold: 0.3\n  calibrated_for: {{model: {MODEL}, rule: {RULE}}}\n")
    settings = load_settings(own)
    assert settings.source_file == own and settings.config_flag() == f" --config {own}"
    assert load_settings().config_flag() == ""
    with pytest.raises(UncalibratedError, match=rf"`gatekeeper calibrate --config {own} --dataset"):
        check_calibrated(
            settings.gate,
            model="openai:e5-query",
            rule=RULE,
            catalog_hash="c",
            catalog="shop.yaml",
            config_flag=settings.config_flag(),
        )


def test_advised_commands_quote_paths_with_spaces_for_the_shell(tmp_path: Path) -> None:
    """A settings file and catalog under "My Shop/" are named quoted in the advised calibrate
    and index commands, so the pasted command reads them (unquoted, it named two arguments)."""
    shop = tmp_path / "My Shop"
    shop.mkdir()
    own, catalog = shop / "gk.yaml", shop / "my catalog.yaml"
    own.write_text(f"gate:\n  threshold: 0.3\n  calibrated_for: {{model: {MODEL}, rule: {RULE}}}\n")
    settings = load_settings(own, catalog=catalog)
    with pytest.raises(UncalibratedError) as caught:
        check_calibrated(
            settings.gate,
            model="openai:e5-query",
            rule=RULE,
            catalog_hash="c",
            catalog=str(catalog),
            config_flag=settings.config_flag(),
        )
    advised = str(caught.value).split("`gatekeeper calibrate", 1)[1].split("`", 1)[0]
    words = shlex.split(advised)
    assert words[words.index("--config") + 1] == str(own)
    assert words[words.index("--catalog") + 1] == str(catalog)
    index = shlex.split(settings.index_command())
    assert index[index.index("--config") + 1] == str(own)


def test_settings_built_in_code_are_pointed_to_load_settings() -> None:
    """Gatekeeper.from_settings(Settings()) has no calibration record: the error says to read
    the settings file with load_settings(), where the shipped calibration is."""
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.settings import Settings
    from gatekeeper.testing import HashingEmbedder

    gate = Gatekeeper.from_settings(Settings(), embedder=HashingEmbedder())
    with pytest.raises(UncalibratedError, match=r"never calibrated .*load_settings\(\)"):
        gate.check_calibrated()


def test_the_advised_command_carries_the_variables_that_chose_the_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule or model chosen in the environment is in the advised command (run literally in
    a fresh shell it calibrated the old rule); a key's value never is."""
    from gatekeeper.calibration import calibrate_hint

    monkeypatch.setenv("GATEKEEPER_GATE__RULE", "contrast")
    monkeypatch.setenv("GATEKEEPER_EMBEDDING__API_KEY", "sk-secret")
    monkeypatch.setenv("GATEKEEPER_UPSTREAM__BASE_URL", "http://x")
    hint = calibrate_hint(" --config my.yaml")
    assert hint.startswith("GATEKEEPER_GATE__RULE=contrast gatekeeper calibrate --config my.yaml")
    assert "sk-secret" not in hint and "UPSTREAM" not in hint


def test_the_advised_command_carries_only_the_embedding_variables_that_choose_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of the GATEKEEPER_EMBEDDING__* variables the advised command carries those that choose
    the model (an instruction quoted for the shell), not the graph cache, threads, batch size,
    timeout or key (it copied every one, GATEKEEPER_EMBEDDING__CACHE_DIR too)."""
    import shlex

    from gatekeeper.calibration import calibrate_hint

    for name in [n for n in os.environ if n.upper().startswith("GATEKEEPER_")]:
        monkeypatch.delenv(name)
    chosen = {
        "GATEKEEPER_EMBEDDING__MODEL": "/models/e5",
        "GATEKEEPER_EMBEDDING__QUERY_INSTRUCTION": "query: ",
        "GATEKEEPER_EMBEDDING__ADAPTER": "/adapters/shop-1",
    }
    other = {
        "GATEKEEPER_EMBEDDING__CACHE_DIR": "/cache",
        "GATEKEEPER_EMBEDDING__THREADS": "2",
        "GATEKEEPER_EMBEDDING__BATCH_SIZE": "8",
        "GATEKEEPER_EMBEDDING__TIMEOUT": "5",
        "GATEKEEPER_EMBEDDING__API_KEY": "sk-secret",
    }
    for name, value in {**chosen, **other}.items():
        monkeypatch.setenv(name, value)
    words = shlex.split(calibrate_hint())
    at = words.index("gatekeeper")
    assert dict(word.split("=", 1) for word in words[:at]) == chosen
    assert words[at + 1] == "calibrate"


def test_every_variable_the_advised_command_may_carry_is_a_setting() -> None:
    """The variables the calibrate hint copies are all names a setting reads."""
    from gatekeeper._variables import known_variables
    from gatekeeper.calibration import _SCALE_VARIABLES
    from gatekeeper.settings import Settings

    known, _ = known_variables(Settings)
    assert set(_SCALE_VARIABLES) <= known


def test_store_threshold_writes_the_record_and_reads_back(tmp_path: Path) -> None:
    """calibrate --write stores gate.calibrated_for beside the threshold, comments kept."""
    path = tmp_path / "gk.yaml"
    path.write_text("# my settings\ngate:\n  # why\n  threshold: 0.5\n", encoding="utf-8")
    store_threshold(path, 0.2569, "the command", record(MODEL, RULE, "abc"))
    text = path.read_text(encoding="utf-8")
    assert "# my settings" in text and "# why" in text
    loaded = load_settings(path)
    assert loaded.gate.threshold == pytest.approx(0.2569)
    assert loaded.gate.calibrated_for == record(MODEL, RULE, "abc")
    assert yaml.safe_load(text)["gate"]["calibrated_for"]["model"] == MODEL


def test_a_write_hint_names_a_settings_file_when_the_user_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no settings file of the user's, the stale hint's --write names YOUR_SETTINGS.yaml."""
    from structlog.testing import capture_logs

    from gatekeeper.testing import HashingEmbedder

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    made_for = record(HashingEmbedder().identity, "contrast", "an older catalog")
    gate = make_gate(
        tmp_path / "data", gate={"allow_uncalibrated": False, "calibrated_for": made_for}
    )
    with capture_logs() as logs:
        gate.check_calibrated()
    (hint,) = [entry["hint"] for entry in logs if entry["event"] == "gate.calibration_stale"]
    assert "`gatekeeper calibrate --config YOUR_SETTINGS.yaml --dataset " in hint
    assert hint.endswith(f"--write --catalog {gate.settings.catalog}`")

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "gatekeeper.yaml").write_text("gate: {}\n", encoding="utf-8")
    with capture_logs() as logs:
        gate.check_calibrated()
    assert "gatekeeper calibrate --dataset " in logs[0]["hint"]
    assert "YOUR_SETTINGS" not in logs[0]["hint"]
    own = tmp_path / "mine.yaml"
    own.write_text("gate: {}\n", encoding="utf-8")
    assert load_settings(own).write_flag() == f" --config {own}"


def test_a_write_hint_for_another_catalog_names_a_new_settings_file(tmp_path: Path) -> None:
    """With --catalog naming another catalog than the settings file serves, the advised
    `calibrate --write` goes to a new file named after it (the file would refuse it)."""
    (tmp_path / "a.yaml").write_text("intents: []\n", encoding="utf-8")
    own = tmp_path / "mine.yaml"
    own.write_text("catalog: a.yaml\n", encoding="utf-8")
    other = tmp_path / "shop_de.yaml"
    assert load_settings(own, catalog=other).write_flag() == " --config gatekeeper-shop_de.yaml"
    assert load_settings(own, catalog=tmp_path / "a.yaml").write_flag() == f" --config {own}"
    assert load_settings(own).write_flag() == f" --config {own}"


def test_a_refused_threshold_mentions_chats_only_when_the_conversation_settings_are_stale() -> None:
    """Another model's threshold is refused with --conversations advised (as optional) only
    when the conversation settings too were calibrated for another model."""
    alone = _gate(calibrated_for=record(MODEL, RULE, "c"))
    both = _gate(
        calibrated_for=record(MODEL, RULE, "c"),
        conversations_calibrated_for=record(MODEL, RULE, "c"),
    )
    said = {}
    for name, gate in (("alone", alone), ("both", both)):
        with pytest.raises(UncalibratedError) as raised:
            check_calibrated(
                gate, model="openai:e5-query", rule=RULE, catalog_hash="c", catalog="x"
            )
        said[name] = str(raised.value)
    assert "--conversations" not in said["alone"]
    assert "if you serve chats, add --conversations CHATS.jsonl" in said["both"]
