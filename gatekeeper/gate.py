"""The :class:`Gatekeeper`: one decision core behind every interface.

settings → catalog → embedder → Chroma query → decision rule → route → log. The model and the
collection are loaded once, on first use (or on :meth:`Gatekeeper.ready`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gatekeeper.calibration import check_calibrated, tune_hint
from gatekeeper.catalog import Catalog, check_intent_names, load_catalog
from gatekeeper.chroma_client import open_lazily
from gatekeeper.conversation import (
    NO_TEXT,
    UNREADABLE,
    FollowupPolicy,
    Said,
    Turn,
    route_conversation,
    word_count,
)
from gatekeeper.decision import Decision, Judged, Route, Thresholds, judge, to_decision
from gatekeeper.embedding import Embedder, Vectors, build_embedder
from gatekeeper.embedding.adapted import ForeignAdapterError, adapter_catalog_warning
from gatekeeper.errors import (
    ConfigError,
    EmbeddingError,
    GatekeeperError,
    IndexMissingError,
    InputError,
    ModelNotFoundError,
    StoreError,
)
from gatekeeper.logging import Logger, get_logger, message_id
from gatekeeper.outage import Outage, ends_outage
from gatekeeper.refusals import without_refused
from gatekeeper.rules import DecisionRule, build_rule
from gatekeeper.said import turns_said
from gatekeeper.settings import Settings, load_settings
from gatekeeper.store import ExemplarStore, IndexInfo, SyncReport, collection_name
from gatekeeper.turn_cache import TurnVectors
from gatekeeper.types import OFF_TOPIC, ON_ERROR, Message, OnError, Progress, batch_of


class Gatekeeper:
    """Decides, for each customer message, whether it goes to the LLM."""

    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        embedder: Embedder,
        store: ExemplarStore,
        rule: DecisionRule | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.rule = rule or build_rule(settings.gate.rule, settings.gate.density_k)
        self._use_catalog(catalog)
        self.followup_policy = FollowupPolicy(
            max_words=settings.gate.followup_max_words,
            off_topic_max=settings.gate.followup_off_topic_max,
            off_topic_gap=settings.gate.followup_off_topic_gap,
            session_margin=settings.gate.session_margin,
        )
        self._turn_vectors = TurnVectors(settings.gate.turn_cache)
        self._log = logger or get_logger()
        self._outage = Outage(self._log)
        self._ready: IndexInfo | None = None
        self._lock = threading.Lock()
        self._ready_lock = threading.Lock()
        id_key = settings.logging.message_id_key
        self._id_key = id_key.get_secret_value().encode() if id_key else os.urandom(32)
        self._declined_hash: str | None = None
        self._closers: list[Callable[[], None]] = []  # what from_settings opened for this gate

    def close(self) -> None:
        """Release what :meth:`from_settings` opened (an embedded Chroma's files, HTTP pools;
        not a store or embedder passed in); a later check opens them again. Also ``with``."""
        for close in self._closers:
            close()

    def __enter__(self) -> Gatekeeper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _use_catalog(self, catalog: Catalog) -> None:
        """Serve ``catalog``: its intents, replies and per-intent thresholds."""
        check_intent_names(self.settings.gate.intent_thresholds, catalog)
        gate = self.settings.gate
        self.thresholds = Thresholds.from_catalog(
            catalog, gate.threshold, gate.intent_thresholds, gate.canned_min_similarity
        )
        self._known_intents = frozenset([OFF_TOPIC, *(i.name for i in catalog.intents)])
        replies = [i.reply for i in catalog.intents if i.reply]
        replies += [catalog.off_topic.reply, gate.unavailable_reply]
        self._fixed_replies = frozenset(reply.strip() for reply in replies)
        self._catalog_hash = catalog.content_hash()
        self.catalog = catalog

    def _follow_index(self) -> None:
        """After ``gatekeeper index`` elsewhere built the store from an edited catalog file
        (replicas, a live proxy), serve that file's catalog too: its new intents, replies and
        thresholds with its exemplars. Only when the file holds exactly what was indexed; read
        once per indexed version (no Chroma call: the hash of the build queries read)."""
        indexed = self.store.indexed_catalog_hash()
        if indexed is None or indexed in (self._catalog_hash, self._declined_hash):
            return
        self._declined_hash = indexed
        try:
            catalog = load_catalog(self.settings.catalog)
            if catalog.content_hash() != indexed:
                return  # not the file that was indexed (edited again, or another catalog)
            with self._lock:
                self._use_catalog(catalog)
        except GatekeeperError as exc:
            self._log.warning("catalog.reload_failed", error=str(exc), catalog_hash=indexed)
            return
        self._log.info("catalog.reloaded", catalog_hash=indexed, intents=len(catalog.intents))

    def refresh(self) -> None:
        """What a decision does first, for a server with none to make: load a build that
        another process synced (into the in-memory copy, when queries search one) and serve
        its catalog file if it holds what was indexed. Blocking; store failures raise."""
        if self.store.holds_copy:
            self.store.exemplars()
        self._follow_index()

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        config: Path | None = None,
        catalog: Catalog | Path | str | None = None,
        embedder: Embedder | None = None,
        store: ExemplarStore | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Gatekeeper:
        """Build a gate from settings (loaded from ``config``, env and ``overrides`` if not given).
        ``store`` is an :class:`~gatekeeper.store.ExemplarStore`, or a mapping of store
        settings like the other overrides (``store={"auto_sync": False}``).

        Nothing heavy happens here: the model loads, Chroma is opened and the index is checked
        on first use (so a gate built while a Chroma server is down follows ``gate.on_error``).
        The store is the catalog file's own (:func:`~gatekeeper.store.collection_name`)."""
        if isinstance(store, Mapping):  # the store *settings*, not an ExemplarStore
            overrides["store"], store = store, None
        settings = settings or load_settings(config, **overrides)
        source = Path(catalog) if isinstance(catalog, str | Path) else settings.catalog
        if not isinstance(catalog, Catalog):
            catalog = load_catalog(source)
        closers: list[Callable[[], None]] = []
        if embedder is None:
            try:
                embedder = build_embedder(settings.embedding)
            except ForeignAdapterError as exc:  # advise this gate's own tune command
                raise exc.advising(tune_hint(settings)) from None
            closers.append(embedder.close)
        if store is None:
            client = open_lazily(settings.store, settings.data_dir)  # Chroma may be down yet
            name = collection_name(settings.store.collection, source, embedder.identity)
            store = ExemplarStore.from_settings(client, name, settings.store)
            closers.append(client.close)
        gate = cls(settings=settings, catalog=catalog, embedder=embedder, store=store)
        gate._closers = closers
        return gate

    # -- index ---------------------------------------------------------------------------

    def index(
        self,
        *,
        rebuild: bool = False,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> SyncReport:
        """Build or sync the Chroma collection from the catalog."""
        with self._lock:
            report = self.store.sync(
                self.catalog, self.embedder, rebuild=rebuild, progress=progress, on_total=on_total
            )
            self._ready = self.store.check_compatible(self.embedder)
        self._log.info(
            "index.synced",
            collection=report.collection,
            added=report.added,
            updated=report.updated,
            deleted=report.deleted,
            unchanged=report.unchanged,
            rebuilt=report.rebuilt,
            seconds=round(report.seconds, 3),
        )
        return report

    def ready(self) -> IndexInfo:
        """Load the model and make sure the index is there, built with this model and current.

        With ``store.auto_sync`` a missing or stale index is built; a model mismatch is always
        refused (``gatekeeper index --rebuild`` fixes it).
        """
        if self._ready is not None:
            return self._ready
        with self._ready_lock:  # concurrent first requests: one loads and syncs, the rest wait
            if self._ready is not None:
                return self._ready
            return self._make_ready()

    async def aready(self) -> IndexInfo:
        """:meth:`ready` without blocking the event loop (a FastAPI lifespan's warm-up)."""
        return await asyncio.to_thread(self.ready)

    def _make_ready(self) -> IndexInfo:
        self.embedder.load()
        self.check_calibrated()
        info = self.store.info()
        stale = info is None or info.catalog_hash != self._catalog_hash
        if stale and info is not None:
            self.store.check_compatible(self.embedder)  # never sync over another model's index
        if stale:
            if not self.settings.store.auto_sync:
                if info is None:
                    command = self.settings.index_command()
                    raise IndexMissingError.for_collection(self.store.name, command)
                self._log.warning("index.stale", collection=info.collection)
            else:
                self.index()
        with self._lock:
            self._ready = self.store.check_compatible(self.embedder)
        return self._ready

    def check_calibrated(self) -> None:
        """Refuse a threshold calibrated for another model or rule (:mod:`.calibration`); warn
        when only the catalog changed, or the adapter was trained on another catalog."""
        if hint := adapter_catalog_warning(
            self.embedder, self._catalog_hash, tune_hint(self.settings)
        ):
            self._log.warning("gate.adapter_stale", hint=hint)
        outcome = check_calibrated(
            self.settings.gate,
            model=self.embedder.identity,
            rule=self.rule.name,
            catalog_hash=self._catalog_hash,
            catalog=str(self.settings.catalog),
            config_flag=self.settings.write_flag(),
            from_file=self.settings.source_file is not None,
        )
        for warning in outcome.warnings:
            self._log.warning("gate.calibration_stale", hint=warning)

    # -- decisions -----------------------------------------------------------------------

    def without_refused(self, messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """A chat (OpenAI-format messages) without the turns this gate refused: each of its
        off-topic replies, as the gate sent it, and the customer's messages right before it; what to
        send the LLM once a later turn is admitted (it would otherwise be handed the request
        the gate turned away). The proxy does this unless ``server.forward_refused_turns``;
        see :func:`~gatekeeper.refusals.without_refused`."""
        return without_refused(messages, self.refusals)

    @property
    def refusals(self) -> frozenset[str]:
        """The texts of this gate's refusals as it sends them (stripped): its catalog's
        off-topic reply. The ``unavailable_reply`` is none: that turn was never judged."""
        return frozenset({self.catalog.off_topic.reply.strip()})

    def check(self, message: Message, *, on_error: OnError | None = None) -> Decision:
        """Decide one message (a text or a conversation)."""
        return self.check_many([message], on_error=on_error)[0]

    async def acheck(self, message: Message, *, on_error: OnError | None = None) -> Decision:
        """:meth:`check` without blocking the event loop."""
        return await asyncio.to_thread(self.check, message, on_error=on_error)

    async def acheck_many(
        self, messages: Sequence[Message], *, on_error: OnError | None = None
    ) -> list[Decision]:
        """:meth:`check_many` without blocking the event loop."""
        return await asyncio.to_thread(self.check_many, messages, on_error=on_error)

    def check_many(
        self,
        messages: Sequence[Message],
        *,
        on_error: OnError | None = None,
        progress: Progress | None = None,
    ) -> list[Decision]:
        """Decide many messages with one batched embedding pass and one store query.

        ``on_error`` says what happens when the gate itself fails (model or Chroma):
        ``raise``, or ``fail_open``/``fail_closed`` decisions; default ``gate.on_error``.
        Client mistakes (empty or oversized messages) always raise :class:`InputError`.
        """
        policy = self.settings.gate.on_error if on_error is None else on_error
        if policy not in ON_ERROR:  # a typo must not turn into refusing everyone
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, not {policy!r}")
        texts = self._turns_to_judge(messages)
        try:
            self.ready()  # loads the model once; not part of any decision's latency
            started = time.perf_counter()
            calls: set[str] = set()
            judged = self._judge(texts, progress, calls)
            if ends_outage(self._outage.cause, calls):
                self._outage.succeeded()
            ms = (time.perf_counter() - started) * 1000 / max(1, len(texts))
            return [self.conclude(turns, latency_ms=ms) for turns in judged]
        except (EmbeddingError, StoreError) as exc:
            if policy == "raise" or isinstance(exc, ModelNotFoundError):
                raise  # a missing model is a setup mistake, not a failure to ride out
            return [self._finish(self._fallback(exc, policy), turns[-1][0], 0.0) for turns in texts]

    def probe_embedder(self) -> None:
        """During a model outage, one tiny embedding: a success ends it, a failure raises."""
        if not (cause := self._outage.cause) or not issubclass(cause, EmbeddingError):
            return
        try:
            self.embedder.embed(["ready?"])
        except EmbeddingError as exc:
            self._outage.failed(exc)
            raise
        self._outage.succeeded()

    def conclude(self, turns: Sequence[Turn], *, latency_ms: float = 0.0) -> Decision:
        """The live decision on judged ``turns``: :meth:`route` at the gate's thresholds, with
        its message id, shadow flag and latency, logged as ``gate.decided``."""
        return self._finish(self.route(turns), turns[-1].text, latency_ms)

    def _finish(self, decision: Decision, text: str, latency_ms: float) -> Decision:
        done = decision.model_copy(
            update={
                "latency_ms": latency_ms,
                # no text (attachments only): nothing to identify it by, rather than one id
                # shared by every photo
                "message_id": message_id(text, self._id_key) if text else None,
                "shadow": self.settings.gate.shadow,
            }
        )
        self._log_decision(done, text)
        return done

    def judge_many(
        self, messages: Sequence[Message], *, progress: Progress | None = None
    ) -> list[list[Turn]]:
        """Each message's customer turns, judged alone: what routing needs at any threshold
        (the eval's calibration and sweep route these with :meth:`route`). Gate failures raise."""
        texts = self._turns_to_judge(messages)
        self.ready()
        return self._judge(texts, progress, set())

    def route(
        self,
        turns: Sequence[Turn],
        *,
        threshold: float | None = None,
        policy: FollowupPolicy | None = None,
    ) -> Decision:
        """The decision on judged ``turns`` (see :meth:`judge_many`), at the gate's thresholds
        and conversation settings, or with another global ``threshold`` or ``policy``. Pure: the
        same function every interface uses."""
        thresholds = (
            self.thresholds if threshold is None else self.thresholds.with_default(threshold)
        )
        routed = route_conversation(
            turns,
            catalog=self.catalog,
            thresholds=thresholds,
            policy=policy or self.followup_policy,
        )
        return to_decision(turns[-1].judged, routed)

    def validate(self, message: Message) -> None:
        """Raise the :class:`~gatekeeper.errors.InputError` that :meth:`check` would raise for
        ``message`` (empty, too long, a role no chat has, ...), with no model or store call:
        to check what a caller sent before doing anything with it."""
        self._turns(message)

    def _turns_to_judge(self, messages: Sequence[Message]) -> list[list[Said]]:
        """Each message's customer turns, checked: an input mistake raises InputError, in a
        batch naming the message's position (``messages[500]: ...``)."""
        out = []
        for position, message in enumerate(batch := batch_of(messages)):
            try:
                out.append(self._turns(message))
            except InputError as exc:
                if len(batch) == 1:
                    raise
                raise type(exc)(f"messages[{position}]: {exc}") from exc
        return out

    def _turns(self, message: Message) -> list[Said]:
        """The customer turns to judge (:func:`gatekeeper.said.turns_said`)."""
        limit = self.settings.gate.max_message_chars
        return turns_said(message, fixed_replies=self._fixed_replies, limit=limit)

    def _judge(
        self, texts: list[list[Said]], progress: Progress | None, calls: set[str]
    ) -> list[list[Turn]]:
        """One embedding pass and one store query for every distinct turn of ``texts`` (what
        was called, ``embedder`` and ``store``, added to ``calls``)."""
        self._follow_index()
        unique = list(dict.fromkeys(said.text for turns in texts for said in turns if said.text))
        judged: dict[str, Judged] = {"": NO_TEXT}  # a turn of attachments only
        if unique:
            judged.update(self._judge_texts(unique, progress, calls))
        return [
            [
                Turn(
                    said.text,
                    judged[said.text],
                    word_count(said.text),
                    said.asked,
                    no_text=not said.text,
                    attached=said.attached,
                )
                for said in turns
            ]
            for turns in texts
        ]

    def _judge_texts(
        self, texts: list[str], progress: Progress | None, calls: set[str]
    ) -> dict[str, Judged]:
        """Each distinct text judged: embedded in the form the model reads (see
        :meth:`~gatekeeper.embedding.Embedder.legible`), or :data:`UNREADABLE`."""
        forms = dict(zip(texts, self.embedder.legible(texts), strict=True))
        judged = {text: UNREADABLE for text, form in forms.items() if form is None}
        embedded = list(dict.fromkeys(form for form in forms.values() if form is not None))
        if progress is not None and len(embedded) < len(texts):
            progress(len(texts) - len(embedded))  # not embedded: done
        if not embedded:
            return judged

        def embed(missing: list[str]) -> Vectors:
            calls.add("embedder")
            return self.embedder.embed(missing, progress=progress)

        vectors = self._turn_vectors.embed(embedded, embed, progress)
        known = self._known_intents
        # An index shared with a replica on another catalog version (a rolling deploy, or
        # auto_sync off) may hold intents this catalog lacks: those are ignored.
        found = dict(zip(embedded, self.store.query(vectors), strict=True))
        calls.add("store")
        for text, form in forms.items():
            if form is not None:
                judged[text] = judge([n for n in found[form] if n.intent in known], self.rule)
        return judged

    def _fallback(self, exc: Exception, policy: OnError) -> Decision:
        route = Route.LLM if policy == "fail_open" else Route.OFF_TOPIC
        self._outage.failed(exc, policy)
        return Decision(
            route=route,
            intent=None,
            score=1.0 if route is Route.LLM else -1.0,
            threshold=self.settings.gate.threshold,
            reason=f"the gate failed ({type(exc).__name__}: {exc}); policy {policy}",
            # refused for want of a decision, not for being off-topic: say so
            reply=self.settings.gate.unavailable_reply if route is Route.OFF_TOPIC else None,
            gate_error=type(exc).__name__,
        )

    def _log_decision(self, decision: Decision, text: str) -> None:
        fields = decision.summary()
        if self.settings.logging.log_text:
            fields["text"] = text
        self._log.info("gate.decided", **fields)


__all__ = ["Gatekeeper"]
