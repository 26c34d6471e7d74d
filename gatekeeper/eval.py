"""The eval harness: how many LLM calls the gate saves, and how many customers it wrongly refuses.

Calls are **counted, not inferred**: every message goes through the real gate wrapping a
:class:`CountingBackend` (``gate.wrap(backend)``), and ``llm_calls`` is the number of calls that
actually reached it; ``llm_calls_saved`` is its complement.

Score-based metrics (AUROC, FPR at 95% TPR, the threshold sweep and calibration) use the
**single-message** rows: a single message's score does not depend on the threshold. A
conversation's outcome does (a short follow-up is rescued only when the turn before it was
forwarded), so conversations are counted in the headline rates and reported on their own, but
kept out of the score curves. A dataset of conversations only falls back to their last turns'
scores (``score_basis`` says which).

Calibration (:func:`choose_threshold`) picks the highest global threshold whose in-domain pass
rate (routed ``llm`` or ``canned``) on the calibration file reaches the target, then the gate is
rebuilt with it (:func:`with_threshold`) and applied unchanged to the evaluated datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from gatekeeper.datasets import Dataset, Example, load_datasets
from gatekeeper.decision import Decision, Route
from gatekeeper.errors import ConfigError, DatasetError, InputError
from gatekeeper.settings import EmbeddingSettings, PricingSettings, Settings

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.store import SyncReport

Advance = Callable[[int], None]
#: Makes one progress task: description -> (advance by n, set the total).
TaskFactory = Callable[[str], tuple[Advance, Advance]]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

BOOTSTRAP_LEVEL = 0.95
FOLLOWUP_PREFIX = "follow-up"


def no_progress(description: str) -> tuple[Advance, Advance]:
    """A task factory that shows nothing."""

    def ignore(n: int) -> None:
        return None

    return ignore, ignore


# -- the counting backend -----------------------------------------------------------------


class CountingBackend:
    """A backend that counts the calls that reach it and answers with a short fixed text."""

    reply = "(answer from the counting backend)"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        with self._lock:
            self.calls += 1
        return self.reply


# -- options and results ------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    """Knobs of one eval run (none of them changes a decision)."""

    latency_sample: int = 200
    bootstrap: int = 1000
    seed: int = 0
    off_topic_shares: tuple[float, ...] = (0.7,)
    chunk_size: int = 128
    max_listed: int = 500


@dataclass(frozen=True)
class Outcome:
    """One example, the gate's decision on it, and whether the backend was really called."""

    example: Example
    decision: Decision
    called: bool

    @property
    def passed(self) -> bool:
        """Not refused: forwarded to the LLM or answered by a canned in-domain reply."""
        return self.decision.route is not Route.OFF_TOPIC

    @property
    def rescued(self) -> bool:
        return self.decision.reason.startswith(FOLLOWUP_PREFIX)


@dataclass
class EvalRun:
    """What running a dataset through the gate produced, before any metric is computed."""

    outcomes: list[Outcome]
    llm_calls: int
    gate_ms: list[float] = field(default_factory=list)
    embed_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    counting_method: str = (
        "calls that reached a CountingBackend behind gate.wrap(); "
        "llm_calls_saved = n_queries - llm_calls"
    )


# -- report models (report.json) ------------------------------------------------------------


class Interval(BaseModel):
    """A bootstrap confidence interval."""

    low: float | None
    high: float | None


class Latency(BaseModel):
    """Gate latency per message, in milliseconds."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    n_sampled: int
    method: str
    embed_p50: float | None = None
    embed_p95: float | None = None
    embed_p99: float | None = None
    batch_ms_per_message: float | None = None


class Cost(BaseModel):
    """What the LLM calls cost with and without the gate (USD, from ``settings.pricing``)."""

    currency: str = "USD"
    llm_model: str
    llm_cost_per_call: float
    embedding_cost_per_message: float
    without_gate: float
    with_gate: float
    llm_cost_saved: float = Field(description="what the saved calls would have cost")
    embedding_cost: float
    net_saved: float
    net_saved_fraction: float | None
    net_saved_per_1k_messages: float | None


class TimeSaved(BaseModel):
    """LLM time not spent, from ``pricing.llm_seconds_per_call``."""

    llm_seconds_per_call: float
    llm_seconds_saved: float
    gate_seconds_added: float
    net_seconds_saved: float
    mean_response_s_without: float
    mean_response_s_with: float | None
    speedup: float | None


class Projection(BaseModel):
    """The measured admit rates applied to another traffic mix, per 1,000 messages."""

    off_topic_share: float
    llm_calls_per_1k: float
    saved_rate: float
    cost_per_1k_without: float
    cost_per_1k_with: float
    cost_saved_per_1k: float
    cost_reduction: float | None
    customers_wrongly_blocked_per_1k: float
    mean_response_s_without: float
    mean_response_s_with: float
    speedup: float | None


class IntentRow(BaseModel):
    """Pass rate of the in-domain messages labelled with one intent."""

    intent: str
    n: int
    passed: int
    pass_rate: float
    intent_match_rate: float | None = Field(
        None, description="share routed to this very intent (catalog intents only)"
    )


class SourceRow(BaseModel):
    """Headline numbers of one dataset file."""

    source: str
    n: int
    n_in_domain: int
    n_off_topic: int
    llm_calls: int
    in_domain_pass_rate: float | None
    off_topic_block_rate: float | None


class ConversationStats(BaseModel):
    """Multi-turn rows on their own."""

    n: int
    n_in_domain: int
    n_off_topic: int
    in_domain_pass_rate: float | None
    off_topic_block_rate: float | None
    rescued_followups: int


class Listed(BaseModel):
    """A message the report names: a customer wrongly blocked, or off-topic traffic let in."""

    source: str
    line: int
    text: str
    label_intent: str | None
    nearest_intent: str | None
    route: str
    score: float
    threshold: float
    reason: str


class SweepPoint(BaseModel):
    """What one global threshold would do (single-message rows)."""

    threshold: float
    llm_calls: int
    saved_rate: float
    wrongly_blocked: int
    in_domain_pass_rate: float | None
    false_block_rate: float | None
    off_topic_block_rate: float | None


class Calibration(BaseModel):
    """A threshold chosen on a calibration file alone."""

    source: str
    target_pass_rate: float
    threshold: float
    reached: bool
    in_domain_pass_rate: float | None
    off_topic_block_rate: float | None
    n_in_domain: int
    n_off_topic: int
    score_basis: str


class ScoreSamples(BaseModel):
    """Scores used for plots (not written to report.json)."""

    in_domain: list[float] = Field(default_factory=list)
    off_topic: list[float] = Field(default_factory=list)


class EvalReport(BaseModel):
    """Everything ``report.json`` holds."""

    n_queries: int
    n_in_domain: int
    n_off_topic: int
    n_single: int
    n_multi_turn: int
    llm_calls: int
    llm_calls_saved: int
    saved_rate: float
    canned_replies: int
    off_topic_replies: int
    in_domain_pass_rate: float | None
    false_block_rate: float | None
    off_topic_block_rate: float | None
    n_supported: int
    n_unsupported: int
    supported_pass_rate: float | None
    unsupported_pass_rate: float | None
    auroc: float | None
    fpr_at_95tpr: float | None
    score_basis: str
    threshold: float
    rule: str
    calibration: Calibration | None
    latency_ms: Latency
    cost: Cost
    time: TimeSaved
    projections: list[Projection]
    confidence_intervals: dict[str, Interval]
    bootstrap: dict[str, Any]
    counting: dict[str, Any]
    per_intent: list[IntentRow]
    by_source: list[SourceRow]
    conversations: ConversationStats | None
    wrongly_blocked: list[Listed]
    wrongly_admitted: list[Listed]
    canned_mismatches: list[Listed] = Field(
        description="in-domain messages answered by another intent's canned reply "
        "(passed, but the customer got e.g. a greeting to a delivery question)"
    )
    sweep: list[SweepPoint]
    meta: dict[str, Any]
    scores: ScoreSamples = Field(default_factory=ScoreSamples, exclude=True)


# -- building and preparing the gate ----------------------------------------------------------


def eval_collection_name(catalog_hash: str, embedding: EmbeddingSettings) -> str:
    """A Chroma collection name of its own for a catalog and an embedding setup."""
    model = embedding.model_dump(
        mode="json", exclude={"api_key", "batch_size", "timeout", "max_retries"}
    )
    payload = json.dumps({"catalog": catalog_hash, "embedding": model}, sort_keys=True)
    return "gk-eval-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def settings_for_catalog(settings: Settings, catalog_path: Path, catalog_hash: str) -> Settings:
    """``settings`` serving ``catalog_path`` from a collection of its own."""
    name = eval_collection_name(catalog_hash, settings.embedding)
    store = settings.store.model_copy(update={"collection": name})
    return settings.model_copy(update={"catalog": catalog_path, "store": store})


def with_gate_settings(gate: Gatekeeper, **changes: Any) -> Gatekeeper:
    """The same gate (model, store and catalog shared) with other ``gate.*`` settings."""
    from gatekeeper.gate import Gatekeeper

    gate_settings = gate.settings.gate.model_copy(update=changes)
    settings = gate.settings.model_copy(update={"gate": gate_settings})
    return Gatekeeper(
        settings=settings, catalog=gate.catalog, embedder=gate.embedder, store=gate.store
    )


def with_threshold(gate: Gatekeeper, threshold: float) -> Gatekeeper:
    """The same gate with another global threshold."""
    return with_gate_settings(gate, threshold=threshold)


def ensure_index(gate: Gatekeeper, task: TaskFactory = no_progress) -> SyncReport | None:
    """Load the model and index the gate's catalog when the index is missing or stale."""
    advance, set_total = task("loading the embedding model")
    set_total(1)
    gate.embedder.load()
    advance(1)
    info = gate.store.info()
    if info is not None and info.catalog_hash == gate.catalog.content_hash():
        return None
    advance, set_total = task("embedding exemplars")
    return gate.index(progress=advance, on_total=set_total)


def check_lengths(dataset: Dataset, limit: int) -> None:
    """Refuse, naming file and line, a message longer than the gate accepts."""
    for example in dataset.examples:
        if len(example.text) > limit:
            raise DatasetError(
                f"dataset {example.where}: the message has {len(example.text)} characters; "
                f"the gate's limit is {limit} (gate.max_message_chars)"
            )


def _chunks(items: Sequence[Example], size: int) -> list[Sequence[Example]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def decide_all(
    gate: Gatekeeper, dataset: Dataset, task: TaskFactory = no_progress, chunk_size: int = 128
) -> list[Decision]:
    """The gate's decisions on every example (no backend involved)."""
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    advance, set_total = task(f"scoring {dataset.name}")
    set_total(len(dataset))
    decisions: list[Decision] = []
    for chunk in _chunks(dataset.examples, chunk_size):
        decisions += gate.check_many([e.as_input() for e in chunk], on_error="raise")
        advance(len(chunk))
    return decisions


# -- scores, thresholds, calibration ----------------------------------------------------------


@dataclass(frozen=True)
class ScoreTable:
    """Threshold-independent view of decisions: what any global threshold would do.

    ``fixed`` holds an intent's own threshold (catalog or ``gate.intent_thresholds``) where one
    applies (NaN where the global threshold does); ``routable`` is False when no in-domain
    exemplar was near (never passes); ``canned`` marks intents answered by a fixed reply.
    """

    scores: FloatArray
    in_domain: BoolArray
    fixed: FloatArray
    routable: BoolArray
    canned: BoolArray

    def passes(self, threshold: float) -> BoolArray:
        """Which rows pass (llm or canned) at this global threshold."""
        limit = np.where(np.isnan(self.fixed), threshold, self.fixed)
        result: BoolArray = self.routable & (self.scores >= limit)
        return result

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def score_rows(outcomes: Sequence[Outcome]) -> tuple[list[Outcome], str]:
    """The rows whose scores are threshold-independent, and a word on which they are."""
    single = [o for o in outcomes if not o.example.multi_turn]
    if single:
        basis = (
            "single messages"
            if len(single) == len(outcomes)
            else "single messages; conversations reported separately"
        )
        return single, basis
    return list(outcomes), "last user turns of conversations (no single messages)"


def score_table(outcomes: Sequence[Outcome], gate: Gatekeeper) -> ScoreTable:
    """The :class:`ScoreTable` of ``outcomes`` under ``gate``'s catalog and intent thresholds."""
    per_intent = gate.thresholds.per_intent
    canned = {i.name for i in gate.catalog.intents if i.canned}
    intents = [o.decision.intent for o in outcomes]
    return ScoreTable(
        scores=np.array([o.decision.score for o in outcomes], dtype=np.float64),
        in_domain=np.array([o.example.in_domain for o in outcomes], dtype=bool),
        fixed=np.array(
            [per_intent.get(i, math.nan) if i is not None else math.nan for i in intents],
            dtype=np.float64,
        ),
        routable=np.array([i is not None for i in intents], dtype=bool),
        canned=np.array([i in canned for i in intents], dtype=bool),
    )


def floor_threshold(value: float, decimals: int = 4) -> float:
    """``value`` rounded down (a rounded threshold never blocks a message the exact one passed)."""
    scale = 10**decimals
    return float(max(-1.0, min(1.0, math.floor(value * scale) / scale)))


def check_target(target: float) -> None:
    """Refuse a target pass rate outside (0, 1] with :class:`InputError`."""
    if not 0.0 < target <= 1.0:
        raise InputError(f"the target pass rate must be above 0 and at most 1, got {target:g}")


def choose_threshold(table: ScoreTable, target: float) -> tuple[float, bool]:
    """The highest global threshold whose in-domain pass rate reaches ``target``.

    Returns ``(threshold, reached)``; when no threshold reaches the target (messages with no
    in-domain neighbour, or intents with their own high threshold), the lowest one is returned.
    """
    check_target(target)
    inside = table.in_domain
    n_in = int(inside.sum())
    if n_in == 0:
        raise DatasetError("the calibration data has no in_domain rows")
    variable = inside & table.routable & np.isnan(table.fixed)
    fixed_pass = int(
        (inside & table.routable & ~np.isnan(table.fixed) & (table.scores >= table.fixed)).sum()
    )
    need = math.ceil(target * n_in - 1e-9) - fixed_pass
    if need <= 0:
        return 1.0, True
    ranked = np.sort(table.scores[variable])[::-1]
    if need > ranked.shape[0]:
        return -1.0, False
    return floor_threshold(float(ranked[need - 1])), True


def calibrate(
    gate: Gatekeeper,
    dataset: Dataset,
    target: float,
    task: TaskFactory = no_progress,
    chunk_size: int = 128,
) -> Calibration:
    """Choose the threshold on ``dataset`` alone for the ``target`` in-domain pass rate."""
    decisions = decide_all(gate, dataset, task, chunk_size)
    outcomes = [Outcome(e, d, False) for e, d in zip(dataset.examples, decisions, strict=True)]
    rows, basis = score_rows(outcomes)
    table = score_table(rows, gate)
    threshold, reached = choose_threshold(table, target)
    passes = table.passes(threshold)
    return Calibration(
        source=dataset.name,
        target_pass_rate=target,
        threshold=threshold,
        reached=reached,
        in_domain_pass_rate=_rate(passes[table.in_domain]),
        off_topic_block_rate=_rate(~passes[~table.in_domain]),
        n_in_domain=int(table.in_domain.sum()),
        n_off_topic=int((~table.in_domain).sum()),
        score_basis=basis,
    )


def sweep(table: ScoreTable, operating: float, points: int = 101) -> list[SweepPoint]:
    """Saved calls vs wrongly blocked customers at a grid of global thresholds."""
    if len(table) == 0:
        return []
    low = math.floor(float(table.scores.min()) * 100) / 100
    high = math.ceil(float(table.scores.max()) * 100) / 100
    grid = sorted({*np.round(np.linspace(max(-1.0, low), min(1.0, high), points), 4), operating})
    return [sweep_point(table, float(t)) for t in grid]


def sweep_point(table: ScoreTable, threshold: float) -> SweepPoint:
    """What ``threshold`` would do to the rows of ``table``."""
    passes = table.passes(threshold)
    calls = int((passes & ~table.canned).sum())
    inside = table.in_domain
    return SweepPoint(
        threshold=threshold,
        llm_calls=calls,
        saved_rate=1 - calls / len(table),
        wrongly_blocked=int((inside & ~passes).sum()),
        in_domain_pass_rate=_rate(passes[inside]),
        false_block_rate=_rate(~passes[inside]),
        off_topic_block_rate=_rate(~passes[~inside]),
    )


def roc_metrics(table: ScoreTable) -> tuple[float | None, float | None]:
    """AUROC of the score (in-domain = positive) and the FPR where TPR first reaches 95%."""
    if table.in_domain.all() or not table.in_domain.any():
        return None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    auroc = float(roc_auc_score(table.in_domain, table.scores))
    fpr, tpr, _ = roc_curve(table.in_domain, table.scores)
    return auroc, float(fpr[int(np.argmax(tpr >= 0.95))])


# -- running ----------------------------------------------------------------------------------


def run_eval(
    gate: Gatekeeper,
    dataset: Dataset,
    options: EvalOptions | None = None,
    task: TaskFactory = no_progress,
) -> EvalRun:
    """Every example through the gate wrapping a :class:`CountingBackend`; latency measured."""
    options = options or EvalOptions()
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    counter = CountingBackend()
    gated = gate.wrap(counter)
    advance, set_total = task(f"judging {dataset.name}")
    set_total(len(dataset))
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for chunk in _chunks(dataset.examples, options.chunk_size):
        results = gated.batch_with_decisions([e.as_input() for e in chunk])
        outcomes += [
            Outcome(e, r.decision, bool(r.called)) for e, r in zip(chunk, results, strict=True)
        ]
        advance(len(chunk))
    run = EvalRun(outcomes=outcomes, llm_calls=counter.calls, seconds=time.perf_counter() - started)
    run.gate_ms, run.embed_ms = measure_latency(gate, dataset, options, task)
    return run


REPLAY_METHOD = (
    "requests the RecordingUpstream received, each message sent as a chat request to the "
    "gating proxy (uvicorn on loopback) in front of it; llm_calls_saved = n_queries - llm_calls"
)


def run_replay(
    gate: Gatekeeper,
    dataset: Dataset,
    options: EvalOptions | None = None,
    task: TaskFactory = no_progress,
) -> EvalRun:
    """Every example as a chat request through a real gating proxy in front of a recording
    upstream, both on loopback; ``llm_calls`` is what the upstream recorded. Decisions are read
    from the proxy's ``x-gatekeeper-*`` headers (scores to 4 decimals)."""
    import httpx

    from gatekeeper.backends import as_chat_messages
    from gatekeeper.server import create_app
    from gatekeeper.testing import LoopbackServer, RecordingUpstream

    options = options or EvalOptions()
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    advance, set_total = task(f"replaying {dataset.name} through the proxy")
    set_total(len(dataset))
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    with RecordingUpstream() as upstream:
        proxied = _replay_gate(gate, upstream.base_url)
        app = create_app(proxied.settings, gate=proxied)
        with LoopbackServer(app) as proxy, httpx.Client(base_url=proxy.url, timeout=120) as http:
            for example in dataset.examples:
                before = len(upstream.calls)
                body = {"model": "replay", "messages": as_chat_messages(example.as_input())}
                response = http.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    raise DatasetError(
                        f"dataset {example.where}: the proxy answered {response.status_code}: "
                        f"{response.text[:200]}"
                    )
                decision = decision_from_headers(response.headers)
                outcomes.append(Outcome(example, decision, len(upstream.calls) > before))
                advance(1)
        llm_calls = len(upstream.calls)
    run = EvalRun(
        outcomes=outcomes,
        llm_calls=llm_calls,
        seconds=time.perf_counter() - started,
        counting_method=REPLAY_METHOD,
    )
    run.gate_ms, run.embed_ms = measure_latency(gate, dataset, options, task)
    return run


def _replay_gate(gate: Gatekeeper, upstream_url: str) -> Gatekeeper:
    """``gate`` (model and store shared) configured to forward to ``upstream_url``, no auth."""
    from pydantic import SecretStr

    from gatekeeper.gate import Gatekeeper

    upstream = gate.settings.upstream.model_copy(
        update={"base_url": upstream_url, "api_key": SecretStr("replay")}
    )
    server = gate.settings.server.model_copy(update={"api_keys": []})
    settings = gate.settings.model_copy(update={"upstream": upstream, "server": server})
    return Gatekeeper(
        settings=settings, catalog=gate.catalog, embedder=gate.embedder, store=gate.store
    )


def decision_from_headers(headers: Mapping[str, str]) -> Decision:
    """The decision a proxy answer's ``x-gatekeeper-*`` headers describe."""
    from urllib.parse import unquote

    intent = unquote(headers.get("x-gatekeeper-intent", "none"))
    route = Route(headers["x-gatekeeper-route"])
    return Decision(
        route=route,
        intent=None if intent == "none" else intent,
        score=float(headers["x-gatekeeper-score"]),
        threshold=float(headers["x-gatekeeper-threshold"]),
        reason=f"replayed through the proxy: {route.value}",
        gate_error=headers.get("x-gatekeeper-gate-error"),
        message_id=headers.get("x-gatekeeper-message-id"),
    )


def measure_latency(
    gate: Gatekeeper, dataset: Dataset, options: EvalOptions, task: TaskFactory = no_progress
) -> tuple[list[float], list[float]]:
    """Per-message latency of single ``gate.check`` calls, and of the embedding model alone,
    side by side on a seeded sample of the dataset."""
    size = min(options.latency_sample, len(dataset))
    if size <= 0:
        return [], []
    rng = np.random.default_rng(options.seed)
    picked = [dataset.examples[int(i)] for i in rng.choice(len(dataset), size=size, replace=False)]
    gate.check(picked[0].as_input(), on_error="raise")  # warm-up, not measured
    advance, set_total = task("timing single messages")
    set_total(size)
    gate_ms, embed_ms = [], []
    for example in picked:
        started = time.perf_counter()
        gate.check(example.as_input(), on_error="raise")
        gate_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        gate.embedder.embed([example.text])
        embed_ms.append((time.perf_counter() - started) * 1000)
        advance(1)
    return gate_ms, embed_ms


# -- metrics ------------------------------------------------------------------------------------


def _rate(flags: npt.NDArray[Any] | Sequence[bool]) -> float | None:
    array = np.asarray(flags, dtype=bool)
    return float(array.mean()) if array.size else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_summary(run: EvalRun) -> Latency:
    """p50/p95/p99 of single-message gate latency, and the embedding model's alone."""
    batch = [o.decision.latency_ms for o in run.outcomes]
    return Latency(
        p50=_percentile(run.gate_ms, 50),
        p95=_percentile(run.gate_ms, 95),
        p99=_percentile(run.gate_ms, 99),
        mean=float(np.mean(run.gate_ms)) if run.gate_ms else None,
        n_sampled=len(run.gate_ms),
        method=(
            f"wall time of single gate.check() calls on a seeded sample of {len(run.gate_ms)} "
            "messages (embedding + Chroma query + rule), after a warm-up call; embed_* is the "
            "embedding model alone on the same messages; batch_ms_per_message is the batched "
            "pass's time divided by its size"
        ),
        embed_p50=_percentile(run.embed_ms, 50),
        embed_p95=_percentile(run.embed_ms, 95),
        embed_p99=_percentile(run.embed_ms, 99),
        batch_ms_per_message=float(np.mean(batch)) if batch else None,
    )


def llm_cost_per_call(pricing: PricingSettings) -> float:
    """USD per LLM call at the configured prices and average token counts."""
    return (
        pricing.avg_input_tokens * pricing.llm_input_per_1m
        + pricing.avg_output_tokens * pricing.llm_output_per_1m
    ) / 1e6


def embedding_cost_per_message(pricing: PricingSettings) -> float:
    """USD the gate's embedding of one message costs (0 for a local model)."""
    return pricing.avg_message_tokens * pricing.embedding_per_1m / 1e6


def cost_summary(n: int, llm_calls: int, pricing: PricingSettings) -> Cost:
    """The cost lines for ``n`` messages of which ``llm_calls`` reached the LLM."""
    per_call = llm_cost_per_call(pricing)
    per_message = embedding_cost_per_message(pricing)
    without = n * per_call
    embedding = n * per_message
    with_gate = llm_calls * per_call + embedding
    net = without - with_gate
    return Cost(
        llm_model=pricing.llm_model,
        llm_cost_per_call=per_call,
        embedding_cost_per_message=per_message,
        without_gate=without,
        with_gate=with_gate,
        llm_cost_saved=(n - llm_calls) * per_call,
        embedding_cost=embedding,
        net_saved=net,
        net_saved_fraction=net / without if without else None,
        net_saved_per_1k_messages=net / n * 1000 if n else None,
    )


def time_summary(
    n: int, llm_calls: int, pricing: PricingSettings, gate_mean_ms: float | None
) -> TimeSaved:
    """LLM seconds saved against the seconds the gate adds to every message."""
    per_call = pricing.llm_seconds_per_call
    gate_s = (gate_mean_ms or 0.0) / 1000
    saved = (n - llm_calls) * per_call
    added = n * gate_s
    with_gate = (llm_calls * per_call + added) / n if n else None
    return TimeSaved(
        llm_seconds_per_call=per_call,
        llm_seconds_saved=saved,
        gate_seconds_added=added,
        net_seconds_saved=saved - added,
        mean_response_s_without=per_call,
        mean_response_s_with=with_gate,
        speedup=per_call / with_gate if with_gate else None,
    )


def project(
    share: float,
    admit_in: float,
    admit_off: float,
    false_block: float,
    pricing: PricingSettings,
    gate_mean_ms: float | None,
) -> Projection:
    """The measured admit rates applied to traffic with ``share`` off-topic messages."""
    calls = 1000 * ((1 - share) * admit_in + share * admit_off)
    per_call = llm_cost_per_call(pricing)
    without = 1000 * per_call
    with_gate = calls * per_call + 1000 * embedding_cost_per_message(pricing)
    seconds = pricing.llm_seconds_per_call
    mean_with = calls / 1000 * seconds + (gate_mean_ms or 0.0) / 1000
    return Projection(
        off_topic_share=share,
        llm_calls_per_1k=calls,
        saved_rate=1 - calls / 1000,
        cost_per_1k_without=without,
        cost_per_1k_with=with_gate,
        cost_saved_per_1k=without - with_gate,
        cost_reduction=(without - with_gate) / without if without else None,
        customers_wrongly_blocked_per_1k=1000 * (1 - share) * false_block,
        mean_response_s_without=seconds,
        mean_response_s_with=mean_with,
        speedup=seconds / mean_with if mean_with else None,
    )


def bootstrap_intervals(
    outcomes: Sequence[Outcome], table: ScoreTable, draws: int, seed: int
) -> dict[str, Interval]:
    """Percentile bootstrap intervals (rows resampled with replacement, seeded)."""
    if draws <= 0 or not outcomes:
        return {}
    rng = np.random.default_rng(seed)
    inside = np.array([o.example.in_domain for o in outcomes])
    passed = np.array([o.passed for o in outcomes])
    saved = np.array([not o.called for o in outcomes])
    idx = rng.integers(0, len(outcomes), size=(draws, len(outcomes)), dtype=np.int32)
    ins, pas = inside[idx], passed[idx]
    n_in, n_off = ins.sum(axis=1), (~ins).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pass_rate = (ins & pas).sum(axis=1) / n_in
        block_rate = (~ins & ~pas).sum(axis=1) / n_off
    samples = {
        "saved_rate": saved[idx].mean(axis=1),
        "in_domain_pass_rate": pass_rate,
        "false_block_rate": 1 - pass_rate,
        "off_topic_block_rate": block_rate,
        "auroc": _bootstrap_auroc(table, draws, rng),
    }
    return {name: _interval(values) for name, values in samples.items()}


def _bootstrap_auroc(table: ScoreTable, draws: int, rng: np.random.Generator) -> FloatArray:
    from sklearn.metrics import roc_auc_score

    values = np.full(draws, np.nan)
    if len(table) == 0:
        return values
    for i in range(draws):
        pick = rng.integers(0, len(table), size=len(table))
        labels = table.in_domain[pick]
        if labels.all() or not labels.any():
            continue
        values[i] = roc_auc_score(labels, table.scores[pick])
    return values


def _interval(values: npt.NDArray[Any]) -> Interval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(low=None, high=None)
    tail = (1 - BOOTSTRAP_LEVEL) / 2 * 100
    return Interval(
        low=float(np.percentile(finite, tail)), high=float(np.percentile(finite, 100 - tail))
    )


def per_intent_rows(outcomes: Sequence[Outcome]) -> list[IntentRow]:
    """Pass rate per labelled intent of the in-domain rows, worst first."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.example.in_domain:
            groups[o.example.intent or "(no intent)"].append(o)
    rows = []
    for intent, members in groups.items():
        passed = sum(o.passed for o in members)
        match = None
        if members[0].example.intent and not members[0].example.unsupported:
            match = sum(o.decision.intent == intent for o in members) / len(members)
        rows.append(
            IntentRow(
                intent=intent,
                n=len(members),
                passed=passed,
                pass_rate=passed / len(members),
                intent_match_rate=match,
            )
        )
    return sorted(rows, key=lambda r: (r.pass_rate, r.intent))


def source_rows(outcomes: Sequence[Outcome]) -> list[SourceRow]:
    """Headline numbers per dataset file."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.example.source].append(o)
    return [_source_row(source, members) for source, members in groups.items()]


def _source_row(source: str, members: Sequence[Outcome]) -> SourceRow:
    inside = [o for o in members if o.example.in_domain]
    outside = [o for o in members if not o.example.in_domain]
    return SourceRow(
        source=source,
        n=len(members),
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        llm_calls=sum(o.called for o in members),
        in_domain_pass_rate=_rate([o.passed for o in inside]),
        off_topic_block_rate=_rate([not o.passed for o in outside]),
    )


def conversation_stats(outcomes: Sequence[Outcome]) -> ConversationStats | None:
    """The multi-turn rows on their own (None when there are none)."""
    multi = [o for o in outcomes if o.example.multi_turn]
    if not multi:
        return None
    inside = [o for o in multi if o.example.in_domain]
    outside = [o for o in multi if not o.example.in_domain]
    return ConversationStats(
        n=len(multi),
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        in_domain_pass_rate=_rate([o.passed for o in inside]),
        off_topic_block_rate=_rate([not o.passed for o in outside]),
        rescued_followups=sum(o.rescued for o in multi),
    )


def canned_mismatches(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Labelled in-domain messages answered with the canned reply of another intent."""
    return [
        o
        for o in outcomes
        if o.decision.route is Route.CANNED
        and o.example.intent is not None
        and o.example.intent != o.decision.intent
    ]


def listed(outcome: Outcome) -> Listed:
    """An outcome as a row of the report's lists."""
    d = outcome.decision
    return Listed(
        source=Path(outcome.example.source).name,
        line=outcome.example.line,
        text=outcome.example.text,
        label_intent=outcome.example.intent,
        nearest_intent=d.intent,
        route=d.route.value,
        score=d.score,
        threshold=d.threshold,
        reason=d.reason,
    )


def build_report(
    gate: Gatekeeper,
    run: EvalRun,
    options: EvalOptions | None = None,
    calibration: Calibration | None = None,
    meta: Mapping[str, Any] | None = None,
) -> EvalReport:
    """All metrics of an eval run."""
    options = options or EvalOptions()
    outcomes = run.outcomes
    if not outcomes:
        raise DatasetError("nothing was evaluated")
    inside = [o for o in outcomes if o.example.in_domain]
    outside = [o for o in outcomes if not o.example.in_domain]
    supported = [o for o in inside if not o.example.unsupported]
    unsupported = [o for o in inside if o.example.unsupported]
    rows, basis = score_rows(outcomes)
    table = score_table(rows, gate)
    auroc, fpr95 = roc_metrics(table)
    latency = latency_summary(run)
    pricing = gate.settings.pricing
    n = len(outcomes)
    pass_rate = _rate([o.passed for o in inside])
    false_block = None if pass_rate is None else 1 - pass_rate
    admit_in = _rate([o.called for o in inside]) or 0.0
    admit_off = _rate([o.called for o in outside]) or 0.0
    counted_by_rows = sum(o.called for o in outcomes)
    return EvalReport(
        n_queries=n,
        n_in_domain=len(inside),
        n_off_topic=len(outside),
        n_single=sum(not o.example.multi_turn for o in outcomes),
        n_multi_turn=sum(o.example.multi_turn for o in outcomes),
        llm_calls=run.llm_calls,
        llm_calls_saved=n - run.llm_calls,
        saved_rate=(n - run.llm_calls) / n,
        canned_replies=sum(o.decision.route is Route.CANNED for o in outcomes),
        off_topic_replies=sum(o.decision.route is Route.OFF_TOPIC for o in outcomes),
        in_domain_pass_rate=pass_rate,
        false_block_rate=false_block,
        off_topic_block_rate=_rate([not o.passed for o in outside]),
        n_supported=len(supported),
        n_unsupported=len(unsupported),
        supported_pass_rate=_rate([o.passed for o in supported]),
        unsupported_pass_rate=_rate([o.passed for o in unsupported]),
        auroc=auroc,
        fpr_at_95tpr=fpr95,
        score_basis=basis,
        threshold=gate.settings.gate.threshold,
        rule=gate.rule.name,
        calibration=calibration,
        latency_ms=latency,
        cost=cost_summary(n, run.llm_calls, pricing),
        time=time_summary(n, run.llm_calls, pricing, latency.mean),
        projections=[
            project(s, admit_in, admit_off, false_block or 0.0, pricing, latency.mean)
            for s in options.off_topic_shares
        ],
        confidence_intervals=bootstrap_intervals(outcomes, table, options.bootstrap, options.seed),
        bootstrap={"draws": options.bootstrap, "seed": options.seed, "level": BOOTSTRAP_LEVEL},
        counting={
            "method": run.counting_method,
            "backend_calls": run.llm_calls,
            "rows_marked_called": counted_by_rows,
            "consistent": counted_by_rows == run.llm_calls,
            "gate_errors": sum(o.decision.gate_error is not None for o in outcomes),
            "seconds": run.seconds,
        },
        per_intent=per_intent_rows(outcomes),
        by_source=source_rows(outcomes),
        conversations=conversation_stats(outcomes),
        wrongly_blocked=[listed(o) for o in inside if not o.passed][: options.max_listed],
        wrongly_admitted=[
            listed(o) for o in sorted(outside, key=lambda o: -o.decision.score) if o.passed
        ][: options.max_listed],
        canned_mismatches=[listed(o) for o in canned_mismatches(inside)][: options.max_listed],
        sweep=sweep(table, gate.settings.gate.threshold),
        meta=dict(meta or {}),
        scores=ScoreSamples(
            in_domain=[float(s) for s in table.scores[table.in_domain]],
            off_topic=[float(s) for s in table.scores[~table.in_domain]],
        ),
    )


# -- the whole pipeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPlan:
    """What ``gatekeeper eval`` was asked to do."""

    datasets: tuple[Path, ...]
    catalog: Path | None = None
    calibrate_on: Path | None = None
    target_pass_rate: float | None = None
    threshold: float | None = None
    rule: str | None = None
    skip_invalid: bool = False
    replay: bool = False
    options: EvalOptions = field(default_factory=EvalOptions)


def build_gate(
    settings: Settings, catalog: Path | None = None, rule: str | None = None
) -> Gatekeeper:
    """The gate an eval runs: ``catalog`` (if given) served from a collection of its own."""
    from gatekeeper.catalog import load_catalog
    from gatekeeper.gate import Gatekeeper

    loaded = None
    if catalog is not None:
        loaded = load_catalog(catalog)
        settings = settings_for_catalog(settings, catalog, loaded.content_hash())
    if rule is not None:
        settings = settings.model_copy(
            update={"gate": settings.gate.model_copy(update={"rule": rule})}
        )
    return Gatekeeper.from_settings(settings, catalog=loaded)


def evaluate(
    settings: Settings, plan: EvalPlan, task: TaskFactory = no_progress
) -> tuple[EvalReport, Gatekeeper]:
    """Build the gate the plan asks for, then :func:`evaluate_gate`."""
    data = load_plan_data(plan)  # fail on bad data before loading the model
    return evaluate_gate(build_gate(settings, plan.catalog, plan.rule), plan, task, data=data)


def check_plan(plan: EvalPlan) -> None:
    """Refuse an inconsistent plan with :class:`InputError`."""
    if (plan.calibrate_on is None) != (plan.target_pass_rate is None):
        raise InputError(
            "calibrating needs both a calibration dataset and a target pass rate; "
            "the plan gives only one of them"
        )
    if plan.calibrate_on is not None and plan.threshold is not None:
        raise InputError("the plan gives both a fixed threshold and a calibration dataset")
    if plan.target_pass_rate is not None:
        check_target(plan.target_pass_rate)


def load_plan_data(plan: EvalPlan) -> tuple[Dataset, Dataset | None]:
    """Check the plan, then load its datasets and its calibration set (if any), once."""
    check_plan(plan)
    dataset = load_datasets(plan.datasets, skip_invalid=plan.skip_invalid)
    calibration_set = (
        load_datasets([plan.calibrate_on], skip_invalid=plan.skip_invalid)
        if plan.calibrate_on is not None
        else None
    )
    return dataset, calibration_set


def evaluate_gate(
    gate: Gatekeeper,
    plan: EvalPlan,
    task: TaskFactory = no_progress,
    *,
    data: tuple[Dataset, Dataset | None] | None = None,
) -> tuple[EvalReport, Gatekeeper]:
    """Index if needed, calibrate if asked, run the datasets through the gate, compute metrics.

    ``data`` is what :func:`load_plan_data` returned, if the caller loaded it already.
    Returns the report and the gate as evaluated (with the calibrated threshold)."""
    dataset, calibration_set = data if data is not None else load_plan_data(plan)
    started = time.perf_counter()
    synced = ensure_index(gate, task)
    if plan.threshold is not None:
        gate = with_threshold(gate, plan.threshold)
    calibration = None
    if calibration_set is not None and plan.target_pass_rate is not None:
        calibration = calibrate(
            gate, calibration_set, plan.target_pass_rate, task, plan.options.chunk_size
        )
        gate = with_threshold(gate, calibration.threshold)
    runner = run_replay if plan.replay else run_eval
    run = runner(gate, dataset, plan.options, task)
    meta = {
        "datasets": list(dataset.sources),
        "catalog": str(gate.settings.catalog),
        "catalog_hash": gate.catalog.content_hash(),
        "collection": gate.store.name,
        "embedding_model": gate.embedder.identity,
        "indexed": synced is not None,
        "index_seconds": synced.seconds if synced is not None else 0.0,
        "seconds": time.perf_counter() - started,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "skipped_rows": [*dataset.skipped, *(calibration_set.skipped if calibration_set else ())],
    }
    return build_report(gate, run, plan.options, calibration, meta), gate


# -- writing a calibrated threshold into the settings file --------------------------------------

_GATE_BLOCK = re.compile(r"^gate:\s*(#.*)?$")
_THRESHOLD = re.compile(r"^(?P<indent>[ \t]+)threshold:")


def store_threshold(path: Path, threshold: float, note: str) -> None:
    """Set ``gate.threshold`` in the YAML settings file ``path`` (created if absent), keeping
    its other keys and comments; ``note`` becomes the line's comment."""
    import yaml

    from gatekeeper.settings import load_settings

    check_settings_target(path)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else None
        updated = _with_threshold(original or "", threshold, note)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(updated, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot write the threshold to {path}: {exc}") from exc
    try:
        stored = (yaml.safe_load(updated) or {}).get("gate", {}).get("threshold")
        load_settings(path)
    except (yaml.YAMLError, ConfigError, AttributeError) as exc:
        stored, problem = None, str(exc)
    else:
        problem = f"gate.threshold reads back as {stored!r}"
    if stored is None or abs(float(stored) - threshold) > 5e-5:
        if original is None:
            path.unlink()
        else:
            path.write_text(original, encoding="utf-8")
        raise ConfigError(f"could not store the threshold in {path}: {problem}")


def check_settings_target(path: Path) -> None:
    """Refuse, with :class:`ConfigError`, a settings file that cannot be written: call before
    a long calibration so the problem shows before the work, not after."""
    problem = why_unwritable(path, want_dir=False)
    if problem:
        raise ConfigError(f"cannot write the threshold to settings file {path}: {problem}")


def why_unwritable(path: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` (a directory if ``want_dir``, else a file) cannot be written, or None."""

    if path.exists():
        if want_dir and not path.is_dir():
            return "it exists and is not a directory"
        if not want_dir and path.is_dir():
            return "it is a directory"
        return None if os.access(path, os.W_OK) else "permission denied"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def _with_threshold(text: str, threshold: float, note: str) -> str:
    """``text`` (a YAML settings file) with ``gate.threshold`` set, edited line by line."""
    line = f"threshold: {threshold:.4f}  # {note}"
    lines = text.splitlines()
    start = next((i for i, row in enumerate(lines) if _GATE_BLOCK.match(row)), None)
    if start is None:
        if re.search(r"^gate:", text, flags=re.MULTILINE):
            return _with_threshold_dumped(text, threshold)
        prefix = text.rstrip("\n") + "\n\n" if text.strip() else ""
        return f"{prefix}gate:\n  {line}\n"
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t#"):
        end += 1
    block = lines[start + 1 : end]
    indents = [
        len(r) - len(r.lstrip()) for r in block if r.strip() and not r.lstrip().startswith("#")
    ]
    indent = " " * (min(indents) if indents else 2)
    for offset, row in enumerate(block):
        match = _THRESHOLD.match(row)
        if match and match.group("indent") == indent:
            lines[start + 1 + offset] = indent + line
            break
    else:
        at = start + 1
        while at < end and lines[at].lstrip().startswith("#"):
            at += 1  # after the block's leading comments
        lines.insert(at, indent + line)
    return "\n".join(lines) + "\n"


def _with_threshold_dumped(text: str, threshold: float) -> str:
    """Fallback for a ``gate:`` in flow style: reload and dump (comments are lost)."""
    import yaml

    data = yaml.safe_load(text) or {}
    data.setdefault("gate", {})["threshold"] = round(threshold, 4)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
