"""Writing an eval report's files: ``report.json``, the plots, ``report.md``,
``report.html`` and ``rows.jsonl``, all of one run or none of it.

The files are written into a hidden directory inside the report directory, then each is
renamed over its old copy, with Ctrl-C and SIGTERM held back for those few renames, and a
rename that fails undoes the earlier ones: a run interrupted or failing while writing leaves
the previous run's files as they were (it once left a ``report.json`` of the new run beside the
``report.md`` and ``rows.jsonl`` of the old one).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.artifacts import scratch_dir
from gatekeeper.errors import InputError
from gatekeeper.eval.plots import plot_intents, plot_scores, plot_tradeoff
from gatekeeper.eval.report import PLOTS, plots_of, render_html, render_markdown
from gatekeeper.eval.schema import EvalReport
from gatekeeper.paths import why_unwritable


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    directory: Path
    json: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    rows: Path


#: The files a report writes into its directory (the plots only when drawn).
_FILES = ("report.json", *PLOTS, "report.md", "report.html", "rows.jsonl")


def check_report_dir(out_dir: Path) -> None:
    """Refuse, with :class:`InputError`, a report directory that cannot be written: call it
    before a long eval so the problem shows before the work, not after. Beyond what the path
    looks like, it creates the directory and the hidden staging directory the report is
    written into (``/proc/x`` passes a permission check and fails there), then removes what
    it created; a report file's name taken by a directory is refused too."""
    problem = why_unwritable(out_dir, want_dir=True) or _staging_problem(out_dir)
    if problem:
        raise InputError(f"cannot write the report to {out_dir}: {problem}")
    in_the_way = [name for name in _FILES if (out_dir / name).is_dir()]
    if in_the_way:
        raise InputError(f"{out_dir / in_the_way[0]} is a directory, not a report file")


def _staging_problem(out_dir: Path) -> str | None:
    """Why a hidden staging directory cannot be made in ``out_dir``, or None; nothing made
    here is left behind."""
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    probe = out_dir / f".report.probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for directory in created:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
    return None


def write_report(report: EvalReport, out_dir: Path) -> ReportFiles:
    """Write report.json, the PNG plots, report.md, report.html and rows.jsonl (one line per
    evaluated row) into ``out_dir``, all or none (see the module docstring);
    :class:`InputError` if the directory cannot be written."""
    check_report_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staged = scratch_dir(out_dir, "report")
        try:
            written = _write_files(report, staged)
            names = [path.name for path in written]
            # a plot this run left out goes too: an older run's copy would pass for this one's
            _publish(names, staged, out_dir, gone=[p for p in PLOTS if p not in names])
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    except OSError as exc:
        raise InputError(f"cannot write the report to {out_dir}: {exc}") from exc
    json_path, *plots, md_path, html_path, rows_path = (out_dir / p.name for p in written)
    return ReportFiles(out_dir, json_path, md_path, html_path, tuple(plots), rows_path)


def _write_files(report: EvalReport, out_dir: Path) -> list[Path]:
    """Every file of the report, written into ``out_dir``: report.json, the plots, report.md,
    report.html, rows.jsonl, in that order."""
    json_path = out_dir / "report.json"
    json_path.write_text(
        json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    drawn = dict(zip(PLOTS, (plot_scores, plot_tradeoff, plot_intents), strict=True))
    plots = [drawn[name](report, out_dir / name) for name in plots_of(report)]
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(report), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(report, plots), encoding="utf-8")
    rows_path = out_dir / "rows.jsonl"  # every row: for a notebook, a spreadsheet, a recount
    rows_path.write_text("".join(r.model_dump_json() + "\n" for r in report.rows), "utf-8")
    return [json_path, *plots, md_path, html_path, rows_path]


def _publish(names: list[str], staged: Path, out_dir: Path, gone: Sequence[str] = ()) -> None:
    """Rename each staged file over its copy in ``out_dir`` and set aside the old copies of
    ``gone`` (files this run does not have), Ctrl-C and SIGTERM held until all are; a rename
    that fails puts every earlier one back (the old copies wait in a hidden directory
    meanwhile). A directory in the way of a file is refused before any rename."""
    in_the_way = [name for name in names if (out_dir / name).is_dir()]
    if in_the_way:
        raise OSError(f"{out_dir / in_the_way[0]} is a directory, not a report file")
    with _signals_held():
        old = scratch_dir(out_dir, "report-old")
        done: list[tuple[str, bool]] = []  # (name, whether an old copy was set aside)
        try:
            for name in [*names, *gone]:
                had = (out_dir / name).is_file()
                if had:
                    (out_dir / name).replace(old / name)
                done.append((name, had))
                if name in names:
                    (staged / name).replace(out_dir / name)
        except BaseException:
            _put_back(done, old, out_dir)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)


def _put_back(done: list[tuple[str, bool]], old: Path, out_dir: Path) -> None:
    """Undo :func:`_publish`'s renames: each old copy back in place, each new file without
    an old one removed."""
    for name, had in reversed(done):
        with contextlib.suppress(OSError):
            if had:
                (old / name).replace(out_dir / name)
            else:
                (out_dir / name).unlink(missing_ok=True)


#: Signals held while the report's files are renamed into place (delivered right after).
_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM recorded, not acted on, until the block ends, then delivered as they
    would have been. Python runs signal handlers in the main thread whichever thread the kernel
    picked (a per-thread mask let a progress bar's thread take them); elsewhere than the main
    thread no handler can be set, and nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {number: signal.signal(number, lambda n, _: caught.append(n)) for number in _HELD}
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:  # None: set outside Python, which left it as it was
                signal.signal(number, handler)
        for received in dict.fromkeys(caught):
            signal.raise_signal(received)  # as if it came now: KeyboardInterrupt, or the exit


__all__ = ["ReportFiles", "check_report_dir", "write_report"]
