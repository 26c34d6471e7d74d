"""``gatekeeper init``: scaffold an editable catalog from a file of examples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer
import yaml
from rich.markup import escape

from gatekeeper.cli._app import ConfigOption, _stderr, app, friendly_errors, setup
from gatekeeper.errors import InputError
from gatekeeper.eval.formatting import pct
from gatekeeper.paths import option, why_unwritable, write_atomically

if TYPE_CHECKING:
    from gatekeeper.scaffold import Scaffold


@app.command()
def init(
    examples: Annotated[
        Path,
        typer.Argument(
            help="Your examples: CSV or JSONL rows of text,intent (the catalog format; "
            "optional reply, description, threshold columns; intent off_topic for messages "
            "you do not serve)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The catalog to write (.yaml).")] = Path(
        "catalog.yaml"
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite --out and its .dropped.txt if they exist.")
    ] = False,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="One sentence on what your customer service covers."),
    ] = None,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            help="Language of the canned replies and generic off-topic set: en or "
            "zh (default: detected from the examples).",
        ),
    ] = None,
    cut: Annotated[
        float | None,
        typer.Option(
            "--cut",
            help="Leave out a generic off-topic line whose cosine similarity to an exemplar of "
            "yours reaches this (default: read off your exemplars, at least 0.6).",
        ),
    ] = None,
    traffic: Annotated[
        Path | None,
        typer.Option(
            "--traffic",
            help="A sample of real messages (one per line, or JSONL with text): reports which "
            "look off-topic.",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Lines shown per report.")] = 15,
    config: ConfigOption = None,
) -> None:
    """Scaffold an editable YAML catalog from your examples (canned replies, a refusal and
    generic off-topic messages added), then print the next commands."""
    from gatekeeper.catalog import parse_catalog, read_catalog
    from gatekeeper.embedding import build_embedder
    from gatekeeper.scaffold import (
        LANGUAGES,
        read_traffic,
        render_dropped,
        render_yaml,
        scaffold_catalog,
    )

    with friendly_errors():
        if out.suffix.lower() not in {".yaml", ".yml"}:
            raise InputError(f"--out {out}: the catalog is written as YAML; name it *.yaml")
        dropped_file = out.with_name(out.stem + ".dropped.txt")
        for target in (out, dropped_file):
            if os.path.lexists(target) and not force:  # a link, even to nothing, is there
                raise InputError(f"{target} exists; pass --force to overwrite it")
        problem = why_unwritable(out, want_dir=False)
        if problem:  # before the model loads and embeds, not after
            raise InputError(f"--out {out} cannot be written: {problem}")
        if language is not None and language not in LANGUAGES:
            raise InputError(f"--language {language!r}: use one of {', '.join(LANGUAGES)}")
        if cut is not None and not -1.0 <= cut <= 1.0:
            raise InputError(f"--cut must be a cosine similarity in [-1, 1], got {cut:g}")
        settings = setup(config, quiet=True)
        # the settings file the next commands name: refused before anything is written
        next_settings = _next_settings(out, config, settings.served_catalog)
        console = _stderr()
        loaded = read_catalog(examples)
        for warning in loaded.warnings:
            console.print(
                f"[bold yellow]warning:[/] {escape(str(examples))}: {escape(warning)}",
                highlight=False,
            )
        sample = read_traffic(traffic) if traffic is not None else []
        embedder = build_embedder(settings.embedding)
        with console.status(f"embedding with {embedder.identity}"):
            result = scaffold_catalog(
                loaded.catalog,
                embedder,
                language=language,  # type: ignore[arg-type]  # checked above
                domain=domain,
                cut=cut,
                traffic=sample,
            )
        text = render_yaml(result, source=examples.name, dropped_file=dropped_file.name)
        parse_catalog(yaml.safe_load(text), source=str(out))  # what we write loads
        try:
            write_atomically(out, text.encode())
            write_atomically(dropped_file, render_dropped(result).encode())
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
        if next_settings.copy_of is not None:
            from gatekeeper.eval.settings_file import copy_settings

            copy_settings(next_settings.copy_of, next_settings.path, out)
        _report(result, out, dropped_file, top)
        _next_commands(out, next_settings.path, next_settings.note)
        for warning in result.notes:
            console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)


def _report(result: Scaffold, out: Path, dropped_file: Path, top: int) -> None:
    from gatekeeper.scaffold import REVIEW_KEPT

    echo = typer.echo
    too_close = [d for d in result.dropped if d.reason == "too_close"]
    repeats = [d for d in result.dropped if d.reason == "repeats"]
    echo(
        f"wrote {out}: {len(result.owner_intents)} intents of yours"
        + (f" + canned {', '.join(result.canned_added)}" if result.canned_added else "")
        + f", language {result.language}"
    )
    if result.owner_canned:
        echo(
            f"no canned greeting/thanks/goodbye added: your intents "
            f"{', '.join(map(repr, result.owner_canned))} have replies of their own (add any "
            "you miss to the catalog as an intent with a reply)"
        )
    echo(
        f"generic off-topic ({result.language}): kept {len(result.generic_kept)} of "
        f"{result.generic_total}; left out {len(too_close)} too close to your exemplars "
        f"(cosine >= {result.cut:.3f}, {result.cut_source}) and {len(repeats)} repeating one"
    )
    for d in result.dropped[:top]:
        echo(f"  {d.similarity:.3f}  {d.text!r}  ~ {d.intent}: {d.nearest!r}")
    if len(result.dropped) > top:
        echo(f"  … {len(result.dropped) - top} more")
    echo(f"the full list: {dropped_file}")
    review = result.review_kept(min(top, REVIEW_KEPT))
    if review:
        echo(
            f"review these: the {len(review)} kept generic lines nearest to your exemplars "
            f"(first in {out}'s off_topic block; delete any your business serves, or the gate "
            "refuses such customers)"
        )
        for k in review:
            echo(f"  {k.similarity:.3f}  {k.text!r}  ~ {k.intent}: {k.nearest!r}")
    if result.traffic is not None:
        hits = result.traffic.looks_off_topic
        share = len(hits) / result.traffic.n_lines
        echo(
            f"traffic sample: {len(hits)} of {result.traffic.n_lines} lines ({pct(share, 0)}) look "
            "off-topic (nearer to a generic off-topic message than to any exemplar of yours)"
        )
        for line, nearest in hits[:top]:
            echo(f"  {line!r}  ~ {nearest!r}")


class _NextSettings(NamedTuple):
    """The settings file the next commands use, a note on it, and the file it is to be written
    as a copy of (once the catalog is written), if any."""

    path: Path
    note: str
    copy_of: Path | None = None


def _next_settings(out: Path, config: Path | None, served: Path) -> _NextSettings:
    """The settings file the next commands use for the catalog ``out``, and a note on it;
    nothing is written here, so a file that cannot be used is refused before the catalog is.

    The file ``init`` read (``--config``, else the user's own, ``served``: the catalog it
    serves) when it serves ``out``; else its own (``gatekeeper-<out stem>.yaml``,
    :func:`~gatekeeper.settings.catalog_settings_file`), as ``index`` and
    ``eval`` advise for a catalog apart: used as it is when it serves ``out``, else to be
    written as a copy of the file read, serving ``out`` (the model must stay the one this run
    chose the generic lines with), or, with no file of the user's, created by
    ``calibrate --write``."""
    from gatekeeper.settings import catalog_settings_file, own_settings_file

    source = config if config is not None else own_settings_file()
    if source is not None and served.resolve() == out.resolve():
        return _NextSettings(source, f"{source} serves {out}")
    own = catalog_settings_file(out)
    if os.path.lexists(own):
        if _served_by(own) == out.resolve():
            return _NextSettings(own, f"{own} serves {out}")
        raise InputError(
            f"{own}, the settings file the next commands would name for {out}, serves another "
            f"catalog: set 'catalog: {out.resolve()}' in it, or move it away, and run init "
            "again (nothing was written)"
        )
    if source is None:
        return _NextSettings(own, f"calibrate --write creates {own}, serving {out}")
    note = (
        f"wrote {own}: the settings of {source} (which serves {served}), serving {out}, with "
        "no threshold yet"
    )
    return _NextSettings(own, note, copy_of=source)


def _served_by(path: Path) -> Path:
    """The catalog (resolved) that the settings file ``path`` serves."""
    from gatekeeper.settings import load_settings

    return load_settings(path).served_catalog.resolve()


def _next_commands(out: Path, settings_file: Path, note: str) -> None:
    """Print the next commands: each runs as printed, in order (index, calibrate, check)."""
    echo = typer.echo
    flag = option("config", settings_file)
    there = os.path.lexists(settings_file)  # else calibrate --write creates it
    catalog = "" if there else option("catalog", out)
    echo("")
    echo("next: edit the catalog (its comments say what), then")
    echo(f"  gatekeeper index{flag if there else ''}{catalog}")
    echo(
        f"  gatekeeper calibrate{flag}{catalog} --dataset YOUR_LABELLED_MESSAGES.jsonl "
        "--target-pass-rate 0.98 --write"
    )
    echo(
        f"  ({note}; the labelled messages are rows of text,label with label in_domain or "
        "off_topic, not exemplars of the catalog)"
    )
    echo(f'  gatekeeper check{flag} "a customer message"')
