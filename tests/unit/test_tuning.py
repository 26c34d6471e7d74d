"""`gatekeeper tune` and `eval --tune` on the hashing embedder: the adapter's training data,
determinism, atomic writing, the adapted embedder's identity, settings and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from gatekeeper import tuning
from gatekeeper.cli import app
from gatekeeper.embedding import AdaptedEmbedder, build_embedder
from gatekeeper.embedding.adapted import adapt, load_adapter
from gatekeeper.errors import CatalogError, ConfigError
from gatekeeper.eval.datasets import load_dataset
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.report import render_markdown
from gatekeeper.eval.schema import EvalOptions
from gatekeeper.eval.settings_file import store_adapter
from gatekeeper.settings import CalibrationRecord, EmbeddingSettings, load_settings
from gatekeeper.testing import HashingEmbedder, make_gate, tiny_catalog
from gatekeeper.tuning import TuneConfig, tune_adapter, tuning_texts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FAST = TuneConfig(steps=8)


def _tune(tmp_path: Path, **kwargs: Any) -> tuning.TuneResult:
    kwargs.setdefault("config", FAST)
    kwargs.setdefault("adapters_dir", tmp_path / "adapters")
    return tune_adapter(tiny_catalog(), HashingEmbedder(), name="tiny", **kwargs)


def test_training_texts_are_the_catalog_and_the_generic_set() -> None:
    """In-domain by intent; off-topic = the catalog's block + the generic English set, without
    lines that repeat an exemplar."""
    catalog = tiny_catalog()
    texts = tuning_texts(catalog)
    assert texts.intents == {i.name: list(i.exemplars) for i in catalog.intents}
    assert texts.off_topic[:3] == list(catalog.off_topic.exemplars)
    assert texts.language == "en" and texts.n_generic > 500
    assert not {t.casefold() for t in texts.off_topic} & {
        t.casefold() for ts in texts.intents.values() for t in ts
    }


def test_a_generic_line_repeating_an_exemplar_is_dropped() -> None:
    generic = tuning.generic_off_topic("en")[0]
    catalog = tiny_catalog().model_copy(deep=True)
    raw = catalog.model_dump()
    raw["intents"][0]["exemplars"] = [*raw["intents"][0]["exemplars"], generic.upper()]
    from gatekeeper.catalog import parse_catalog

    texts = tuning_texts(parse_catalog(raw))
    assert generic not in texts.off_topic


def _bike_catalog(off_topic: list[str]) -> Any:
    """The tiny catalog with a flat-tyre intent (near the generic "how do I change a flat
    tire"), and ``off_topic`` as its off-topic lines."""
    from gatekeeper.catalog import parse_catalog

    raw = tiny_catalog().model_dump()
    raw["intents"] = [
        *raw["intents"],
        {"name": "flat_tyre", "exemplars": ["how do I fix a flat tire on my bike", "flat tire"]},
    ]
    raw["off_topic"]["exemplars"] = off_topic
    return parse_catalog(raw)


def test_a_catalog_holding_the_generic_set_gets_none_of_the_lines_it_lacks() -> None:
    """An init-made catalog (its off-topic lines mostly generic ones) trains on its own block
    only: a generic line init cut, or that the owner deleted ("how do I change a flat tire"
    at a bike shop), does not come back."""
    generic = tuning.generic_off_topic("en")
    deleted = "how do I change a flat tire"
    block = ["my own off-topic line", *[t for t in generic[:200] if t != deleted]]
    texts = tuning_texts(_bike_catalog(block))  # no embedding needed to see that
    assert texts.off_topic == block and texts.n_generic == 0
    assert deleted not in texts.off_topic


def test_tune_leaves_out_the_generic_lines_init_would_cut() -> None:
    """A catalog of its own off-topic lines gets the generic set minus exactly the lines
    `gatekeeper init`'s cut leaves out for the same exemplars and model."""
    from gatekeeper.scaffold import scaffold_catalog

    catalog = _bike_catalog(["tell me a joke", "write a poem"])
    embedder = HashingEmbedder()
    texts = tuning_texts(catalog, embedder.embed)
    scaffold = scaffold_catalog(catalog, embedder)
    left_out = set(tuning.generic_off_topic("en")) - set(texts.off_topic)
    assert "how do I change a flat tire" in left_out
    assert left_out == {d.text for d in scaffold.dropped}
    assert texts.off_topic[2:] == [t for t in tuning.generic_off_topic("en") if t not in left_out]


def test_chinese_catalogs_get_the_chinese_generic_set() -> None:
    from gatekeeper.catalog import parse_catalog

    catalog = parse_catalog(
        {
            "intents": [
                {"name": "a", "exemplars": ["我的订单在哪里", "查询订单"]},
                {"name": "b", "exemplars": ["我要退款", "退货怎么办"]},
            ]
        }
    )
    texts = tuning_texts(catalog)
    assert texts.language == "zh" and texts.off_topic[0] in tuning.generic_off_topic("zh")


def test_one_intent_is_refused() -> None:
    from gatekeeper.catalog import parse_catalog

    with pytest.raises(CatalogError, match="two intents"):
        tuning_texts(parse_catalog({"intents": [{"name": "a", "exemplars": ["x", "y"]}]}))


def test_split_holds_out_a_tenth_seeded() -> None:
    texts = tuning_texts(tiny_catalog())
    first, again = tuning.split_holdout(texts, 0.1, 0), tuning.split_holdout(texts, 0.1, 0)
    assert first == again
    assert all(len(first.held[n]) == 1 for n in ("order_status", "refund_request"))
    assert first.held["greeting"] == []  # two exemplars: nothing held out
    assert len(first.off_held) == round(len(texts.off_topic) * 0.1)
    assert not set(first.off_held) & set(first.off_train)


def test_deterministic_under_a_seed(tmp_path: Path) -> None:
    """Two runs with the same seed: the same W (to 1e-6) and the same adapter hash."""
    first = _tune(tmp_path, out=None, adapters_dir=tmp_path / "a")
    second = _tune(tmp_path, out=None, adapters_dir=tmp_path / "b")
    np.testing.assert_allclose(first.adapter.weights, second.adapter.weights, atol=1e-6)
    assert first.adapter.hash == second.adapter.hash
    other = _tune(tmp_path, adapters_dir=tmp_path / "c", seed=1)
    assert other.adapter.hash != first.adapter.hash


def test_adapter_directory_and_manifest(tmp_path: Path) -> None:
    result = _tune(tmp_path)
    assert result.path.parent == tmp_path / "adapters"
    assert result.path.name == f"tiny-{result.adapter.hash[:12]}"
    assert sorted(p.name for p in result.path.iterdir()) == ["W.npy", "manifest.json"]
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["method"] == "linear-adapter"
    assert manifest["base_embedder"] == "hashing:256"
    assert manifest["catalog_hash"] == tiny_catalog().content_hash()
    assert manifest["seed"] == 0 and manifest["steps"] == 8
    assert manifest["hyperparameters"]["lam"] == 0.01
    assert set(manifest["heldout"]["frozen"]) == {
        "intent_accuracy",
        "auroc_in_vs_off",
        "auroc_loio_vs_off",
    }
    for key in ("train_seconds", "created_at", "gatekeeper_version", "weights_sha256"):
        assert key in manifest
    assert manifest["dist_from_identity"] > 0  # it learned something


def test_progress_is_reported_per_step(tmp_path: Path) -> None:
    steps: list[tuple[int, int]] = []
    embedded: list[int] = []
    _tune(
        tmp_path,
        train_progress=lambda step, total, loss: steps.append((step, total)),
        embed_progress=embedded.append,
    )
    assert steps == [(i, 8) for i in range(1, 9)]
    assert sum(embedded) == sum(len(i.exemplars) for i in tiny_catalog().intents) + len(
        tuning_texts(tiny_catalog()).off_topic
    )


def test_a_failure_mid_training_leaves_no_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception (or Ctrl-C) during training leaves no adapter directory, not even a
    temporary one."""

    def interrupt(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, train_progress=interrupt)
    assert not (tmp_path / "adapters").exists() or not list((tmp_path / "adapters").iterdir())

    def fail_saving(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tuning.np, "save", fail_saving)
    with pytest.raises(OSError, match="disk full"):
        _tune(tmp_path)
    assert list((tmp_path / "adapters").iterdir()) == []


def test_rewriting_the_same_adapter_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    _tune(tmp_path, out=out, adapters_dir=None)
    again = _tune(tmp_path, out=out, adapters_dir=None, seed=3)
    assert load_adapter(out).hash == again.adapter.hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_adapted_embedder_applies_w_and_renormalises(tmp_path: Path) -> None:
    result = _tune(tmp_path)
    base = HashingEmbedder()
    adapted = adapt(base, result.path)
    texts = ["where is my order", "tell me a joke"]
    expected = base.embed(texts) @ result.adapter.weights
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = adapted.embed(texts)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert adapted.identity == f"hashing:256+adapter:{result.adapter.hash[:12]}"
    assert adapted.dimension == 256 and adapted.embed([]).shape == (0, 256)


def test_an_adapter_for_another_model_is_refused(tmp_path: Path) -> None:
    result = _tune(tmp_path)
    with pytest.raises(ConfigError, match="trained on 'hashing:256'"):
        adapt(HashingEmbedder(128), result.path)
    with pytest.raises(ConfigError, match="not a directory"):
        load_adapter(tmp_path / "nothing")
    np.save(result.path / "W.npy", result.adapter.weights * 2)
    with pytest.raises(ConfigError, match="does not match its manifest"):
        load_adapter(result.path)


def test_build_embedder_wraps_when_adapter_is_set(tmp_path: Path) -> None:
    """embedding.adapter wraps the configured model (a local model is not loaded to check the
    base identity: the adapter records it, and a mismatch is refused before any work)."""
    result = _tune(tmp_path)
    with pytest.raises(ConfigError, match="trained on 'hashing:256'"):
        build_embedder(EmbeddingSettings(adapter=result.path))
    assert not isinstance(build_embedder(EmbeddingSettings()), AdaptedEmbedder)


def test_the_index_and_threshold_of_the_frozen_model_are_refused(tmp_path: Path) -> None:
    """The adapted model has a new identity: its own store, and a foreign threshold refused."""
    from gatekeeper.errors import UncalibratedError
    from gatekeeper.gate import Gatekeeper

    result = _tune(tmp_path)
    frozen = make_gate(tmp_path / "data")
    adapted_embedder = adapt(HashingEmbedder(), result.path)
    adapted = Gatekeeper.from_settings(
        frozen.settings, catalog=frozen.catalog, embedder=adapted_embedder
    )
    assert adapted.store.name != frozen.store.name
    gate_settings = frozen.settings.gate.model_copy(
        update={
            "allow_uncalibrated": False,
            "calibrated_for": CalibrationRecord(model="hashing:256", rule="contrast"),
        }
    )
    strict = Gatekeeper(
        settings=frozen.settings.model_copy(update={"gate": gate_settings}),
        catalog=frozen.catalog,
        embedder=adapted_embedder,
        store=adapted.store,
    )
    with pytest.raises(UncalibratedError, match="model 'hashing:256'"):
        strict.check_calibrated()


def test_adapter_path_in_a_settings_file_is_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "gatekeeper.yaml"
    config.parent.mkdir()
    config.write_text("embedding:\n  adapter: adapters/x\n", encoding="utf-8")
    assert load_settings(config).embedding.adapter == config.parent / "adapters" / "x"


def test_store_adapter_keeps_the_file(tmp_path: Path) -> None:
    result = _tune(tmp_path)
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(
        "# mine\nembedding:\n  batch_size: 32  # keep\ngate:\n  threshold: 0.3\n", encoding="utf-8"
    )
    store_adapter(config, result.path, note="tuned")
    text = config.read_text()
    assert "# mine" in text and "batch_size: 32  # keep" in text and "threshold: 0.3" in text
    assert yaml.safe_load(text)["embedding"]["adapter"] == str(result.path.resolve())
    empty = tmp_path / "new.yaml"
    store_adapter(empty, result.path)
    assert load_settings(empty).embedding.adapter == result.path.resolve()


def test_eval_tune_trains_on_the_catalog_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval --tune: the trainer sees the catalog's texts, never the calibration or test file;
    the adapted gate is indexed in its own store, calibrated and evaluated, and the report
    says how to serve the tuned model."""
    seen: list[str] = []
    real_texts, real_tune = tuning.tuning_texts, tuning.tune_adapter

    def spy_texts(catalog: Any, embed: Any = None) -> tuning.TuningTexts:
        texts = real_texts(catalog, embed)
        seen.extend(t for ts in texts.intents.values() for t in ts)
        seen.extend(texts.off_topic)
        return texts

    def spy_tune(catalog: Any, embedder: Any, **kwargs: Any) -> tuning.TuneResult:
        original = embedder.embed

        def embed(texts: Any, **kw: Any) -> Any:
            seen.extend(texts)
            return original(texts, **kw)

        embedder.embed = embed
        try:
            return real_tune(catalog, embedder, **{**kwargs, "config": FAST})
        finally:
            del embedder.embed

    monkeypatch.setattr(tuning, "tuning_texts", spy_texts)
    monkeypatch.setattr(tuning, "tune_adapter", spy_tune)
    gate = make_gate(tmp_path / "data")
    plan = EvalPlan(
        datasets=(FIXTURES / "tiny_eval.jsonl",),
        calibrate_on=FIXTURES / "tiny_calibration.jsonl",
        target_pass_rate=0.85,
        tune=True,
        options=EvalOptions(latency_sample=0, bootstrap=0),
    )
    report, evaluated = evaluate_gate(gate, plan)
    catalog_texts = {t for i in gate.catalog.intents for t in i.exemplars}
    catalog_texts |= set(gate.catalog.off_topic.exemplars) | set(tuning.generic_off_topic("en"))
    assert seen and set(seen) <= catalog_texts
    held_out_data = {
        e.text
        for path in ("tiny_eval.jsonl", "tiny_calibration.jsonl")
        for e in load_dataset(FIXTURES / path).examples
    } - catalog_texts
    assert held_out_data and not held_out_data & set(seen)
    assert isinstance(evaluated.embedder, AdaptedEmbedder)
    assert evaluated.store.name != gate.store.name
    assert report.meta["embedding_model"].startswith("hashing:256+adapter:")
    assert report.meta["tuned"]["adapter"].startswith(str(tmp_path / "data" / "adapters"))
    assert evaluated.settings.gate.calibrated_for is not None
    assert evaluated.settings.gate.calibrated_for.model == evaluated.embedder.identity
    adopt = f"set embedding.adapter: {report.meta['tuned']['adapter']} in the settings file"
    assert adopt in " ".join(render_markdown(report).split())  # how to serve what was measured


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file with its own data dir; the CLI's embedders are the hashing embedder."""
    monkeypatch.setattr("gatekeeper.gate.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: HashingEmbedder())
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(
        f"# my settings\ndata_dir: {tmp_path / 'data'}\ngate:\n  rule: density\n",
        encoding="utf-8",
    )
    return path


def test_tune_command_writes_the_adapter_and_the_setting(config: Path, tmp_path: Path) -> None:
    """`tune --write` into a file serving the catalog saves an adapter, writes its setting, and
    advises the rebuild and the recalibration with the user's own --config (the file serves
    the catalog: no --catalog needed)."""
    config.write_text(
        config.read_text() + f"catalog: {FIXTURES / 'tiny_catalog.yaml'}\n", encoding="utf-8"
    )
    result = CliRunner().invoke(
        app,
        ["tune", "--config", str(config), "--catalog", str(FIXTURES / "tiny_catalog.yaml"),
         "--steps", "5", "--write"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    adapters = list((tmp_path / "data" / "adapters").iterdir())
    assert len(adapters) == 1 and adapters[0].name.startswith("tiny_catalog-")
    out = result.output
    assert f"GATEKEEPER_EMBEDDING__ADAPTER={adapters[0]}" in out
    assert f"  gatekeeper index --rebuild --config {config}\n" in out
    assert f"  gatekeeper calibrate --config {config} --dataset" in out
    assert "density AUROC" in out
    assert load_settings(config).embedding.adapter == adapters[0]
    assert "# my settings" in config.read_text()


def test_tune_refuses_an_out_it_cannot_write_before_training(config: Path, tmp_path: Path) -> None:
    """`tune --out` under a file exits 2 naming the path before any training (a traceback,
    exit 1, after it)."""
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["tune", "--config", str(config), "--catalog", str(FIXTURES / "tiny_catalog.yaml"),
         "--steps", "5", "--out", str(blocker / "t")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot be written" in result.output and "not a directory" in result.output


def test_tune_command_out_and_a_bad_catalog(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "my-adapter"
    result = CliRunner().invoke(
        app,
        ["tune", "--config", str(config), "--catalog", str(FIXTURES / "tiny_catalog.yaml"),
         "--steps", "3", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_adapter(out).manifest["steps"] == 3
    assert "embedding" not in config.read_text()  # no --write: the file is untouched
    assert load_settings(config).embedding.adapter is None
    bad = CliRunner().invoke(app, ["tune", "--config", str(config), "--catalog", "nope.yaml"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_a_tuned_model_worse_on_held_out_data_is_warned_about(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A held-out metric lower after tuning (intent accuracy 0.787 → 0.723 was seen) is a
    warning naming it; equal or better ones are not."""
    from gatekeeper.cli.tune import _print_heldout

    manifest = {
        "data": {
            "exemplars_heldout": 50,
            "exemplars_train": 450,
            "off_topic_heldout": 20,
            "off_topic_train": 180,
        },
        "heldout": {
            "frozen": {"auroc_in_vs_off": 0.95, "intent_accuracy": 0.787},
            "adapted": {"auroc_in_vs_off": 0.97, "intent_accuracy": 0.723},
        },
    }
    _print_heldout(manifest, "adapted")
    err = " ".join(capsys.readouterr().err.split())
    assert "nearest-exemplar intent accuracy 0.787 → 0.723" in err
    assert "density AUROC" not in err.split("warning:")[1]
    manifest["heldout"]["adapted"]["intent_accuracy"] = 0.79
    _print_heldout(manifest, "adapted")
    assert "warning" not in capsys.readouterr().err


def test_tune_out_never_replaces_a_directory_of_other_files(tmp_path: Path) -> None:
    """`--out` naming a directory that is no earlier tuned model (no manifest.json) is refused
    before training, its files untouched (it was renamed aside and deleted); an earlier
    artifact may be replaced."""
    from gatekeeper.artifacts import MANIFEST_FILE, check_replaceable, publish, scratch_dir
    from gatekeeper.errors import InputError

    mine = tmp_path / "models"
    (mine / "deeper").mkdir(parents=True)
    (mine / "keep.txt").write_text("a")
    with pytest.raises(InputError, match="not an earlier tuned model"):
        check_replaceable(mine)
    with pytest.raises(InputError):
        publish(scratch_dir(tmp_path, "x"), mine)
    assert (mine / "keep.txt").read_text() == "a" and (mine / "deeper").is_dir()
    earlier = tmp_path / "adapter"
    earlier.mkdir()
    (earlier / MANIFEST_FILE).write_text("{}")
    fresh = scratch_dir(tmp_path, "y")
    (fresh / MANIFEST_FILE).write_text('{"new": 1}')
    (fresh / "model.safetensors").write_bytes(b"w")
    (fresh / "model.safetensors").chmod(0o600)  # as the encoder's writer leaves it
    umask = os.umask(0o022)
    try:
        publish(fresh, earlier)
    finally:
        os.umask(umask)
    assert (earlier / MANIFEST_FILE).read_text() == '{"new": 1}'
    assert (earlier / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_tune_out_that_links_to_an_earlier_model_replaces_the_link(tmp_path: Path) -> None:
    """Publishing over a symbolic link to an earlier model replaces the link, leaves the model
    it pointed to as it was, and leaves no hidden copy behind."""
    from gatekeeper.artifacts import MANIFEST_FILE, publish, scratch_dir

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / MANIFEST_FILE).write_text("{}")
    link = tmp_path / "adapter"
    link.symlink_to(earlier)
    fresh = scratch_dir(tmp_path, "y")
    (fresh / MANIFEST_FILE).write_text('{"new": 1}')
    publish(fresh, link)
    assert not link.is_symlink() and (link / MANIFEST_FILE).read_text() == '{"new": 1}'
    assert (earlier / MANIFEST_FILE).read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "earlier"]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 2])
def test_the_intent_term_keeps_intents_apart(seed: int) -> None:
    """Intents that share the domain's direction: the domain objective alone blurs them
    (held-out nearest-exemplar accuracy falls); the intent term keeps it higher."""
    rng = np.random.default_rng(seed)
    d, per = 16, 30
    centres = rng.normal(size=(4, d))
    centres[:, 0] += 3  # the direction every intent of the domain shares

    def intents(n: int) -> np.ndarray:
        return _unit(np.repeat(centres, n, 0) + rng.normal(size=(4 * n, d)))

    def off_topic(n: int) -> np.ndarray:
        return _unit(rng.normal(size=(n, d)) - np.eye(d)[0])

    x, off, held, off_held = intents(per), off_topic(80), intents(10), off_topic(40)
    labels, held_labels = np.repeat(np.arange(4), per), np.repeat(np.arange(4), 10)
    accuracy = {}
    for weight in (0.0, 1.0):
        config = TuneConfig(steps=100, intent=weight, lr=2e-2)
        w, _ = tuning.fit_linear(x, labels, off, config, seed=0)
        held_out = tuning.heldout_metrics(w, (x, labels), (held, held_labels), off_held, 5)
        accuracy[weight] = held_out["intent_accuracy"]
    assert accuracy[1.0] > accuracy[0.0]


def test_tune_advises_a_settings_file_for_the_write_when_the_user_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tune --catalog C` with no settings file of the user's advises the adapted model's index
    and a calibrate --write into a settings file of C's own (which it creates serving C)."""
    monkeypatch.setattr("gatekeeper.embedding.build_embedder", lambda settings: HashingEmbedder())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEKEEPER_CONFIG", raising=False)
    monkeypatch.setenv("GATEKEEPER_DATA_DIR", str(tmp_path / "data"))
    catalog = FIXTURES / "tiny_catalog.yaml"
    result = CliRunner().invoke(app, ["tune", "--catalog", str(catalog), "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert f"gatekeeper index --rebuild --catalog {catalog}\n" in result.output
    assert (
        f"gatekeeper calibrate --config gatekeeper-tiny_catalog.yaml --catalog {catalog} "
        "--dataset" in result.output
    )
    assert "GATEKEEPER_EMBEDDING__ADAPTER=" in result.output.split("Then run:")[1]


def test_the_held_out_line_says_what_was_held_out() -> None:
    """The held-out title gives the real share (25% on a small catalog), not a flat 10%."""
    from gatekeeper.cli.tune import held_out_title

    title = held_out_title(
        {
            "exemplars_heldout": 3,
            "exemplars_train": 9,
            "off_topic_heldout": 60,
            "off_topic_train": 540,
        }
    )
    assert title.startswith(
        "held out: 3 of 12 exemplars (25%: 10% of each intent, at least one of an intent "
        "with three or more) and 60 of 600 off-topic lines (10%)"
    )
    assert "90%" not in title


def test_eval_tune_reports_the_adapter_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval --tune` reports its adapter as an absolute path even with a relative data dir."""
    from gatekeeper.eval.gates import tuned_gate

    monkeypatch.chdir(tmp_path)
    _, meta = tuned_gate(make_gate(Path("data")))
    assert Path(meta["adapter"]).is_absolute()
    assert meta["adapter"].startswith(str(tmp_path / "data" / "adapters"))


def test_eval_tune_advice_for_another_catalog_runs_as_printed(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After eval --tune --catalog C, doing what the advice says (set catalog and adapter in
    the named settings file, run its index command, then the calibrate command) works: the
    index command names that file (it rebuilt the default catalog) and the calibrate --write
    is not refused for a file that serves another catalog."""
    import re
    import shlex

    real_tune = tuning.tune_adapter
    monkeypatch.setattr(
        tuning, "tune_adapter", lambda *a, **kw: real_tune(*a, **{**kw, "config": FAST})
    )
    monkeypatch.chdir(tmp_path)
    catalog = FIXTURES / "tiny_catalog.yaml"
    result = CliRunner().invoke(app, [
        "eval", "--config", str(config), "--tune", "--catalog", str(catalog),
        "--dataset", str(FIXTURES / "tiny_eval.jsonl"),
        "--calibrate-on", str(FIXTURES / "tiny_calibration.jsonl"), "--target-pass-rate", "0.85",
        "--out", str(tmp_path / "r"), "--latency-sample", "0", "--bootstrap", "0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    found = re.search(r"set catalog: (\S+) and embedding\.adapter: (\S+) in (\S+) \(create", said)
    assert found, said
    assert Path(found[1]) == catalog.resolve()
    index = re.search(r"run `(gatekeeper index[^`]*)`", said)
    assert index and index[1] == f"gatekeeper index --config {found[3]} --rebuild"
    settings_file = tmp_path / found[3]
    settings_file.write_text(f"catalog: {found[1]}\nembedding:\n  adapter: {found[2]}\n")
    code = CliRunner().invoke(app, shlex.split(index[1])[1:])
    assert code.exit_code == 0, code.output
    command = said.split("apply with: ", 1)[1].split(" tuned: ", 1)[0]
    done = CliRunner().invoke(app, shlex.split(command)[1:])
    assert done.exit_code == 0, done.output
    written = load_settings(settings_file)
    assert written.catalog == catalog.resolve() and written.gate.calibrated_for is not None
    assert written.embedding.adapter == Path(found[2])


def test_the_encoder_progress_ends_on_the_loss_the_manifest_records() -> None:
    """The fine-tune's progress bar ends on the last logged loss, the manifest's final_loss (it
    showed the loss of the step before: the trainer logs a step's loss after its step end)."""
    from gatekeeper.finetune import LossReport

    shown: list[float] = []
    report = LossReport(lambda step, total, loss: shown.append(loss))
    for step, loss in ((1, 0.5), (2, 0.0267), (3, 0.0204)):
        report.stepped(step, 3)  # the trainer's order: step end, then the step's log
        report.logged(step, 3, {"loss": loss})
    assert shown[-1] == report.last == 0.0204
