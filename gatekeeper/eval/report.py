"""Eval reports people read: ``report.json``, ``report.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from gatekeeper.eval.formatting import counted, pct
from gatekeeper.eval.guide import (
    GLOSSARY,
    Section,
    recommended_section,
    shared_with_calibration,
)
from gatekeeper.eval.schema import EvalReport, Listed, SweepPoint
from gatekeeper.eval.summary import summary_rows

PLOTS = ("scores.png", "tradeoff.png", "intents.png")
MD_LISTED = 50


def plots_of(report: EvalReport) -> tuple[str, ...]:
    """The plots of :data:`PLOTS` with something to show: the trade-off and per-intent plots
    chart in-domain customers, so a run of off-topic rows alone leaves them out (they were
    empty charts)."""
    has_in_domain = any(p.false_block_rate is not None for p in report.sweep)
    shown = {
        "scores.png": True,
        "tradeoff.png": has_in_domain,
        "intents.png": bool(report.per_intent),
    }
    return tuple(name for name in PLOTS if shown[name])


def md_text(text: str) -> str:
    """``text`` (a customer message, an intent name) as Markdown that shows it as written, on
    one line: ``&``, ``<`` and ``>`` as HTML entities (a dataset's ``<script>`` stays text),
    a backslash, ``|``, a backtick and brackets escaped (no text ends a table row, opens a code
    span or makes a link), and line breaks as spaces."""
    flat = " ".join(text.splitlines())
    escaped = html.escape(flat, quote=False).replace("\\", "\\\\")
    for char in "|`[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def _md_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], code_columns: Sequence[int] = ()
) -> str:
    """A Markdown table; the cells of ``code_columns`` (commands the report writes) as code."""

    def cell(i: int, text: str) -> str:
        if i in code_columns:
            return "`" + " ".join(text.splitlines()).replace("|", "\\|") + "`"
        return md_text(text)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(i, c) for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def _named(i: Listed) -> list[str]:
    """The first columns of every list: where (a chat's turn too), the message (with its chat
    context), the labelled and the nearest intent."""
    where = f"{i.source}:{i.line}" + (f", turn {i.turn}" if i.turn is not None else "")
    return [where, _in_context(i), i.label_intent or "", i.nearest_intent or ""]


#: How much of the customer's previous turn a list shows.
PREVIOUS_CHARS = 80


def _in_context(i: Listed) -> str:
    """The message, and for a chat's turn what came before it: the customer's previous turn
    and how the gate routed it, then the assistant's message."""
    before = []
    if i.previous_turn is not None:
        said = i.previous_turn or "(attachments only)"
        if len(said) > PREVIOUS_CHARS:
            said = said[: PREVIOUS_CHARS - 1] + "…"
        routed = f" → {i.previous_route}" if i.previous_route else ""
        before.append(f"the customer: {said!r}{routed}")
    if i.context:
        before.append(f"the assistant: {i.context!r}")
    text = i.text or "(attachments only)"
    return f"{text} (after {'; then '.join(before)})" if before else text


def _listed_rows(items: Sequence[Listed]) -> list[list[str]]:
    # as many decimals as a threshold: 0.41614 is below 0.4162, "0.416" was not
    return [[*_named(i), f"{i.score:.4f}", f"{i.threshold:.4f}"] for i in items]


LISTED_HEADER = ("where", "message", "labelled intent", "nearest intent", "score", "threshold")

CANNED_HEADER = (
    "where",
    "message",
    "labelled intent",
    "answered as",
    "nearest exemplar",
    "similarity",
)


def _canned_rows(items: Sequence[Listed]) -> list[list[str]]:
    """A canned reply is chosen by the nearest exemplar's similarity, not by the score."""
    return [
        [
            *_named(i),
            i.nearest_exemplar or "",
            "" if i.nearest_similarity is None else f"{i.nearest_similarity:.3f}",
        ]
        for i in items
    ]


def _canned_bar(report: EvalReport) -> str:
    bar = report.canned_min_similarity
    return "" if bar is None else f"; a canned reply needs gate.canned_min_similarity {bar:.2f}"


#: Sweep points this close to the operating threshold are all shown (the sweep is finer there).
SWEEP_SHOWN_SPAN = 0.05


def sections(report: EvalReport) -> list[Section]:
    """The report's tables in reading order: the headline, then the customers wrongly blocked,
    then what to do about the threshold, then the details."""
    return [
        Section(
            "Summary", ("metric", "value", "95% CI / note"), [list(r) for r in summary_rows(report)]
        ),
        Section(
            f"Customers wrongly blocked ({report.n_wrongly_blocked})",
            LISTED_HEADER,
            _listed_rows(report.wrongly_blocked),
            intro=(
                "In-domain messages the gate refused: each is a customer turned away. "
                "Read them first.",
            ),
            listed=True,
            total=report.n_wrongly_blocked,
        ),
        recommended_section(report),
        Section(
            f"Off-topic messages let through ({report.n_wrongly_admitted}, highest score first)",
            LISTED_HEADER,
            _listed_rows(report.wrongly_admitted),
            listed=True,
            total=report.n_wrongly_admitted,
        ),
        Section(
            f"Answered with another intent's canned reply ({report.n_canned_mismatches}"
            + _canned_bar(report)
            + ")",
            CANNED_HEADER,
            _canned_rows(report.canned_mismatches),
            listed=True,
            total=report.n_canned_mismatches,
        ),
        *_followups_section(report),
        Section(
            "By dataset",
            (
                "dataset",
                "messages",
                "in-domain",
                "off-topic",
                "LLM calls",
                "in-domain pass",
                "off-topic block",
            ),
            [
                [
                    s.source,
                    str(s.n),
                    str(s.n_in_domain),
                    str(s.n_off_topic),
                    str(s.llm_calls),
                    pct(s.in_domain_pass_rate),
                    pct(s.off_topic_block_rate),
                ]
                for s in report.by_source
            ],
        ),
        Section(
            "Pass rate per intent",
            ("intent", "n", "passed", "pass rate", "routed to this intent"),
            [
                [r.intent, str(r.n), str(r.passed), pct(r.pass_rate), pct(r.intent_match_rate)]
                for r in report.per_intent
            ],
        ),
        Section(
            "Threshold sweep",
            (
                "threshold",
                "LLM calls",
                "saved",
                "wrongly blocked",
                "in-domain pass",
                "off-topic block",
                "note",
            ),
            [
                [
                    f"{p.threshold:.4f}",
                    str(p.llm_calls),
                    pct(p.saved_rate),
                    str(p.wrongly_blocked),
                    pct(p.in_domain_pass_rate),
                    pct(p.off_topic_block_rate),
                    _sweep_note(report, p),
                ]
                for p in _thin(
                    report.sweep,
                    report.threshold,
                    keep=[
                        r.threshold
                        for r in report.recommended_thresholds
                        if r.threshold is not None
                    ],
                )
            ],
            intro=(
                "What each global threshold would do: every evaluated row (conversations as "
                "chats) routed as the live gate routes it. Every step within "
                f"±{SWEEP_SHOWN_SPAN:g} of the operating threshold is shown; farther out, "
                "every 5th.",
            ),
        ),
    ]


def _followups_section(report: EvalReport) -> list[Section]:
    """The chat turns forwarded as follow-ups although they would be refused alone: the drift
    turns first (off-topic, forwarded by the conversation model), then the customers'."""
    c = report.conversations
    if c is None:
        return []
    rows = [[*r, "drift"] for r in _listed_rows(report.followup_drift_turns)]
    rows += [[*r, "customer"] for r in _listed_rows(report.followup_customer_turns)]
    return [
        Section(
            f"Follow-ups forwarded ({c.rescued_followups}: "
            f"{counted(c.followup_customer_turns, 'customer turn')}, "
            f"{counted(c.followup_drift_turns, 'drift turn')})",
            (*LISTED_HEADER, "kind"),
            rows,
            intro=(
                "Chat turns that alone would be refused, forwarded because the chat was being "
                "served (an answer to the assistant's question, a score within the session "
                "margin, an attachment). A drift turn here is off-topic traffic the "
                "conversation model let through; the threshold shown is the bar the turn was "
                "held to (the threshold minus gate.session_margin when passed near it).",
            ),
            listed=True,
            total=c.rescued_followups,
        )
    ]


def _sweep_note(report: EvalReport, point: SweepPoint) -> str:
    notes = ["operating"] if point.threshold == report.threshold else []
    notes += [
        f"{pct(r.target_pass_rate, 0)} pass"
        for r in report.recommended_thresholds
        if r.threshold == point.threshold
    ]
    return ", ".join(notes)


def _thin(
    points: Sequence[SweepPoint],
    operating: float,
    every: int = 5,
    span: float = SWEEP_SHOWN_SPAN,
    keep: Sequence[float] = (),
) -> list[SweepPoint]:
    """Every point within ``span`` of the operating threshold (where the sweep is fine), every
    ``every``-th of the rest, and the thresholds in ``keep``."""
    return [
        p
        for i, p in enumerate(points)
        if abs(p.threshold - operating) <= span + 1e-9 or i % every == 0 or p.threshold in keep
    ]


def notes(report: EvalReport) -> list[str]:
    """How the numbers were obtained, one sentence each."""
    c = report.calibration
    out = [
        f"LLM calls are counted: {report.counting['method']}.",
        "Pass = routed to the LLM or answered by a canned in-domain reply; "
        "block = refused as off-topic.",
        f"AUROC, FPR@95%TPR and the score plot use {report.score_basis}; the sweep and the "
        "recommended thresholds route every row (conversations as chats) as the live gate does.",
        f"Latency: {report.latency_ms.method}.",
        f"Confidence intervals: percentile bootstrap, {report.bootstrap['draws']} draws, "
        f"seed {report.bootstrap['seed']}; a rate of 0% or 100% gets the exact "
        "(Clopper-Pearson) interval, which resampling cannot give.",
    ]
    chats = report.conversation_settings
    if chats is not None:
        out.append(
            f"The chats were routed with the conversation settings from {chats.source}"
            + (f", chosen by: {chats.calibration}." if chats.calibration else ".")
        )
    skipped = report.meta.get("skipped_rows") or []
    if skipped:
        out.append(
            f"{len(skipped)} malformed rows were skipped (--skip-invalid): " + "; ".join(skipped)
        )
    if c is not None:
        shared = shared_with_calibration(report)
        out.append(
            f"The threshold {c.threshold:.4f} was chosen on {c.source}{'' if shared else ' alone'} "
            f"({c.n_in_domain} in-domain, {c.n_off_topic} off-topic; there: "
            f"{pct(c.in_domain_pass_rate)} pass, {pct(c.off_topic_block_rate)} blocked) "
            "and applied unchanged to the evaluated data"
            + (f", which shares {shared} distinct messages with {c.source}." if shared else ".")
        )
    return out


def render_markdown(report: EvalReport) -> str:
    """``report.md``."""
    parts = [
        f"# Gate eval: {md_text(', '.join(report.meta.get('datasets', [])))}",
        "",
        _meta_line(report),
        "",
    ]
    warnings = dataset_warnings(report)
    if warnings:
        parts += ["## Warnings", ""] + [f"- {md_text(w)}" for w in warnings] + [""]
    for section in sections(report):
        rows = section.rows
        shown = rows[:MD_LISTED] if section.listed else rows
        parts += [f"## {section.title}", ""]
        parts += [line for text in section.intro for line in (text, "")]
        table = _md_table(section.header, shown, section.code_columns)
        parts += [table if shown else "_none_", ""]
        if len(shown) < len(rows):
            parts += [f"_{len(rows) - len(shown)} more in report.json_", ""]
        if unlisted := _unlisted(section):
            parts += [f"_{unlisted}_", ""]
    parts += ["## Plots", ""] + [f"![{p}]({p})" for p in plots_of(report)] + [""]
    parts += ["## Glossary", ""] + [f"- **{term}**: {text}" for term, text in GLOSSARY] + [""]
    parts += ["## How these numbers were made", ""] + [f"- {md_text(n)}" for n in notes(report)]
    parts += [""]
    return "\n".join(parts)


def dataset_warnings(report: EvalReport) -> list[str]:
    """``meta.dataset_warnings``: what the run found wrong with its data, catalog or model (a
    language the model does not read, too few rows, leaked exemplars), shown near the top."""
    return [str(w) for w in report.meta.get("dataset_warnings") or []]


def _meta_line(report: EvalReport) -> str:
    m = report.meta
    return (
        f"catalog `{m.get('catalog', '?')}` · model `{m.get('embedding_model', '?')}` · "
        f"rule `{report.rule}` · collection `{m.get('collection', '?')}` · "
        f"{m.get('created_at', '')}"
    )


# -- html -------------------------------------------------------------------------------------


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], code_columns: Sequence[int] = ()
) -> str:
    def cell(i: int, c: str) -> str:
        text = html.escape(c)
        return f"<td><code>{text}</code></td>" if i in code_columns else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.meta{color:#666;font-size:.9em} details{margin-bottom:1em}
"""


def render_html(report: EvalReport, plots: Sequence[Path]) -> str:
    """``report.html``: the tables, and the plots embedded as data URIs."""
    title = "Gate eval: " + ", ".join(report.meta.get("datasets", []))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{html.escape(_meta_line(report).replace('`', ''))}</p>",
    ]
    warnings = dataset_warnings(report)
    if warnings:
        parts.append("<h2>Warnings</h2><ul>")
        parts += [f"<li>{html.escape(w)}</li>" for w in warnings] + ["</ul>"]
    tables = sections(report)
    for section in tables[:3]:  # summary, customers wrongly blocked, recommended thresholds
        parts += _html_section(section)
    parts.append("<h2>Plots</h2>")
    parts += [f"<img alt='{p.name}' src='data:image/png;base64,{_b64(p)}'>" for p in plots]
    for section in tables[3:]:
        parts += _html_section(section)
    parts.append("<h2>Glossary</h2><dl>")
    parts += [
        f"<dt><b>{html.escape(term)}</b></dt><dd>{html.escape(text)}</dd>"
        for term, text in GLOSSARY
    ]
    parts.append("</dl><h2>How these numbers were made</h2><ul>")
    parts += [f"<li>{html.escape(n)}</li>" for n in notes(report)]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def _html_section(section: Section) -> list[str]:
    rows = section.rows
    table = (
        _html_table(section.header, rows, section.code_columns)
        if rows
        else ("<p><em>none</em></p>")
    )
    head = [f"<h2>{html.escape(section.title)}</h2>"]
    head += [f"<p>{html.escape(text)}</p>" for text in section.intro]
    unlisted = _unlisted(section)
    tail = [f"<p><em>{html.escape(unlisted)}</em></p>"] if unlisted else []
    if len(rows) > 30:
        return [*head, f"<details><summary>{len(rows)} rows</summary>{table}</details>", *tail]
    return [*head, table, *tail]


def _unlisted(section: Section) -> str | None:
    """What a capped list of messages leaves out (every row is in rows.jsonl), or None."""
    if section.total is None or section.total <= len(section.rows):
        return None
    left = section.total - len(section.rows)
    return f"{left} more, listed neither here nor in report.json: rows.jsonl has every row"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")
