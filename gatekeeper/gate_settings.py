"""The gate's own settings (``gate.*``): how a decision is made, and the record of what its
threshold was calibrated for (``gate.calibrated_for``, see :mod:`gatekeeper.calibration`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gatekeeper._section import _Section
from gatekeeper.rules import DEFAULT_RULE, RULES, rules_help


class CalibrationRecord(_Section):
    """What a threshold was calibrated for: it is only meaningful for that model and rule."""

    model: str = Field(description="the embedder identity (as the index records it)")
    rule: str = Field(description="the decision rule")
    catalog: str | None = Field(None, description="content hash of the catalog")


class GateSettings(_Section):
    """How a decision is made."""

    threshold: float = Field(0.5, ge=-1.0, le=1.0)
    intent_thresholds: dict[str, float] = Field(default_factory=dict)
    rule: str = Field(DEFAULT_RULE, description=f"decision rule: {rules_help()}")
    density_k: int = Field(5, ge=1, le=50, description="neighbourhood size of the density rule")
    max_message_chars: int = Field(4000, ge=1)
    followup_max_words: int = Field(
        4,
        ge=0,
        description="in a served conversation, a turn this short that answers the assistant's "
        "question is forwarded unless clearly off-topic",
    )
    followup_off_topic_max: float = Field(
        0.65,
        ge=-1.0,
        le=1.0,
        description="in a served conversation, a turn this close to an off-topic exemplar is "
        "still refused",
    )
    followup_off_topic_gap: float = Field(
        1.0,
        ge=0.0,
        le=2.0,
        description="... or a turn whose nearest off-topic exemplar is this much closer than its "
        "nearest in-domain one (1.0 and more: off)",
    )
    session_margin: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="hysteresis: in a served conversation a turn passes down to threshold - "
        "session_margin unless it is clearly off-topic; right after a refusal, short small talk "
        "keeps its fixed reply only from threshold + session_margin",
    )
    canned_min_similarity: float = Field(
        0.7,
        ge=-1.0,
        le=1.0,
        description="a canned reply needs an exemplar this similar; looser matches are forwarded",
    )
    turn_cache: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="vectors of this many recently judged customer turns are kept (keyed by a "
        "keyed digest, never the text), so a conversation's earlier turns are not embedded again "
        "with every request; 0: off",
    )
    on_error: Literal["fail_open", "fail_closed"] = "fail_open"
    unavailable_reply: str = Field(
        "Sorry, I can't answer right now. Please try again in a moment.",
        min_length=1,
        description="what a fail_closed gate answers while it cannot decide (model or Chroma "
        "down): the customer may have asked something in-domain, so not the off-topic reply",
    )
    shadow: bool = Field(False, description="decide, log and count, but forward everything")
    calibrated_for: CalibrationRecord | None = Field(
        None,
        description="the model, rule and catalog gate.threshold was calibrated for "
        "(written by `gatekeeper calibrate --write`); a gate with another model or rule refuses "
        "to decide rather than use a foreign threshold",
    )
    conversations_calibrated_for: CalibrationRecord | None = Field(
        None,
        description="the model, rule and catalog the conversation settings (session_margin, "
        "followup_*) were calibrated for (`calibrate --conversations ... --write`); another "
        "model or rule gets a warning: they are cosine values on the model's scale. Values "
        "other than the defaults without it, beside a calibrated threshold, warn too",
    )
    allow_uncalibrated: bool = Field(
        False,
        description="decide with gate.threshold although it was not calibrated for this model "
        "and rule (for experiments; a foreign threshold can block nothing or everything)",
    )

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if value not in RULES:
            raise ValueError(f"unknown rule {value!r}; use one of: {', '.join(RULES)}")
        return value


__all__ = ["CalibrationRecord", "GateSettings"]
