"""``gatekeeper tune``: learn a linear adapter for the catalog on the configured embedder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import TimeRemainingColumn
from rich.table import Table

from gatekeeper.cli._app import (
    DEFAULT_SETTINGS_FILE,
    CatalogOption,
    ConfigOption,
    _stderr,
    app,
    friendly_errors,
    progress_bar,
    setup,
    tracked,
)
from gatekeeper.settings import Settings


@app.command()
def tune(
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Adapter directory (default: <data_dir>/adapters/<catalog>-<hash>/).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the hold-out split and sampling.")
    ] = 0,
    steps: Annotated[
        int, typer.Option("--steps", min=1, max=100_000, help="Training steps (Adam).")
    ] = 100,
    write: Annotated[
        bool,
        typer.Option("--write", help="Store embedding.adapter in the settings file."),
    ] = False,
) -> None:
    """Learn a linear adapter for the catalog on the frozen embedder's vectors.

    Only the catalog is used (its exemplars, its off_topic block and the bundled generic
    off-topic set); 10% of each is held out and scored before and after. The adapted model is
    a new model: rebuild the index and calibrate the threshold for it.
    """
    from gatekeeper.catalog import load_catalog
    from gatekeeper.embedding import build_embedder
    from gatekeeper.eval.settings_file import check_settings_target, store_adapter
    from gatekeeper.settings import default_config_path, project_path
    from gatekeeper.tuning import TuneConfig, tune_adapter

    with friendly_errors():
        target = config if config is not None else default_config_path()
        target = target or project_path(DEFAULT_SETTINGS_FILE)
        settings = setup(
            config if config is None or config.exists() or not write else None, quiet=True
        )
        if write:
            check_settings_target(target)
        catalog_path = catalog or settings.catalog
        loaded = load_catalog(catalog_path)
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
        _print_next_steps(result.path, embedder.identity, result.manifest, settings)
        if write:
            store_adapter(target, result.path, note=f"gatekeeper tune (seed {seed}, {steps} steps)")
            typer.echo(f"wrote embedding.adapter = {result.path.resolve()} to {target}")


def _tune_progress(console: Any) -> Any:
    """The shared progress bar, with the time left (the loss is in the description)."""
    progress = progress_bar(console)
    progress.columns = (*progress.columns, TimeRemainingColumn())
    return progress


def _print_result(manifest: dict[str, Any], seconds: float) -> None:
    from rich.console import Console

    frozen, adapted = manifest["heldout"]["frozen"], manifest["heldout"]["adapted"]
    data = manifest["data"]
    table = Table(
        title=f"held out: {data['exemplars_heldout']} exemplars, "
        f"{data['off_topic_heldout']} off-topic lines (index: the other 90%)"
    )
    table.add_column("metric", style="bold")
    table.add_column("frozen")
    table.add_column("adapted")
    labels = {
        "auroc_in_vs_off": "density AUROC, in-domain vs off-topic",
        "auroc_loio_vs_off": "density AUROC, own intent left out vs off-topic",
        "intent_accuracy": "nearest-exemplar intent accuracy",
    }
    for key, label in labels.items():
        if key in frozen:
            table.add_row(label, f"{frozen[key]:.4f}", f"{adapted[key]:.4f}")
    Console().print(table)
    typer.echo(
        f"trained {manifest['steps']} steps in {manifest['train_seconds']:.1f} s "
        f"({seconds:.1f} s in all) on {data['exemplars_train']} exemplars of "
        f"{data['intents']} intents and {data['off_topic_train']} off-topic lines "
        f"({data['off_topic_from_catalog']} from the catalog, the rest generic "
        f"'{data['language']}'); ‖W − I‖ = {manifest['dist_from_identity']:.3f}"
    )


def _print_next_steps(
    path: Path, identity: str, manifest: dict[str, Any], settings: Settings
) -> None:
    where = path.resolve()
    typer.echo(f"adapter: {where}")
    typer.echo(f"  settings file:  embedding:\n                    adapter: {where}")
    typer.echo(f"  environment:    GATEKEEPER_EMBEDDING__ADAPTER={where}")
    typer.echo(
        f"the adapted model is a new model ({identity}+adapter:{manifest['hash'][:12]}): the "
        "current index and threshold are refused for it. Then run:\n"
        "  gatekeeper index --rebuild\n"
        "  gatekeeper calibrate --dataset YOUR_LABELLED_MESSAGES.jsonl "
        "--target-pass-rate 0.98 --write"
    )
