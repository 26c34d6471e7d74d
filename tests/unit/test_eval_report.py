"""The eval report people act on: sections in reading order, recommended thresholds read off the
sweep, a trade-off plot zoomed where a threshold is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.errors import InputError
from gatekeeper.eval.guide import GLOSSARY, recommendation_line
from gatekeeper.eval.metrics import RECOMMENDED_TARGETS, recommend_thresholds
from gatekeeper.eval.plan import EvalPlan, evaluate_gate
from gatekeeper.eval.plots import TRADEOFF_MAX_FALSE_BLOCK, tradeoff_figure
from gatekeeper.eval.progress import Advance
from gatekeeper.eval.report import (
    LISTED_HEADER,
    SWEEP_SHOWN_SPAN,
    _thin,
    render_html,
    render_markdown,
)
from gatekeeper.eval.report_files import write_report
from gatekeeper.eval.schema import EvalOptions, EvalReport, SweepPoint
from gatekeeper.gate import Gatekeeper
from gatekeeper.testing import make_gate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EVAL = FIXTURES / "tiny_eval.jsonl"
CALIBRATION = FIXTURES / "tiny_calibration.jsonl"
FAST = EvalOptions(latency_sample=2, bootstrap=100, seed=3)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gatekeeper:
    built = make_gate(tmp_path_factory.mktemp("report"))
    built.index()
    return built


@pytest.fixture(scope="module")
def report(gate: Gatekeeper) -> EvalReport:
    """A report on the tiny fixtures, threshold calibrated on the tiny calibration file."""
    plan = EvalPlan(datasets=(EVAL,), calibrate_on=CALIBRATION, target_pass_rate=0.85, options=FAST)
    return evaluate_gate(gate, plan)[0]


@pytest.fixture(scope="module")
def fixed(gate: Gatekeeper) -> EvalReport:
    """The same data at a fixed threshold (no calibration file)."""
    return evaluate_gate(gate, EvalPlan(datasets=(EVAL,), threshold=0.3, options=FAST))[0]


def _positions(text: str, titles: list[str]) -> list[int]:
    found = [text.find(t) for t in titles]
    assert all(i >= 0 for i in found), dict(zip(titles, found, strict=True))
    return found


ORDER = [
    "Summary",
    "Customers wrongly blocked",
    "Recommended thresholds",
    "Off-topic messages let through",
    "By dataset",
    "Pass rate per intent",
    "Threshold sweep",
    "Glossary",
    "How these numbers were made",
]


def test_markdown_sections_are_in_reading_order(report: EvalReport) -> None:
    """Wrongly blocked customers come right after the summary, before every other table."""
    text = render_markdown(report)
    found = _positions(text, [f"## {t}" for t in ORDER])
    assert found == sorted(found)
    assert report.wrongly_blocked and report.wrongly_blocked[0].text in text


def test_html_sections_are_in_reading_order(report: EvalReport, tmp_path: Path) -> None:
    """The HTML report has the same order, the plots after the recommended thresholds."""
    files = write_report(report, tmp_path / "out")
    text = files.html.read_text(encoding="utf-8")
    found = _positions(text, [f"<h2>{t}" for t in [*ORDER[:3], "Plots", *ORDER[3:]]])
    assert found == sorted(found)
    assert render_html(report, files.plots) == text


def test_a_write_interrupted_midway_leaves_the_previous_report_whole(
    report: EvalReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a new report is being written leaves every file of the previous one as it
    was and no scratch files (report.json of the new run beside the old report.md before)."""
    import gatekeeper.eval.report_files as report_files

    out = tmp_path / "out"
    first = write_report(report, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    newer = report.model_copy(update={"meta": {**report.meta, "datasets": ["newer.jsonl"]}})

    def interrupted(*args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_files, "render_html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(newer, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    again = write_report(newer, out)
    assert again.json == first.json and "newer.jsonl" in again.json.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_scratch_files_of_a_killed_run_are_removed_by_the_next_write(
    report: EvalReport, tmp_path: Path
) -> None:
    """A report write removes the hidden scratch directories a killed run (its process gone,
    an hour old) left in the report directory, and keeps a live process's or a recent one."""
    import os
    import subprocess
    import sys
    import time

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(gone.stdout)
    out = tmp_path / "out"
    left = out / f".report.partial-{dead}-0badf00d"
    recent = out / f".report.partial-{dead}-0000cafe"
    live = out / f".report.partial-{os.getppid()}-00c0ffee"
    for directory in (left, recent, live):
        directory.mkdir(parents=True)
        (directory / "report.json").write_text("{}", encoding="utf-8")
    for directory in (left, live):
        os.utime(directory, (time.time() - 7200, time.time() - 7200))
    write_report(report, out)
    assert not left.exists() and recent.exists() and live.exists()


def test_a_write_that_fails_midway_puts_the_previous_report_back(
    report: EvalReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails after others succeeded undoes them, and a directory in the way of a
    report file is refused before any rename: the previous report stays whole (report.json and
    the plots were the new run's, report.html and rows.jsonl the old one's)."""
    out = tmp_path / "out"
    write_report(report, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    newer = report.model_copy(update={"meta": {**report.meta, "datasets": ["newer.jsonl"]}})
    replace, calls = Path.replace, []

    def failing(self: Path, target: Path) -> Path:  # type: ignore[override]
        calls.append(self.name)
        if len(calls) == 7:
            raise OSError("disk full")
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", failing)
    with pytest.raises(InputError, match="disk full"):
        write_report(newer, out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "report.md").unlink()
    (out / "report.md").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_report(newer, out)
    assert (out / "report.json").read_bytes() == before["report.json"]


def test_ctrl_c_while_the_files_are_renamed_waits_for_the_last_rename(
    report: EvalReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT arriving among the renames is delivered after the last one: the report is all
    new, then KeyboardInterrupt (it left report.json new beside the old report.md)."""
    import os
    import signal

    out = tmp_path / "out"
    write_report(report, out)
    newer = report.model_copy(update={"meta": {**report.meta, "datasets": ["newer.jsonl"]}})
    replace, calls = Path.replace, []

    def interrupted(self: Path, target: Path) -> Path:  # type: ignore[override]
        calls.append(self.name)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", interrupted)
    # Python's own SIGINT handler (a server started by an earlier test may have left its own)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_report(newer, out)
    finally:
        signal.signal(signal.SIGINT, before)
    monkeypatch.undo()
    assert len(calls) == 14  # every file set aside and put in place
    fresh = tmp_path / "fresh"
    write_report(newer, fresh)
    for name in ("report.json", "report.md", "rows.jsonl"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())


def test_glossary_explains_every_term(report: EvalReport) -> None:
    """The glossary names each number the report shows, in plain words."""
    terms = {term for term, _ in GLOSSARY}
    for needed in (
        "score",
        "threshold",
        "in-domain pass rate",
        "false block rate",
        "off-topic block rate",
        "saved rate",
        "AUROC",
        "FPR@95%TPR",
        "routed to this intent",
        "supported vs unsupported on-topic",
    ):
        assert needed in terms
    text = dict(GLOSSARY)
    assert "random in-domain message scores above a random off-topic" in text["AUROC"]
    assert "negative" in " ".join(terms) and "intent_match_rate" in text["routed to this intent"]
    assert "## Glossary" in render_markdown(report)


def _highest_reaching(points: list[SweepPoint], target: float) -> SweepPoint | None:
    reaching = [p for p in points if (p.in_domain_pass_rate or 0.0) >= target]
    return max(reaching, key=lambda p: p.threshold, default=None)


def test_recommended_thresholds_without_calibration_are_what_the_sweep_says(
    fixed: EvalReport,
) -> None:
    """Without a calibration file, each recommendation is the highest swept threshold reaching
    its target, and carries that sweep point's numbers."""
    recs = fixed.recommended_thresholds
    assert [r.target_pass_rate for r in recs] == list(RECOMMENDED_TARGETS) == [0.99, 0.98, 0.95]
    for rec in recs:
        best = _highest_reaching(fixed.sweep, rec.target_pass_rate)
        assert best is not None and rec.threshold == best.threshold
        assert rec.in_domain_pass_rate == best.in_domain_pass_rate >= rec.target_pass_rate
        assert rec.off_topic_block_rate == best.off_topic_block_rate
        assert rec.saved_rate == best.saved_rate and rec.llm_calls == best.llm_calls
        higher = [p for p in fixed.sweep if p.threshold > best.threshold]
        assert all((p.in_domain_pass_rate or 0.0) < rec.target_pass_rate for p in higher)
        assert rec.source == "tiny_eval.jsonl"


def test_recommended_thresholds_with_calibration_are_what_calibrate_writes(
    gate: Gatekeeper, report: EvalReport
) -> None:
    """With a calibration file, each recommendation shows the threshold `gatekeeper calibrate`
    chooses on that file for its target (what its command writes), and what that threshold
    does on the evaluated data."""
    from gatekeeper.eval.datasets import load_dataset
    from gatekeeper.eval.gates import for_calibration
    from gatekeeper.eval.run import run_eval
    from gatekeeper.eval.thresholds import calibrate, sweep_point

    outcomes = [o for o in run_eval(gate, load_dataset(EVAL), FAST).outcomes if o.turns]
    shown = 0
    for rec in report.recommended_thresholds:
        written = calibrate(for_calibration(gate), load_dataset(CALIBRATION), rec.target_pass_rate)
        assert rec.source == "tiny_calibration.jsonl"
        assert f"--target-pass-rate {rec.target_pass_rate:g} " in rec.command
        assert rec.threshold == (written.threshold if written.reached else None)
        if rec.threshold is None:
            continue
        shown += 1
        point = sweep_point(gate, outcomes, rec.threshold)
        assert rec.in_domain_pass_rate == point.in_domain_pass_rate
        assert (rec.off_topic_block_rate, rec.llm_calls) == (
            point.off_topic_block_rate,
            point.llm_calls,
        )
    assert shown, "no target was reached on the calibration fixture"


def test_recommended_commands(report: EvalReport, fixed: EvalReport) -> None:
    """With a calibration file: the calibrate command on that file; without: no line applying
    a threshold fitted on the evaluated data (optimistic, and said so), but calibrate on a
    separate labelled file."""
    rec = report.recommended_thresholds[0]
    assert rec.command.startswith(
        f"gatekeeper calibrate --dataset {CALIBRATION} --target-pass-rate 0.99"
    )
    assert rec.command.endswith("--write")
    text = render_markdown(report)
    assert "chooses on tiny_calibration.jsonl" in text and "exactly what the command writes" in text
    plain = fixed.recommended_thresholds[0]
    assert plain.threshold is not None
    assert plain.command.startswith(
        "gatekeeper calibrate --dataset YOUR_LABELLED_MESSAGES.jsonl --target-pass-rate 0.99"
    )
    line = recommendation_line(fixed)
    assert all(f"{t} pass → " in line for t in ("99%", "98%", "95%"))  # the numbers stay
    assert "chosen on the evaluated data itself" in line and "optimistic" in line
    assert "--calibrate-on" in line and "--dataset YOUR_LABELLED_MESSAGES.jsonl" in line
    assert "GATEKEEPER_GATE__THRESHOLD" not in line and "apply with" not in line
    section = " ".join(render_markdown(fixed).split())
    assert "GATEKEEPER_GATE__THRESHOLD" not in section and "optimistic" in section
    assert "gatekeeper calibrate --dataset" in recommendation_line(report)
    assert report.calibration is not None
    at_98 = report.model_copy(
        update={"calibration": report.calibration.model_copy(update={"target_pass_rate": 0.98})}
    )
    advised = recommendation_line(at_98).split("apply with: ", 1)[1]
    assert "--target-pass-rate 0.98 " in advised  # the run's own target, not the 99% line's


def test_no_in_domain_rows_is_said_as_such(report: EvalReport) -> None:
    """With no in-domain rows and no threshold to recommend, the summary says there was
    nothing to measure (it said no threshold "reaches 95% in-domain pass")."""
    recs = [r.model_copy(update={"threshold": None}) for r in report.recommended_thresholds]
    empty = report.model_copy(update={"n_in_domain": 0, "recommended_thresholds": recs})
    assert "no in-domain rows" in recommendation_line(empty)
    with_rows = report.model_copy(update={"recommended_thresholds": recs})
    assert "none reaches 95% in-domain pass" in recommendation_line(with_rows)


def test_the_recommended_command_repeats_what_the_run_needed(report: EvalReport) -> None:
    """A run that skipped malformed rows recommends a command that skips them too (without
    --skip-invalid it stopped at the first bad line), and names the settings file."""
    assert report.calibration is not None
    rec = recommend_thresholds(
        report.sweep,
        source="x",
        calibration=report.calibration,
        calibration_path="cal.jsonl",
        catalog="c.yaml",
        config_flag=" --config my.yaml",
        skip_invalid=True,
        targets=[0.98],
    )[0]
    assert rec.command == (
        "gatekeeper calibrate --config my.yaml --dataset cal.jsonl --target-pass-rate 0.98 "
        "--catalog c.yaml --skip-invalid --write"
    )


def test_no_threshold_reaching_a_target_is_said_plainly() -> None:
    """A target no swept threshold reaches has no threshold and says so."""
    points = [
        SweepPoint(
            threshold=0.5,
            llm_calls=1,
            saved_rate=0.5,
            wrongly_blocked=1,
            in_domain_pass_rate=0.9,
            false_block_rate=0.1,
            off_topic_block_rate=1.0,
        )
    ]
    recs = recommend_thresholds(points, source="x.jsonl")
    assert [r.threshold for r in recs] == [None, None, None]
    assert "no swept threshold reaches" in recs[0].command


def test_tradeoff_plot_zooms_on_few_customers_blocked(report: EvalReport) -> None:
    """The x axis runs to at most 10% of in-domain customers blocked; the operating point and
    the three recommended thresholds are marked and labelled."""
    import matplotlib.pyplot as plt

    fig = tradeoff_figure(report)
    try:
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        assert high <= 0.1 and high == TRADEOFF_MAX_FALSE_BLOCK and low <= 0.0
        labels = ax.get_legend_handles_labels()[1]
        assert any(label.startswith("operating point") for label in labels)
        for target in ("99%", "98%", "95%"):
            assert any(label.startswith(f"{target} pass: threshold") for label in labels)
        assert any("pass →" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


def test_sweep_table_keeps_the_fine_steps_near_the_operating_point(report: EvalReport) -> None:
    """Every sweep point within ±0.05 of the operating threshold is listed; the rest thinned."""
    shown = _thin(report.sweep, report.threshold)
    near = [p for p in report.sweep if abs(p.threshold - report.threshold) <= SWEEP_SHOWN_SPAN]
    assert len(near) > 20  # the sweep is fine there (0.0025 steps)
    assert all(p in shown for p in near)
    far = [p for p in report.sweep if p not in near]
    assert 0 < len([p for p in shown if p in far]) <= len(far) // 5 + 1
    text = render_markdown(report)
    assert all(f"| {p.threshold:.4f} |" in text for p in near)
    assert "| operating" in text or "operating |" in text


@pytest.mark.parametrize(("k", "n"), [(0, 285), (285, 285), (0, 1), (7, 7)])
def test_a_rate_of_none_or_all_gets_the_exact_interval(k: int, n: int) -> None:
    """0 of n (or n of n) gets the Clopper-Pearson interval, which the bootstrap (always
    0.0%-0.0% there) cannot give: it matches scipy's exact binomial interval."""
    from scipy.stats import binomtest

    from gatekeeper.eval.intervals import exact_interval

    got = exact_interval(k, n)
    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert got.low == pytest.approx(want.low) and got.high == pytest.approx(want.high)
    assert got.high - got.low > 0


def test_report_intervals_never_collapse_on_a_rate_of_none(fixed: EvalReport) -> None:
    """A report's interval for a rate observed at 0% or 100% is not a single point."""
    observed = {
        "in_domain_pass_rate": fixed.in_domain_pass_rate,
        "false_block_rate": fixed.false_block_rate,
        "off_topic_block_rate": fixed.off_topic_block_rate,
        "saved_rate": fixed.saved_rate,
    }
    for name, value in observed.items():
        interval = fixed.confidence_intervals[name]
        assert interval.low is not None and interval.high is not None
        if value in (0.0, 1.0):
            assert interval.high > interval.low, name


def test_tradeoff_labels_do_not_overlap_and_stay_inside(report: EvalReport) -> None:
    """Point labels close together are stacked apart (the demo's operating point and 98% and
    99% labels overlapped), and no label runs past the plot's right edge."""
    import matplotlib.pyplot as plt

    spots = (0.0, 0.001, 0.099)  # two points nearly on top of each other, one at the edge
    recs = [
        r.model_copy(update={"threshold": 0.3 + i / 100, "false_block_rate": x, "saved_rate": 0.25})
        for i, (r, x) in enumerate(zip(report.recommended_thresholds[:3], spots, strict=True))
    ]
    crowded = report.model_copy(update={"recommended_thresholds": recs})
    fig = tradeoff_figure(crowded)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        boxes = [t.get_window_extent() for t in ax.texts]
        assert len(boxes) >= 3
        for i, a in enumerate(boxes):
            assert a.x1 <= ax.get_window_extent().x1 + 1
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
    finally:
        plt.close(fig)


def test_rows_jsonl_holds_every_row_and_recounts_the_report(
    report: EvalReport, tmp_path: Path
) -> None:
    """rows.jsonl has one line per evaluated row; its counts give the report's headline."""
    import json

    files = write_report(report, tmp_path / "r")
    rows = [json.loads(line) for line in files.rows.read_text().splitlines()]
    assert len(rows) == report.n_queries
    assert sum(r["called"] for r in rows) == report.llm_calls
    inside = [r for r in rows if r["label"] == "in_domain"]
    assert sum(r["passed"] for r in inside) / len(inside) == report.in_domain_pass_rate
    assert {"source", "line", "text", "route", "intent", "score", "nearest_intent"} <= set(rows[0])
    assert "rows" not in json.loads(files.json.read_text())  # not repeated in report.json


def test_the_threshold_sweep_shows_progress(gate: Gatekeeper) -> None:
    """The sweep after the judging bar reports a task with its total and advances to it."""
    seen: dict[str, list[int]] = {}

    def task(description: str) -> tuple[Advance, Advance]:
        counts = seen.setdefault(description, [0, 0])

        def advance(n: int) -> None:
            counts[0] += n

        def set_total(n: int) -> None:
            counts[1] = n

        return advance, set_total

    evaluate_gate(gate, EvalPlan(datasets=(EVAL,), threshold=0.3, options=FAST), task)
    done, total = seen["sweeping thresholds"]
    assert total > 10 and done == total


def _unescaped_pipes(line: str) -> int:
    """Cell separators of a Markdown table row as GFM counts them (``\\x`` escapes one char)."""
    count, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        count += line[i] == "|"
        i += 1
    return count


def test_markdown_report_shows_dataset_html_and_pipes_as_text(report: EvalReport) -> None:
    """report.md quotes messages, contexts and intents with ``<``, ``>`` and ``&`` as entities and
    backslashes, pipes and line breaks (``\\r`` too) escaped: no raw HTML, no broken table row."""
    hostile = "a <script>x</script> & <img src=x onerror=y> \\|b|c\r\nd\re [l](javascript:z)"
    listed = report.wrongly_blocked[0].model_copy(
        update={"text": hostile, "context": "<b>hi</b>", "label_intent": "x</td><script>"}
    )
    text = render_markdown(report.model_copy(update={"wrongly_blocked": [listed]}))
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;x&lt;/script&gt; &amp; &lt;img" in text
    rows = [line for line in text.splitlines() if line.startswith(f"| {listed.source}:")]
    row = next(line for line in rows if "&lt;script" in line)
    assert _unescaped_pipes(row) == len(LISTED_HEADER) + 1
    assert "\r" not in text and "[l](" not in text and "\\[l\\](javascript" in text


def test_dataset_warnings_are_shown_near_the_top_of_both_reports(
    fixed: EvalReport, tmp_path: Path
) -> None:
    """Every `meta.dataset_warnings` entry (not only language) is in report.md and report.html,
    above the summary (report.json alone had them); a report without any has no such section."""
    warnings = ["the test messages do not look English <x>", "only 7 in-domain rows"]
    warned = fixed.model_copy(update={"meta": {**fixed.meta, "dataset_warnings": warnings}})
    markdown, page = render_markdown(warned), render_html(warned, [])
    for text, shown in ((markdown, "&lt;x&gt;"), (page, "&lt;x&gt;")):
        assert text.index("Warnings") < text.index("Summary")
        assert f"the test messages do not look English {shown}" in text
        assert "only 7 in-domain rows" in text
    assert "Warnings" not in render_markdown(fixed) and "Warnings" not in render_html(fixed, [])


def test_a_capped_list_counts_every_row_and_says_where_the_rest_are(
    gate: Gatekeeper, tmp_path: Path
) -> None:
    """With the lists capped below the rows they hold, the summary and the section titles count
    every wrongly blocked / let-through message, and both reports say the rest are in
    rows.jsonl (the count was the length of the capped list)."""
    options = EvalOptions(latency_sample=0, bootstrap=0, max_listed=1)
    plan = EvalPlan(datasets=(EVAL,), threshold=0.9, options=options)
    capped = evaluate_gate(gate, plan)[0]
    assert len(capped.wrongly_blocked) == 1 and capped.n_wrongly_blocked > 1
    markdown = render_markdown(capped)
    assert f"Customers wrongly blocked ({capped.n_wrongly_blocked})" in markdown
    assert f"| customers wrongly blocked | {capped.n_wrongly_blocked} (" in markdown
    left = f"{capped.n_wrongly_blocked - 1} more, listed neither here nor in report.json"
    assert left in markdown and left in render_html(capped, plots=[])
