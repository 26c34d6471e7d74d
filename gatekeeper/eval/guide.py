"""The parts of an eval report that tell a reader what to do: the recommended thresholds with
the command applying each, and a glossary of the report's words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.eval.formatting import pct
from gatekeeper.eval.schema import EvalReport


@dataclass(frozen=True)
class Section:
    """One table of the report, shared by Markdown and HTML."""

    title: str
    header: Sequence[str]
    rows: list[list[str]]
    intro: tuple[str, ...] = ()
    listed: bool = False  # a list of messages: Markdown shows the first MD_LISTED
    code_columns: tuple[int, ...] = ()  # cells shown as code (commands)
    total: int | None = None  # a capped list: how many there are in all


def recommended_section(report: EvalReport) -> Section:
    """The recommended thresholds: what each does and the command that applies it."""
    recs = report.recommended_thresholds
    c = report.calibration
    if c is not None and c.by_target:
        intro = [
            f"For each target, the threshold `gatekeeper calibrate` chooses on {c.source} (the "
            "highest that still lets at least 99%, 98% or 95% of its in-domain customers "
            "through, and the run's own target): exactly what the command writes. The other "
            f"columns are what it does on the evaluated data, {_chosen_on(report)}, so the "
            "pass rate there can fall "
            "short of the target or exceed it. A higher threshold saves more LLM calls and turns "
            "away more customers."
        ]
    else:
        source = recs[0].source if recs else "the evaluated data"
        intro = [
            f"The highest threshold on the sweep of {source} that still lets at least 99%, 98% "
            "or 95% of in-domain customers through. A higher threshold saves more LLM calls and "
            "turns away more customers. These were chosen on the evaluated data itself, so "
            "what they do there is optimistic: a threshold fitted to the messages it is "
            "scored on. Do not apply them as they are: choose the threshold with `gatekeeper "
            "calibrate` on a separate labelled file (the commands here), or rerun with "
            "`--calibrate-on FILE --target-pass-rate R` to see what such a threshold does on "
            "this data."
        ]
    adopt = adopt_tuned_hint(report)
    if adopt:
        intro.append(adopt)
    rows = [
        [
            pct(r.target_pass_rate, 0),
            "–" if r.threshold is None else f"{r.threshold:.4f}",
            pct(r.in_domain_pass_rate),
            "–" if r.wrongly_blocked is None else str(r.wrongly_blocked),
            pct(r.off_topic_block_rate),
            pct(r.saved_rate),
            r.command,
        ]
        for r in recs
    ]
    return Section(
        "Recommended thresholds",
        (
            "target pass",
            "threshold",
            "in-domain pass",
            "wrongly blocked",
            "off-topic blocked",
            "LLM calls saved",
            "apply with",
        ),
        rows,
        intro=tuple(intro),
        code_columns=(6,),
    )


def shared_with_calibration(report: EvalReport) -> int:
    """How many distinct evaluated messages are also in the calibration file
    (``meta.calibration_overlap``, warned about as leakage)."""
    return int((report.meta or {}).get("calibration_overlap") or 0)


def _chosen_on(report: EvalReport) -> str:
    """How the evaluated data relates to the file the thresholds were chosen on."""
    shared = shared_with_calibration(report)
    if not shared:
        return "which it was not chosen on"
    return (
        f"which shares {shared} distinct messages with the file it was chosen on (see "
        "Warnings): not an independent preview"
    )


#: An intent is warned about when it has at least this many labelled in-domain rows...
WEAK_INTENT_ROWS = 20
#: ...and passes at least this much (as a rate) below the target. At a 98% target, 20 rows of
#: an intent that truly passes 98% fall to 88% or less with probability under 1%: noise alone
#: rarely names one, while a segment the global threshold fails (85% against 99%) is named.
WEAK_INTENT_GAP = 0.10
#: Intents a warning names before counting the rest.
WEAK_INTENTS_LISTED = 8


def weak_intents_warning(report: EvalReport) -> str | None:
    """A warning naming the intents a global threshold fails: at least
    :data:`WEAK_INTENT_ROWS` labelled in-domain rows passing :data:`WEAK_INTENT_GAP` or more
    below the calibration target (without one, below the run's overall in-domain pass rate)."""
    c = report.calibration
    reference = c.target_pass_rate if c is not None else report.in_domain_pass_rate
    if reference is None:
        return None
    weak = [
        r
        for r in report.per_intent
        if r.n >= WEAK_INTENT_ROWS and r.pass_rate < reference - WEAK_INTENT_GAP - 1e-12
    ]
    if not weak:
        return None
    named = ", ".join(
        f"{r.intent!r} {pct(r.pass_rate)} of {r.n}" for r in weak[:WEAK_INTENTS_LISTED]
    )
    more = len(weak) - WEAK_INTENTS_LISTED
    against = f"the {pct(reference)} target" if c is not None else f"{pct(reference)} overall"
    one = len(weak) == 1
    return (
        f"{len(weak)} intent{'' if one else 's'} with {WEAK_INTENT_ROWS} or more labelled rows "
        f"pass{'es' if one else ''} {WEAK_INTENT_GAP * 100:g} points or more below {against}: "
        f"{named}" + (f" and {more} more" if more > 0 else "") + "; the global threshold "
        f"hides {'it' if one else 'them'} (see 'Pass rate per intent'). Give "
        f"{'it' if one else 'them'} more exemplars (an unsupported:<name> one an intent of its "
        "own), or a lower threshold of its own (gate.intent_thresholds), then evaluate again"
    )


def serving_steps(
    config_flag: str, catalog: str | None, settings_catalog: str | None
) -> dict[str, str | None]:
    """Where an ``eval --tune`` run's tuned model gets served (``meta.tuned.serve``): the
    settings file the recommended calibrate command reads and writes (``config_flag``, as
    :func:`~gatekeeper.eval.metrics.recommend_thresholds` got it), the ``catalog:`` that file
    must name when the run evaluated another catalog than the settings serve (else
    ``calibrate --catalog C --write`` refuses to write into it), and the index command that
    rebuilds that file's store: once the file names the catalog it serves it, so the command
    needs no ``--catalog`` (without ``--config``, it rebuilt the default shop catalog)."""
    apart = bool(catalog and settings_catalog) and (
        Path(str(catalog)).resolve() != Path(str(settings_catalog)).resolve()
    )
    return {
        "settings_file": config_flag.removeprefix(" --config ") or None,
        "catalog": str(Path(str(catalog)).resolve()) if apart else None,
        "index_command": f"gatekeeper index{config_flag} --rebuild",
    }


def adopt_tuned_hint(report: EvalReport) -> str | None:
    """How to serve the model an ``eval --tune`` run tuned (the calibrate command calibrates
    whatever model the settings file names: without these steps, the frozen one)."""
    tuned = (report.meta or {}).get("tuned")
    if not tuned:
        return None
    key, path = ("model", tuned["model"]) if "model" in tuned else ("adapter", tuned["adapter"])
    serve = tuned.get("serve") or {}
    settings = [f"catalog: {serve['catalog']}"] if serve.get("catalog") else []
    settings.append(f"embedding.{key}: {path}")
    where = serve.get("settings_file") or "the settings file"
    index = serve.get("index_command") or "gatekeeper index --rebuild"
    return (
        f"This run's numbers are for the tuned model. To serve it, set {' and '.join(settings)} "
        f"in {where} (create it if absent), run `{index}`, then the calibrate command; without "
        "these steps the command calibrates the frozen model."
    )


def recommendation_line(report: EvalReport) -> str:
    """The recommended thresholds in one line (the CLI summary)."""
    parts = [
        f"{pct(r.target_pass_rate, 0)} pass → {r.threshold:.4f} "
        f"({pct(r.off_topic_block_rate)} off-topic blocked, {pct(r.saved_rate)} saved)"
        for r in report.recommended_thresholds
        if r.threshold is not None
    ]
    if not parts and report.n_in_domain == 0:
        return "recommended thresholds: none (no in-domain rows to measure a pass rate on)"
    if not parts:
        return "recommended thresholds: none reaches 95% in-domain pass on this data"
    recs = report.recommended_thresholds
    c = report.calibration
    # the run's own target when it calibrated (the 99% one told a 98% demo to lower its bar)
    same = [
        r for r in recs if c is not None and abs(r.target_pass_rate - c.target_pass_rate) < 1e-9
    ]
    if c is not None:
        how = f"apply with: {(same or recs)[0].command}"
    else:  # fitted on the data they are scored on: never an apply line
        advised = next((r for r in recs if abs(r.target_pass_rate - 0.98) < 1e-9), recs[0])
        how = (
            "optimistic, fitted on the data they are measured on: choose yours on a separate "
            f"labelled file, `{advised.command}`, or rerun with --calibrate-on FILE "
            "--target-pass-rate R"
        )
    where = (
        f"chosen on {c.source}, measured on the evaluated data"
        if c is not None and c.by_target
        else f"chosen on the evaluated data itself, {recs[0].source}"
    )
    return f"recommended thresholds ({where}): " + "; ".join(parts) + f" — {how}"


GLOSSARY = (
    (
        "score",
        "how close a message is to the catalog's in-domain exemplars, from -1 to 1; higher means "
        "more like what the business serves. The default rule (density) takes the mean "
        "similarity of the 5 nearest in-domain exemplars.",
    ),
    (
        "threshold",
        "the score under which a message is refused as off-topic. One global value; an intent "
        "may have its own.",
    ),
    (
        "why a score can be negative",
        "when an off-topic exemplar is closer to the message than any in-domain one, the "
        "density and contrast rules subtract that gap from the score, so clear off-topic "
        "messages can fall below 0.",
    ),
    (
        "in-domain pass rate",
        "the share of in-domain customer messages that are not refused (forwarded to the LLM, "
        "or answered with a fixed reply such as a greeting).",
    ),
    (
        "false block rate",
        "1 − in-domain pass rate: the share of in-domain customers wrongly turned away.",
    ),
    ("off-topic block rate", "the share of off-topic messages refused before reaching the LLM."),
    (
        "saved rate",
        "the share of all messages that did not cause an LLM call (refused, or answered with a "
        "fixed reply).",
    ),
    (
        "AUROC",
        "the chance that a random in-domain message scores above a random off-topic one (1 = "
        "the score separates them perfectly, 0.5 = no better than a coin).",
    ),
    (
        "FPR@95%TPR",
        "the share of off-topic messages let through at the threshold that passes 95% of "
        "in-domain ones (lower is better).",
    ),
    (
        "routed to this intent",
        "in the per-intent table (intent_match_rate): the share of an intent's messages whose "
        "nearest intent was that same intent; a message can pass while being matched to "
        "another intent.",
    ),
    (
        "drift turn",
        "a customer turn of a chat labelled off_topic: any off-topic request inside a chat, "
        "its first turn included (a chat that opens off-topic counts one).",
    ),
    (
        "follow-up",
        "a chat turn that would be refused alone but was forwarded because the chat was being "
        "served: it answers the assistant's question (at most gate.followup_max_words words), "
        "scores within gate.session_margin of the threshold, or is an attachment. A drift turn "
        "forwarded so is off-topic traffic the conversation model let through.",
    ),
    (
        "the threshold of a chat turn",
        "the bar the turn was held to, not always the calibrated one: for a follow-up passed "
        "near the bar, the threshold minus gate.session_margin (0.2569 - 0.3 = -0.0431 on the "
        "shipped gate); for a short turn refused after a refusal as agreement or pleading, the "
        "raised bar, the threshold plus the margin (0.5569).",
    ),
    (
        "calls saved per chat",
        "(report.json, conversations.calls_saved_per_chat) the chat rows that caused no LLM "
        "call, refused or answered with a fixed reply, divided by the number of chats; with "
        "per-turn labels every labelled turn is a row, so it is calls saved per conversation.",
    ),
    (
        "supported vs unsupported on-topic",
        "supported messages belong to an intent the catalog has; unsupported ones "
        "(`unsupported:<name>` in the data) are on-topic questions the catalog has no intent "
        "for. They should pass too, and are counted separately because they are harder.",
    ),
)
