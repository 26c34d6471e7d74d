"""The Gatekeeper core on the hashing embedder: checks, batching, errors, logging."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gatekeeper.catalog import parse_catalog
from gatekeeper.decision import Route
from gatekeeper.errors import (
    ConfigError,
    EmbeddingError,
    EmptyMessageError,
    InputError,
    MessageTooLongError,
    ModelNotFoundError,
    StoreUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import Settings
from gatekeeper.testing import HashingEmbedder, make_gate, tiny_catalog


def test_in_domain_off_topic_and_canned(tiny_gate: Gatekeeper) -> None:
    """Shop questions are forwarded, off-topic ones refused, greetings answered."""
    assert tiny_gate.check("where is my order?").route is Route.LLM
    refused = tiny_gate.check("tell me a joke")
    assert refused.route is Route.OFF_TOPIC
    assert refused.reply == "Sorry, I only help with orders."
    canned = tiny_gate.check("hello")
    assert (canned.route, canned.reply) == (Route.CANNED, "Hello! How can I help?")


def test_check_many_embeds_once(tiny_gate: Gatekeeper) -> None:
    """check_many decides every message with a single embedding batch."""
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    before = embedder.calls
    decisions = tiny_gate.check_many(["track my order", "write a poem", "refund my money"])
    assert embedder.calls == before + 1
    assert [d.route for d in decisions] == [Route.LLM, Route.OFF_TOPIC, Route.LLM]
    assert all(d.message_id and d.latency_ms > 0 for d in decisions)


def test_validate_raises_what_check_would_without_a_model_call(tiny_gate: Gatekeeper) -> None:
    """validate raises the input mistakes check would (empty, not a chat, a role no chat has,
    a lone surrogate) and accepts a good message or chat, with no embedding."""
    embedder = tiny_gate.embedder
    assert isinstance(embedder, HashingEmbedder)
    before = embedder.calls
    with pytest.raises(EmptyMessageError, match=r"^the message is empty$"):
        tiny_gate.validate("  ")
    with pytest.raises(InputError, match="role"):
        tiny_gate.validate([{"role": "User", "content": "write me a poem"}])
    with pytest.raises(InputError, match="lone surrogate"):
        tiny_gate.validate("bad \ud800")
    tiny_gate.validate("where is my order")
    tiny_gate.validate([{"role": "user", "content": "where is my order"}])
    assert embedder.calls == before


async def test_acheck_matches_check(tiny_gate: Gatekeeper) -> None:
    """The async check gives the same decision as the sync one."""
    sync = tiny_gate.check("track my order")
    assert (await tiny_gate.acheck("track my order")).route is sync.route
    many = await tiny_gate.acheck_many(["track my order", "tell me a joke"])
    assert [d.route for d in many] == [Route.LLM, Route.OFF_TOPIC]


async def test_aready_warms_up_in_a_worker_thread(tmp_path: Path) -> None:
    """aready() loads the model and builds the index like ready(), off the event loop's thread
    (a FastAPI lifespan awaits it), and the first check then has nothing left to load."""
    import threading

    loaded_in: list[threading.Thread] = []

    class _Loading(HashingEmbedder):
        def load(self) -> None:
            loaded_in.append(threading.current_thread())

    gate = Gatekeeper.from_settings(
        make_gate(tmp_path).settings, catalog=tiny_catalog(), embedder=_Loading()
    )
    info = await gate.aready()
    assert loaded_in and loaded_in[0] is not threading.current_thread()
    assert info.count > 0 and gate.ready() is info
    gate.check("track my order")
    assert len(loaded_in) == 1


@pytest.mark.parametrize("text", ["", "   ", "\n", "\u200b", "\ufeff", "\x00", "\u200d\u200c "])
def test_empty_message(tiny_gate: Gatekeeper, text: str) -> None:
    """Empty messages, or only invisible characters (zero-width, BOM, NUL), are a client
    error: they would embed to an arbitrary vector."""
    with pytest.raises(EmptyMessageError):
        tiny_gate.check(text)


def test_a_photo_is_decided_without_embedding_anything(tiny_gate: Gatekeeper) -> None:
    """A turn of attachments only is decided from the conversation, and no empty text reaches
    the embedder: a follow-up after a served turn, forwarded alone, refused after a joke."""
    photo = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
    embedded: list[str] = []
    embed = tiny_gate.embedder.embed

    def recording(texts: Sequence[str], **kwargs: Any) -> Any:
        embedded.extend(texts)
        return embed(texts, **kwargs)

    tiny_gate.embedder.embed = recording  # type: ignore[method-assign]
    served = tiny_gate.check([{"role": "user", "content": "track my order"}, photo])
    assert served.route is Route.LLM and served.followup and served.intent == "order_status"
    assert served.message_id is None  # no text to identify it by
    alone = tiny_gate.check(photo)
    assert alone.route is Route.LLM and not alone.followup and alone.intent is None
    refused = tiny_gate.check([{"role": "user", "content": "tell me a joke"}, photo])
    assert refused.route is Route.OFF_TOPIC
    assert "" not in embedded


def test_a_greeting_with_a_photo_reaches_the_llm(tiny_gate: Gatekeeper) -> None:
    """ "hello" with an image part is forwarded (the canned greeting dropped the photo), alone,
    in a chat, and as a single chat message; "hello" alone is still greeted."""
    hello = {
        "role": "user",
        "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}],
    }
    for message in (hello, [hello], [{"role": "user", "content": "track my order"}, hello]):
        decision = tiny_gate.check(message)
        assert decision.route is Route.LLM and decision.reply is None
    assert tiny_gate.check({"role": "user", "content": "hello"}).route is Route.CANNED


def test_photos_and_texts_share_one_batch(tiny_gate: Gatekeeper) -> None:
    """A micro-batch mixing photos and texts decides each as it would alone."""
    photo = {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
    batch = [photo, "track my order", [{"role": "user", "content": "tell me a joke"}, photo]]
    alone = [tiny_gate.check(message).route for message in batch]
    together = [decision.route for decision in tiny_gate.check_many(batch)]
    assert together == alone == [Route.LLM, Route.LLM, Route.OFF_TOPIC]


def test_an_invisible_turn_after_a_refusal_is_no_way_past_the_gate(
    tiny_gate: Gatekeeper,
) -> None:
    """A zero-width space after a refused request is an empty message, not a turn to judge."""
    chat = [
        {"role": "user", "content": "tell me a joke"},
        {"role": "assistant", "content": "Sorry, I only help with orders."},
        {"role": "user", "content": "\u200b"},
    ]
    with pytest.raises(EmptyMessageError):
        tiny_gate.check(chat)


def test_too_long_message(tmp_path: Path) -> None:
    """Messages over gate.max_message_chars are refused with the limit named."""
    gate = make_gate(tmp_path, gate={"threshold": 0.35, "max_message_chars": 50})
    with pytest.raises(MessageTooLongError, match="limit is 50"):
        gate.check("x" * 51)


def test_conversation_followup_and_drift(tiny_gate: Gatekeeper) -> None:
    """A short follow-up after an order question passes; a joke mid-chat is refused."""
    chat: list[dict[str, Any]] = [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "Your order number, please?"},
        {"role": "user", "content": "NW-55120"},
    ]
    followup = tiny_gate.check(chat)
    assert followup.route is Route.LLM and followup.intent == "order_status"
    assert "follow-up" in followup.reason
    chat[-1] = {"role": "user", "content": "tell me a joke"}
    assert tiny_gate.check(chat).route is Route.OFF_TOPIC
    assert tiny_gate.check("NW-55120").route is Route.OFF_TOPIC


class _Broken(HashingEmbedder):
    def _encode(self, texts: list[str]) -> Any:
        raise EmbeddingError("model is gone")


@pytest.mark.parametrize(
    ("policy", "route"), [("fail_open", Route.LLM), ("fail_closed", Route.OFF_TOPIC)]
)
def test_gate_failure_policy(tmp_path: Path, policy: str, route: Route) -> None:
    """When the model fails, fail_open forwards and fail_closed refuses, marking the error."""
    working = make_gate(tmp_path)
    working.index()
    gate = Gatekeeper(
        settings=working.settings.model_copy(
            update={"gate": working.settings.gate.model_copy(update={"on_error": policy})}
        ),
        catalog=working.catalog,
        embedder=_Broken(),
        store=working.store,
    )
    gate._ready = working.ready()  # the index exists; only encoding fails
    decision = gate.check("where is my order")
    assert decision.route is route and decision.gate_error == "EmbeddingError"
    unavailable = gate.settings.gate.unavailable_reply  # not the off-topic reply
    assert decision.reply == (unavailable if route is Route.OFF_TOPIC else None)
    with pytest.raises(EmbeddingError):
        gate.check("where is my order", on_error="raise")


def test_logs_carry_decision_not_text(tiny_gate: Gatekeeper) -> None:
    """gate.decided has route, intent, score, threshold, latency, id and no raw text."""
    with capture_logs() as logs:
        tiny_gate.check("where is my order, my name is Jane Doe")
    event = next(e for e in logs if e["event"] == "gate.decided")
    assert {"route", "intent", "score", "threshold", "latency_ms", "message_id"} <= set(event)
    assert "Jane" not in repr(logs)


def test_log_text_setting_includes_text(tmp_path: Path) -> None:
    """With logging.log_text the raw text is logged."""
    gate = make_gate(tmp_path, logging={"log_text": True})
    with capture_logs() as logs:
        gate.check("where is my order, Jane")
    assert any(e.get("text") == "where is my order, Jane" for e in logs)


def test_stale_index_is_synced_on_first_use(tmp_path: Path) -> None:
    """With auto_sync, a gate whose catalog changed syncs the index before deciding."""
    first = make_gate(tmp_path)
    first.index()
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"].append({"name": "gift_cards", "exemplars": ["buy a gift card"]})
    from gatekeeper.catalog import parse_catalog

    second = make_gate(tmp_path, catalog=parse_catalog(raw))
    decision = second.check("buy a gift card")
    assert decision.intent == "gift_cards"


def test_shadow_marks_decisions(tmp_path: Path) -> None:
    """In shadow mode decisions are marked so wrappers forward everything."""
    gate = make_gate(tmp_path, gate={"threshold": 0.35, "shadow": True})
    decision = gate.check("tell me a joke")
    assert decision.route is Route.OFF_TOPIC and decision.shadow


def test_invalid_unicode_is_a_client_error_not_a_gate_failure(tiny_gate: Gatekeeper) -> None:
    """A lone surrogate is an InputError; it can never trip the fail-open policy."""
    from gatekeeper.errors import InputError

    with pytest.raises(InputError, match="not valid Unicode"):
        tiny_gate.check("poem \ud800", on_error="fail_open")


def test_neighbours_of_unknown_intents_are_ignored(tmp_path: Path) -> None:
    """An index holding an intent the catalog no longer has does not break decisions."""
    from gatekeeper.catalog import parse_catalog

    first = make_gate(tmp_path)
    first.index()
    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["name"] = "order_tracking"
    renamed = make_gate(tmp_path, catalog=parse_catalog(raw), store={"auto_sync": False})
    decision = renamed.check("where is my order", on_error="raise")
    assert decision.intent != "order_status"


def test_a_batch_input_mistake_names_the_message(tmp_path: Path) -> None:
    """In a batch, an empty, too long or invalid message is named by its position; a lone
    surrogate in an earlier turn says so."""
    gate = make_gate(tmp_path)
    batch = ["where is my order"] * 3 + ["x" * 5000]
    with pytest.raises(MessageTooLongError, match=r"^messages\[3\]: the message has 5000"):
        gate.check_many(batch)
    chat = [
        {"role": "user", "content": "where is my order \ud800"},
        {"role": "assistant", "content": "Which one?"},
        {"role": "user", "content": "the blue one"},
    ]
    with pytest.raises(InputError, match="an earlier turn is not valid Unicode"):
        gate.check(chat)


def test_a_missing_model_raises_whatever_on_error_says(tmp_path: Path) -> None:
    """A model that is not there is a setup mistake: ModelNotFoundError even under fail_open
    (it silently forwarded every message to the LLM)."""

    class Missing(HashingEmbedder):
        def load(self) -> None:
            raise ModelNotFoundError("embedding model 'nope-model' not found")

    settings = Settings(data_dir=tmp_path, gate={"threshold": 0.35, "allow_uncalibrated": True})
    gate = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=Missing())
    with pytest.raises(ModelNotFoundError):
        gate.check("where is my order", on_error="fail_open")


def test_the_logged_decision_says_what_a_dashboard_needs(tmp_path: Path) -> None:
    """gate.decided (and every summary: headers, LangChain metadata) carries nearest_intent,
    followup, shadow and gate_error: a fail_open decision was indistinguishable from a perfect
    match (route llm, score 1.0)."""

    class Failing(HashingEmbedder):
        def _encode(self, texts: list[str]) -> Any:
            raise EmbeddingError("the model crashed")

    settings = Settings(data_dir=tmp_path, gate={"threshold": 0.35, "allow_uncalibrated": True})
    gate = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=Failing())
    with capture_logs() as logs:
        decision = gate.check("where is my order", on_error="fail_open")
    summary = decision.summary()
    assert summary["gate_error"] == "EmbeddingError" and summary["route"] == "llm"
    assert {"nearest_intent", "followup", "shadow"} <= set(summary)
    (logged,) = [entry for entry in logs if entry["event"] == "gate.decided"]
    assert logged["gate_error"] == "EmbeddingError" and "followup" in logged


@pytest.mark.parametrize("role", ["assistant", "system", "tool"])
def test_a_single_message_that_is_not_the_customers_is_refused(tmp_path: Path, role: str) -> None:
    """One chat message of another role is an input mistake (it was judged as customer text);
    a user message, or one without a role, is judged."""
    gate = make_gate(tmp_path)
    with pytest.raises(InputError, match=f"must be the customer's .*not '{role}'"):
        gate.check({"role": role, "content": "where is my order"})
    assert gate.check({"role": "user", "content": "where is my order"}).admitted
    assert gate.check({"content": "where is my order"}).admitted


@pytest.mark.parametrize("typo", ["fail-open", "FAIL_OPEN", "ignore", "", 0, False])
def test_an_unknown_on_error_raises_instead_of_refusing_everyone(
    tiny_gate: Gatekeeper, typo: str
) -> None:
    """A per-call on_error that is no policy raises ConfigError naming the choices (it was
    taken for fail_closed, so a typo refused every customer once the gate failed)."""
    with pytest.raises(ConfigError, match="raise, fail_open, fail_closed, not " + repr(typo)):
        tiny_gate.check("where is my order?", on_error=typo)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "route"), [("fail_open", Route.LLM), ("fail_closed", Route.OFF_TOPIC)]
)
def test_a_gate_built_while_chroma_is_down_follows_on_error(
    tmp_path: Path, policy: str, route: Route
) -> None:
    """Gatekeeper.from_settings with a Chroma server that is down builds (Chroma opens on first
    use) and its decisions follow gate.on_error; building raised StoreUnavailableError whatever
    on_error said."""
    gate = make_gate(tmp_path, store={"host": "127.0.0.1", "port": 9}, gate={"on_error": policy})
    decision = gate.check("where is my order?")
    assert (decision.route, decision.gate_error) == (route, "StoreUnavailableError")
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:9"):
        gate.check("where is my order?", on_error="raise")


def test_a_chat_message_without_content_is_named(tiny_gate: Gatekeeper) -> None:
    """A single message object without 'content' says so, naming its keys (it said 'the
    message is empty')."""
    with pytest.raises(InputError, match=r"needs a 'content'.*text, files"):
        tiny_gate.check({"text": "where is my order?", "files": []})  # type: ignore[arg-type]


def test_a_reasoning_block_is_read_as_text(tiny_gate: Gatekeeper) -> None:
    """A LangChain reasoning block's text is judged like any text (it was taken for an
    attachment: forwarded unread as a first turn)."""
    message = [{"role": "user", "content": [{"type": "reasoning", "reasoning": "tell me a joke"}]}]
    assert tiny_gate.check(message).route is Route.OFF_TOPIC


class LegibleEmbedder(HashingEmbedder):
    """A hashing embedder whose model reads no emoji and reads full-width letters only as
    ASCII (as MiniLM's tokenizer does)."""

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        import unicodedata

        forms = [unicodedata.normalize("NFKC", t) for t in texts]
        return [None if all(ord(c) > 0x1F000 or c.isspace() for c in f) else f for f in forms]


def test_the_gate_embeds_what_the_model_reads(tmp_path: Path) -> None:
    """The gate embeds each text in the form the model reads, never a text it reads nothing
    of (decided without a score), and a progress bar still counts every text."""
    embedder = LegibleEmbedder()
    gate = Gatekeeper.from_settings(
        Settings(data_dir=tmp_path, gate={"threshold": 0.35, "allow_uncalibrated": True}),
        catalog=tiny_catalog(),
        embedder=embedder,
    )
    gate.index()
    embedder.encoded.clear()
    done: list[int] = []
    texts = ["🙂 🙂", "ｗｈｅｒｅ ｉｓ ｍｙ ｏｒｄｅｒ"]
    styled, plain = gate.judge_many(texts, progress=done.append)
    assert embedder.encoded == ["where is my order"] and sum(done) == 2
    assert styled[0].unreadable and not plain[0].unreadable
    assert plain[0].judged == gate.judge_many(["where is my order"])[0][0].judged
    assert gate.check("🙂 🙂").route is Route.OFF_TOPIC


def test_the_gates_own_replies_ask_nothing(tiny_gate: Gatekeeper) -> None:
    """A turn right after one of the gate's own replies (the greeting's "How can I help?", as
    sent or with white space around it) answered no question: judged on its own, it is not let
    through as an answer the way a reply to the LLM's own question is."""

    def asked(assistant: str) -> bool:
        chat = [
            {"role": "user", "content": "where is my order"},
            {"role": "assistant", "content": "It ships tomorrow."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": "sing me a song"},
        ]
        return tiny_gate.judge_many([chat])[0][-1].asked

    greeting = tiny_gate.catalog.intents[2].reply
    assert greeting == "Hello! How can I help?"
    assert not asked(greeting) and not asked(f"  {greeting}\n")
    assert asked("Could you give me the order number?")


def test_a_decomposed_message_is_judged_as_its_composed_exemplar(tmp_path: Path) -> None:
    """A model that reads text as given (a remote endpoint, the hashing fake) is sent messages
    in NFC, as the catalog's exemplars are read: "wo ist meine bestellung, café" typed
    decomposed (macOS, web forms) scores as typed composed."""
    import unicodedata

    raw = tiny_catalog().model_dump(mode="json")
    raw["intents"][0]["exemplars"].append("wo ist meine bestellung, café")
    gate = make_gate(tmp_path, catalog=parse_catalog(raw, source="de"))
    gate.index()
    composed = "wo ist meine bestellung, café"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    same, other = gate.check_many([composed, decomposed])
    assert other.score == pytest.approx(same.score) and other.intent == same.intent


def _open_files() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
def test_close_releases_chroma_and_a_later_check_opens_it_again(tmp_path: Path) -> None:
    """Gates on new data dirs closed after use hold no files open (each kept about ten until the
    process ended, and the 23rd test gate failed under a limit of 256); a check after close
    opens Chroma again, and `with` closes."""
    with make_gate(tmp_path / "warm") as warm:  # one-time opens (Chroma's, a log) first
        warm.check("where is my order?")
    before = _open_files()
    for n in range(5):
        with make_gate(tmp_path / f"g{n}") as gate:
            assert gate.check("where is my order?").route is Route.LLM
    assert _open_files() <= before + 5  # about ten per gate, fifty in all, before close()
    gate = make_gate(tmp_path / "again")
    gate.check("where is my order?")
    gate.close()
    assert gate.check("tell me a joke").route is Route.OFF_TOPIC
    gate.close()


def test_close_closes_the_embeddings_client_the_gate_made(tmp_path: Path) -> None:
    """A gate built for an embeddings endpoint closes the HTTP client it made on close(); an
    embedder's client passed in is its owner's and stays open."""
    import openai

    from gatekeeper.embedding.openai import OpenAIEmbedder

    endpoint = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    settings = Settings(data_dir=tmp_path, embedding=endpoint, gate={"allow_uncalibrated": True})
    gate = Gatekeeper.from_settings(settings, catalog=tiny_catalog())
    assert isinstance(gate.embedder, OpenAIEmbedder)
    made = gate.embedder._get_client()
    gate.close()
    assert made.is_closed()
    mine = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused")
    OpenAIEmbedder(settings.embedding, client=mine).close()
    assert not mine.is_closed()


@pytest.mark.parametrize("bad", [None, 5, b"where is my order"])
def test_a_message_of_no_kind_is_named_as_the_caller_passed_it(
    tiny_gate: Gatekeeper, bad: Any
) -> None:
    """check(None) names its parameter, `message`, and what it got (it said "'messages' must
    be a non-empty list of chat messages"); in a batch, the message's position."""
    kind = type(bad).__name__
    with pytest.raises(InputError, match=rf"^message must be a text, .* not {kind}$"):
        tiny_gate.check(bad)
    with pytest.raises(InputError, match=rf"^messages\[1\] must be a text, .* not {kind}$"):
        tiny_gate.check_many(["where is my order", bad])


def test_a_relative_data_dir_is_the_one_under_the_working_directory_of_the_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gates on the relative data dir '.gatekeeper' in two working directories (the first
    deleted since) each open their own Chroma: Chroma shares one database per path string, so
    the second reused the first's, gone ("attempt to write a readonly database", "no such
    table")."""
    import shutil

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = make_gate(Path(".gatekeeper"))
    first.index()
    shutil.rmtree(tmp_path / "a" / ".gatekeeper")
    monkeypatch.chdir(tmp_path / "b")
    with make_gate(Path(".gatekeeper")) as second:
        second.index()
        assert second.check("where is my order?").route is Route.LLM
    assert (tmp_path / "b" / ".gatekeeper" / "chroma").is_dir()
    first.close()
