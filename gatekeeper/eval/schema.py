"""What an eval run produces: options, outcomes, and the models of ``report.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from gatekeeper.conversation import Turn
from gatekeeper.decision import Decision, Route
from gatekeeper.eval.datasets import Example

BOOTSTRAP_LEVEL = 0.95


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
    turns: tuple[Turn, ...] = ()  # judged alone: what routing needs at any threshold

    @property
    def passed(self) -> bool:
        """Not refused: forwarded to the LLM or answered by a canned in-domain reply."""
        return self.decision.route is not Route.OFF_TOPIC


@dataclass
class EvalRun:
    """What running a dataset through the gate produced, before any metric is computed."""

    outcomes: list[Outcome]
    llm_calls: int
    gate_ms: list[float] = field(default_factory=list)
    embed_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    counting_method: str = (
        "calls that reached a CountingBackend behind GatedBackend(gate, backend); "
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


class SavedCalls(BaseModel):
    """Where ``llm_calls_saved`` comes from: every message that caused no LLM call is counted
    as saved, a refused customer too; this says how many of each kind."""

    off_topic_refused: int = Field(description="off-topic messages refused: the gate's purpose")
    customers_refused: int = Field(
        description="in-domain messages refused: a call saved, and a customer turned away"
    )
    canned: int = Field(description="messages answered by a fixed (canned) reply")
    customers_refused_cost: float = Field(
        description="what the refused customers' calls would have cost (USD), within "
        "cost.llm_cost_saved"
    )


class TimeSaved(BaseModel):
    """LLM time not spent, from ``pricing.llm_seconds_per_call``."""

    llm_seconds_per_call: float
    llm_seconds_saved: float
    gate_seconds_added: float
    net_seconds_saved: float
    mean_response_s_without: float
    mean_response_s_with: float | None
    speedup: float | None
    gate_ms_source: str = Field(
        "single",
        description="the gate's time per message: 'single' (the timed single calls) or 'batch' "
        "(the batched run's, when none were timed: --latency-sample 0)",
    )


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
    n_chats: int = Field(
        0,
        description="distinct conversations (a chat with per-turn labels "
        "counts once, each of its customer turns is a row)",
    )
    customer_turns_wrongly_refused: int = 0
    drift_turns_refused: int = Field(
        0,
        description="off-topic customer turns refused (a drift turn: any off-topic customer "
        "turn of a chat, its first turn included)",
    )
    calls_saved_per_chat: float | None = Field(
        None,
        description="the chats' rows that caused no LLM call (refused or answered with a fixed "
        "reply, every labelled turn counted) divided by the number of chats",
    )
    followup_customer_turns: int = Field(
        0, description="of rescued_followups: in-domain customer turns (rescued, as meant)"
    )
    followup_drift_turns: int = Field(
        0,
        description="of rescued_followups: drift turns (forwarded as follow-ups although "
        "off-topic: what the conversation model lets through)",
    )


class ConversationSettings(BaseModel):
    """The conversation settings a run with chats decided with, and where they came from."""

    session_margin: float
    followup_max_words: int
    followup_off_topic_max: float
    followup_off_topic_gap: float = Field(description="1 and more: the gap rule is off")
    source: str = Field(
        description="where they came from: 'settings file PATH', 'environment (NAMES)' "
        "(GATEKEEPER_GATE__* variables), 'built-in defaults', or several of them"
    )
    calibrated_for: dict[str, Any] | None = Field(
        None, description="gate.conversations_calibrated_for: the model, rule and catalog"
    )
    calibration: str | None = Field(
        None,
        description="the comment `calibrate --conversations ... --write` left on them in the "
        "settings file: its command and what they did on its chats",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what that calibration warned about (too few chats, a missed target)",
    )


class Listed(BaseModel):
    """A message the report names: a customer wrongly blocked, or off-topic traffic let in."""

    source: str
    line: int
    turn: int | None = Field(None, description="for a per-turn labelled chat: the turn judged")
    text: str
    label_intent: str | None
    nearest_intent: str | None
    context: str | None = Field(
        None, description="for a chat: the assistant's message just before the judged turn"
    )
    previous_turn: str | None = Field(
        None, description="for a chat: the customer's turn before the judged one"
    )
    previous_route: str | None = Field(
        None,
        description="how the gate routed that turn (llm, canned or off_topic; null when not "
        "known: a chat without labels longer than the gate reads)",
    )
    route: str
    score: float
    threshold: float
    reason: str
    nearest_exemplar: str | None = Field(
        None, description="the most similar in-domain exemplar among the shown neighbours"
    )
    nearest_similarity: float | None = Field(
        None, description="its cosine similarity (what gate.canned_min_similarity is held to)"
    )


class Row(Listed):
    """One evaluated row as ``rows.jsonl`` holds it: every row, for analysis elsewhere."""

    label: str
    intent: str | None = Field(description="the intent served (a canned reply's); None if refused")
    passed: bool
    called: bool = Field(description="whether the row's call reached the counting backend")
    followup: bool


class SweepPoint(BaseModel):
    """What one global threshold would do (single-message rows)."""

    threshold: float
    llm_calls: int
    saved_rate: float
    wrongly_blocked: int
    in_domain_pass_rate: float | None
    false_block_rate: float | None
    off_topic_block_rate: float | None


class RecommendedThreshold(BaseModel):
    """The highest swept threshold reaching a target in-domain pass rate, and what it does."""

    target_pass_rate: float
    threshold: float | None = Field(description="None when no swept threshold reaches the target")
    in_domain_pass_rate: float | None = None
    false_block_rate: float | None = None
    off_topic_block_rate: float | None = None
    saved_rate: float | None = None
    llm_calls: int | None = None
    wrongly_blocked: int | None = None
    source: str = Field(description="the data the threshold was read off")
    command: str = Field(description="how to apply it")


class Calibration(BaseModel):
    """A threshold chosen on a calibration file alone."""

    source: str
    target_pass_rate: float
    threshold: float
    reached: bool
    enough_rows: bool = Field(
        default=True,
        description="whether the file has the in-domain rows the target needs (rows_needed); "
        "false: the threshold is just the lowest in-domain score there, whatever the target",
    )
    rows_needed: int | None = Field(
        default=None,
        description="the fewest in-domain rows that can resolve target_pass_rate (n >= "
        "target / (1 - target)); None for a 100% target, which no number of rows resolves",
    )
    in_domain_pass_rate: float | None
    off_topic_block_rate: float | None
    n_in_domain: int
    n_off_topic: int
    score_basis: str
    by_target: dict[str, float | None] = Field(
        default_factory=dict,
        description="the threshold this file gives each recommended target pass rate (key: the "
        "target, e.g. '0.99'; None: not reached), as `gatekeeper calibrate` would write it",
    )


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
    llm_calls_saved_by: SavedCalls | None = None
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
    conversation_settings: ConversationSettings | None = Field(
        None, description="with chats among the rows: the conversation settings decided with"
    )
    canned_min_similarity: float | None = Field(
        None, description="the nearest exemplar's similarity a canned reply needs"
    )
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
    n_wrongly_blocked: int = Field(
        0, description="in-domain messages refused: all of them (the list holds the first 500)"
    )
    n_wrongly_admitted: int = Field(
        0, description="off-topic messages passed: all of them (the list holds the first 500)"
    )
    canned_mismatches: list[Listed] = Field(
        description="in-domain messages answered by another intent's canned reply "
        "(passed, but the customer got e.g. a greeting to a delivery question; the first 500)"
    )
    n_canned_mismatches: int = Field(
        0, description="in-domain messages given another intent's canned reply: all of them"
    )
    followup_customer_turns: list[Listed] = Field(
        default_factory=list,
        description="in-domain chat turns forwarded as follow-ups (refused alone; first 500)",
    )
    followup_drift_turns: list[Listed] = Field(
        default_factory=list,
        description="off-topic chat turns forwarded as follow-ups (refused alone; first 500)",
    )
    sweep: list[SweepPoint]
    meta: dict[str, Any]
    recommended_thresholds: list[RecommendedThreshold] = Field(
        default_factory=list,
        description="the highest swept thresholds reaching 99%, 98% and 95% in-domain pass",
    )
    scores: ScoreSamples = Field(default_factory=ScoreSamples, exclude=True)
    rows: list[Row] = Field(default_factory=list, exclude=True)  # written as rows.jsonl
