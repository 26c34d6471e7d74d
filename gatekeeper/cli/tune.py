"""``gatekeeper tune``: adapt the configured embedder to the catalog — a linear adapter on its
vectors (any embedder), or a fine-tuned copy of a local encoder (``--method encoder``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.markup import escape
from rich.table import Table

from gatekeeper.cli._app import (
    CatalogOption,
    ConfigOption,
    TuneMethod,
    _stderr,
    app,
    friendly_errors,
    progress_bar,
    settings_target,
    setup,
    tracked,
)
from gatekeeper.paths import option
from gatekeeper.settings import Settings


@app.command()
def tune(
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Adapter directory (default: `<data_dir>/adapters/<catalog>-<hash>/`).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the hold-out split and sampling.")
    ] = 0,
    method: Annotated[
        TuneMethod,
        typer.Option(
            "--method",
            help="adapter: a linear map learned on the frozen model's vectors (any embedder, "
            "seconds); encoder: fine-tune a local encoder itself (sentence-transformers, "
            "minutes on a CPU).",
        ),
    ] = TuneMethod.adapter,
    steps: Annotated[
        int, typer.Option("--steps", min=1, max=100_000, help="Adapter training steps (Adam).")
    ] = 100,
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, max=100, help="Encoder fine-tuning epochs.")
    ] = 1,
    triplets: Annotated[
        int,
        typer.Option(
            "--triplets", min=8, max=1_000_000, help="Encoder fine-tuning triplets per epoch."
        ),
    ] = 1500,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Store embedding.adapter (or, with --method encoder, embedding.model, removing "
            "embedding.adapter) in the settings file; one that does not exist is created "
            "serving the catalog, one serving another catalog is refused.",
        ),
    ] = False,
) -> None:
    """Adapt the embedder to the catalog: a linear adapter, or a fine-tuned local encoder.

    Only the catalog is used (its exemplars, its off_topic block and, as `gatekeeper init`
    would add them, the bundled generic off-topic lines: none when the block holds them
    already); 10% of each (at least one exemplar of an intent with three or more) is held out
    and scored before and after. The result is a new model: rebuild the index and calibrate
    the threshold for it (the commands it prints).
    """
    from gatekeeper.artifacts import check_replaceable
    from gatekeeper.catalog import load_catalog
    from gatekeeper.embedding import build_embedder
    from gatekeeper.eval.settings_file import check_settings_target, check_write_catalog
    from gatekeeper.tuning import TuneConfig, tune_adapter

    with friendly_errors():
        target = settings_target(config, write=write)
        settings = setup(
            config if config is None or config.exists() or not write else None, quiet=True
        )
        new_file = write and not target.exists()
        if write and not new_file:  # never an adapter of one catalog in a file serving another
            trained_on, served = catalog or settings.catalog, settings.writable_catalog
            check_write_catalog(trained_on, served, target, "an adapter trained on")
        if write:
            check_settings_target(target)
        if out is not None:
            check_replaceable(out)  # before any training, and never over a directory of files
        catalog_path = catalog or settings.catalog
        loaded = load_catalog(catalog_path)
        flags = _flags(settings, config, catalog, write=write)
        if method is TuneMethod.encoder:
            _tune_encoder(
                settings, loaded, catalog_path, out, seed, epochs, triplets, target, flags
            )
            return
        frozen = settings.embedding.model_copy(update={"adapter": None})
        embedder = build_embedder(frozen)
        console = _stderr()
        if settings.embedding.adapter is not None:
            console.print(
                f"note: tuning the frozen model; the configured adapter "
                f"{escape(str(settings.embedding.adapter))} is not used",
                highlight=False,
            )
        with _tune_progress(console) as progress:
            advance, set_total = tracked(progress, "loading the embedding model")
            set_total(1)
            embedder.load()
            advance(1)
            embed, embed_total = tracked(progress, "embedding the catalog")
            train = progress.add_task("training the adapter", total=steps)

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(
                    train,
                    completed=step,
                    total=total,
                    description=f"training the adapter (loss {loss:.4f})",
                )

            result = tune_adapter(
                loaded,
                embedder,
                out=out,
                adapters_dir=None if out is not None else settings.data_dir / "adapters",
                name=Path(catalog_path).stem,
                seed=seed,
                config=TuneConfig(steps=steps),
                embed_progress=embed,
                on_embed_total=embed_total,
                train_progress=on_step,
            )
        _print_result(result.manifest, result.seconds)
        if write:
            _write(target, catalog_path, flags, adapter=result.path, seed=seed, steps=steps)
        _print_next_steps(result.path, embedder.identity, result.manifest, flags)


def _tune_encoder(
    settings: Settings,
    loaded: Any,
    catalog_path: Path,
    out: Path | None,
    seed: int,
    epochs: int,
    triplets: int,
    target: Path,
    flags: _Flags,
) -> None:
    from gatekeeper.finetune import FinetuneConfig, finetune_encoder

    console = _stderr()
    if settings.embedding.adapter is not None:
        console.print("note: fine-tuning the model itself; the configured adapter is not used")
    with _tune_progress(console) as progress:
        train = progress.add_task("fine-tuning the encoder", total=None)

        def on_step(step: int, total: int, loss: float) -> None:
            description = f"fine-tuning the encoder (loss {loss:.4f})"
            progress.update(train, completed=step, total=total, description=description)

        result = finetune_encoder(
            loaded,
            settings.embedding.model_copy(update={"adapter": None}),
            out=out,
            models_dir=None if out is not None else settings.data_dir / "models",
            name=Path(catalog_path).stem,
            seed=seed,
            config=FinetuneConfig(epochs=epochs, triplets=triplets),
            progress=on_step,
        )
    _print_heldout(result.manifest, "tuned")
    data = result.manifest["data"]
    typer.echo(
        f"fine-tuned {epochs} epoch(s) of {triplets} triplets in "
        f"{result.manifest['train_seconds']:.1f} s ({result.seconds:.1f} s in all) on "
        f"{data['exemplars_train']} exemplars of {data['intents']} intents and "
        + _off_topic_summary(data)
    )
    if flags.written:
        _write(target, catalog_path, flags, model=result.path, seed=seed)
    where = result.path.resolve()
    typer.echo(f"model: {where}")
    typer.echo(f"  settings file:  embedding:\n                    model: {where}")
    typer.echo(f"  environment:    GATEKEEPER_EMBEDDING__MODEL={where}")
    stale = (
        ""
        if flags.written or settings.embedding.adapter is None
        else (
            f" First remove embedding.adapter ({settings.embedding.adapter}) from the settings, as "
            "--write does: it was trained on the old model's vectors and is refused for this one."
        )
    )
    typer.echo(
        "the fine-tuned model is a new model: the current index and threshold are refused for "
        f"it.{stale} Then run:\n" + _then_run(flags, "GATEKEEPER_EMBEDDING__MODEL", where)
    )


def _tune_progress(console: Any) -> Any:
    """The shared progress bar (with the time left; the loss is in the description)."""
    return progress_bar(console)


def _print_result(manifest: dict[str, Any], seconds: float) -> None:
    _print_heldout(manifest, "adapted")
    data = manifest["data"]
    typer.echo(
        f"trained {manifest['steps']} steps in {manifest['train_seconds']:.1f} s "
        f"({seconds:.1f} s in all) on {data['exemplars_train']} exemplars of "
        f"{data['intents']} intents and {_off_topic_summary(data)}; "
        f"‖W − I‖ = {manifest['dist_from_identity']:.3f}"
    )


def _off_topic_summary(data: dict[str, Any]) -> str:
    """How many off-topic lines trained, how many were held out, and where they came from."""
    catalog, generic = data["off_topic_from_catalog"], data["off_topic_generic"]
    return (
        f"{data['off_topic_train']} off-topic lines ({data['off_topic_heldout']} more held out; "
        f"of all {catalog + generic}, {catalog} from the catalog and {generic} generic "
        f"'{data['language']}')"
    )


#: A held-out metric this much lower after tuning is worth a warning (noise is smaller).
WORSE_BY = 0.005


def held_out_title(data: dict[str, Any]) -> str:
    """What was held out, as it was: 10% of each intent's exemplars but at least one of an
    intent with three or more (so one of each intent of 3 to 14: 21% of a catalog of 47 in
    intents of one to five), and of the off-topic lines; the rest is the index the held-out
    ones are scored against."""
    held, off_held = data["exemplars_heldout"], data["off_topic_heldout"]
    everything, off_all = held + data["exemplars_train"], off_held + data["off_topic_train"]
    return (
        f"held out: {held} of {everything} exemplars ({_share(held, everything)}: 10% of each "
        f"intent, at least one of an intent with three or more) and {off_held} of {off_all} "
        f"off-topic lines ({_share(off_held, off_all)}); index: the rest"
    )


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "–"


def _print_heldout(manifest: dict[str, Any], tuned: str) -> None:
    from rich.console import Console

    frozen, adapted = manifest["heldout"]["frozen"], manifest["heldout"][tuned]
    data = manifest["data"]
    table = Table(title=held_out_title(data))
    table.add_column("metric", style="bold")
    table.add_column("frozen")
    table.add_column(tuned)
    labels = {
        "auroc_in_vs_off": "density AUROC, in-domain vs off-topic",
        "auroc_loio_vs_off": "density AUROC, own intent left out vs off-topic",
        "intent_accuracy": "nearest-exemplar intent accuracy",
    }
    for key, label in labels.items():
        if key in frozen:
            table.add_row(label, f"{frozen[key]:.4f}", f"{adapted[key]:.4f}")
    Console().print(table)
    worse = [
        f"{label} {frozen[key]:.3f} → {adapted[key]:.3f}"
        for key, label in labels.items()
        if key in frozen and adapted[key] < frozen[key] - WORSE_BY
    ]
    if worse:
        _stderr().print(
            f"[bold yellow]warning:[/] the {tuned} model is worse than the frozen one on the "
            f"held-out exemplars: {'; '.join(worse)}. Compare both with `gatekeeper eval` on "
            "labelled messages of yours before switching.",
            highlight=False,
        )


class _Flags(NamedTuple):
    """The options of the advised ``index`` and ``calibrate --write`` commands, and whether
    ``--write`` stored the tuned model in the settings file (else the commands carry it in an
    environment variable)."""

    for_index: str
    for_calibrate: str
    written: bool


def _flags(settings: Settings, config: Path | None, catalog: Path | None, *, write: bool) -> _Flags:
    """The advised commands read the settings file the tuned model is in, serving the tuned
    catalog: with ``--write``, the file written (which then serves it: it was checked, or is
    created serving it); else the user's own ``--config`` and ``--catalog``, and for
    ``calibrate --write`` a file that takes a threshold for that catalog
    (:meth:`Settings.write_flag`)."""
    if write:
        flag = option("config", config) if config else ""
        return _Flags(flag, flag, written=True)
    on_catalog = option("catalog", catalog) if catalog else ""
    served = settings.served_catalog  # the settings file's own (GATEKEEPER_CATALOG aside)
    tuned = settings.model_copy(update={"catalog": catalog or settings.catalog})
    tuned.with_source_file(settings.source_file, served)
    return _Flags(tuned.config_flag() + on_catalog, tuned.write_flag() + on_catalog, False)


def _write(
    target: Path,
    catalog: Path,
    flags: _Flags,
    *,
    seed: int,
    adapter: Path | None = None,
    model: Path | None = None,
    steps: int = 0,
) -> None:
    """Store the tuned ``adapter`` (or fine-tuned ``model``) in the settings file ``target``,
    creating it serving ``catalog`` (as ``calibrate --write`` does): the advised commands then
    read both from it."""
    import os

    from gatekeeper.eval.settings_file import start_settings_file, store_adapter, store_model

    if not target.exists():
        start_settings_file(target, catalog)
        typer.echo(f"created {target} serving the catalog {Path(catalog).resolve()}")
    if adapter is not None:
        key = "adapter"
        store_adapter(target, adapter, note=f"gatekeeper tune (seed {seed}, {steps} steps)")
        typer.echo(f"wrote embedding.adapter = {adapter.resolve()} to {target}")
    elif model is not None:
        key = "model"
        note = f"gatekeeper tune --method encoder (seed {seed})"
        if store_model(target, model, note=note):
            typer.echo(
                f"wrote embedding.model = {model.resolve()} to {target} and removed its "
                "embedding.adapter (trained on the old model's vectors, it is refused for the "
                "new one; `gatekeeper tune" + flags.for_index + " --write` trains one for it)"
            )
        else:
            typer.echo(f"wrote embedding.model = {model.resolve()} to {target}")
    variable = f"GATEKEEPER_EMBEDDING__{key.upper()}"
    if variable in os.environ:
        _stderr().print(
            f"[bold yellow]warning:[/] {variable} is set: it overrides the settings file's "
            f"embedding.{key}; unset it",
            highlight=False,
        )


def _then_run(flags: _Flags, variable: str, path: Path) -> str:
    """The commands that make a tuned model usable, runnable as printed: a new index and a
    threshold on its scale, with the environment variables that chose the model; without
    ``--write`` the tuned model's (``variable``=``path``) too, since the settings lack it."""
    from gatekeeper.calibration import scale_environment

    env = scale_environment(**{variable: None if flags.written else str(path)})
    prefix = "".join(f"{word} " for word in env)
    commands = (
        f"  {prefix}gatekeeper index --rebuild{flags.for_index}\n"
        f"  {prefix}gatekeeper calibrate{flags.for_calibrate} --dataset "
        "YOUR_LABELLED_MESSAGES.jsonl --target-pass-rate 0.98 --write"
    )
    if flags.written:
        return commands
    key = variable.rsplit("__", 1)[1].lower()
    return (
        f"{commands}\n(the variable gives each command the tuned model; to serve it, set "
        f"embedding.{key}: {path} in the settings file, as `--write` does, or keep {variable} "
        "set wherever the gate runs)"
    )


def _print_next_steps(path: Path, identity: str, manifest: dict[str, Any], flags: _Flags) -> None:
    where = path.resolve()
    typer.echo(f"adapter: {where}")
    typer.echo(f"  settings file:  embedding:\n                    adapter: {where}")
    typer.echo(f"  environment:    GATEKEEPER_EMBEDDING__ADAPTER={where}")
    typer.echo(
        f"the adapted model is a new model ({identity}+adapter:{manifest['hash'][:12]}): the "
        "current index and threshold are refused for it. Then run:\n"
        + _then_run(flags, "GATEKEEPER_EMBEDDING__ADAPTER", where)
    )
