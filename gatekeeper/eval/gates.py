"""The gate an eval runs: built for a catalog (in that catalog's own store), indexed when needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.calibration import record
from gatekeeper.calibration import without_conversation_settings as without_them
from gatekeeper.conversation import Turn
from gatekeeper.errors import DatasetError, InputError
from gatekeeper.eval.datasets import Dataset, Example
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.gate_settings import CalibrationRecord
from gatekeeper.settings import Settings

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.store import SyncReport


def settings_for_catalog(settings: Settings, catalog_path: Path) -> Settings:
    """``settings`` serving ``catalog_path``: the gate built from them uses that catalog's own
    store, the same one ``gatekeeper index --catalog`` fills (see
    :func:`gatekeeper.store.collection_name`)."""
    return settings.model_copy(update={"catalog": catalog_path})


def with_gate_settings(gate: Gatekeeper, **changes: Any) -> Gatekeeper:
    """The same gate (model, store and catalog shared) with other ``gate.*`` settings."""
    from gatekeeper.gate import Gatekeeper

    gate_settings = gate.settings.gate.model_copy(update=changes)
    settings = gate.settings.model_copy(update={"gate": gate_settings})
    return Gatekeeper(
        settings=settings, catalog=gate.catalog, embedder=gate.embedder, store=gate.store
    )


def with_threshold(gate: Gatekeeper, threshold: float) -> Gatekeeper:
    """The same gate with another global threshold, chosen explicitly (so it may be used
    although it was not calibrated for this model). The configured threshold's record goes
    with it: a hint that *that* threshold is stale would be about a value this run ignores."""
    return with_gate_settings(
        gate, threshold=threshold, allow_uncalibrated=True, calibrated_for=None
    )


def without_conversation_settings(gate: Gatekeeper) -> Gatekeeper:
    """The same gate for a run the conversation settings change nothing in (single messages
    only, or choosing them): they go back to their defaults with no record, so no hint that
    they are stale is given (see :func:`gatekeeper.calibration.without_conversation_settings`)."""
    return with_gate_settings(gate, **dict(without_them(gate.settings.gate)))


def for_calibration(gate: Gatekeeper) -> Gatekeeper:
    """The same gate, allowed to score before its threshold is calibrated (calibration only
    needs threshold-free scores). The configured threshold's record is dropped too: it is about
    to be replaced, so a warning that it was calibrated on another catalog would be noise; and
    the conversation settings' record (they still route the calibration chats): whether they
    are stale is said by the gate the threshold is then used in (or by ``calibrate`` once it
    wrote the threshold), not once more here."""
    return with_gate_settings(
        gate, allow_uncalibrated=True, calibrated_for=None, conversations_calibrated_for=None
    )


def record_of(gate: Gatekeeper) -> CalibrationRecord:
    """What a calibration of ``gate`` records: its embedder, rule and catalog."""
    return record(gate.embedder.identity, gate.rule.name, gate.catalog.content_hash())


def calibrated(gate: Gatekeeper, threshold: float) -> Gatekeeper:
    """The same gate with ``threshold``, recorded as calibrated for its model, rule, catalog."""
    return with_gate_settings(
        gate,
        threshold=threshold,
        allow_uncalibrated=False,
        calibrated_for=record_of(gate),
    )


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


def tuned_gate(
    gate: Gatekeeper, *, seed: int = 0, task: TaskFactory = no_progress
) -> tuple[Gatekeeper, dict[str, Any]]:
    """The gate with a linear adapter learned on its catalog alone (``gatekeeper tune``'s
    recipe, on the frozen model), in the store of the adapted model (a new identity, so a
    collection of its own), and what the run measured (the report's ``meta.tuned``). The
    adapter is written under ``<data_dir>/adapters/``."""
    from gatekeeper.embedding.adapted import AdaptedEmbedder
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.tuning import TuneConfig, tune_adapter

    base = gate.embedder.base if isinstance(gate.embedder, AdaptedEmbedder) else gate.embedder
    config = TuneConfig()
    advance, set_total = task("loading the embedding model")
    set_total(1)
    base.load()
    advance(1)
    embed, embed_total = task("embedding the catalog for tuning")
    step, steps_total = task("training the adapter")
    steps_total(config.steps)
    result = tune_adapter(
        gate.catalog,
        base,
        adapters_dir=gate.settings.data_dir / "adapters",
        name=Path(gate.settings.catalog).stem,
        seed=seed,
        config=config,
        embed_progress=embed,
        on_embed_total=embed_total,
        train_progress=lambda done, total, loss: step(1),
    )
    embedding = gate.settings.embedding.model_copy(update={"adapter": result.path})
    settings = gate.settings.model_copy(update={"embedding": embedding})
    adapted = Gatekeeper.from_settings(
        settings, catalog=gate.catalog, embedder=AdaptedEmbedder(base, result.adapter)
    )
    summary = _tuning_summary(result.manifest, result.seconds)
    where = str(result.path.resolve())  # printed as a setting: valid from any directory
    return adapted, {"adapter": where, "steps": result.manifest["steps"], **summary}


def finetuned_gate(
    gate: Gatekeeper, *, seed: int = 0, task: TaskFactory = no_progress
) -> tuple[Gatekeeper, dict[str, Any]]:
    """The gate on a copy of its local encoder fine-tuned on its catalog alone (``gatekeeper
    tune --method encoder``), in the store of that model (a new identity, so a collection of
    its own), and what the run measured. The model is written under ``<data_dir>/models/``."""
    from gatekeeper.finetune import finetune_encoder
    from gatekeeper.gate import Gatekeeper

    step, steps_total = task("fine-tuning the encoder")
    seen = [0]

    def on_step(done: int, total: int, loss: float) -> None:
        if seen[0] == 0:
            steps_total(total)
        step(done - seen[0])
        seen[0] = done

    frozen = gate.settings.embedding.model_copy(update={"adapter": None})
    result = finetune_encoder(
        gate.catalog,
        frozen,
        models_dir=gate.settings.data_dir / "models",
        name=Path(gate.settings.catalog).stem,
        seed=seed,
        progress=on_step,
    )
    embedding = frozen.model_copy(update={"model": str(result.path)})
    settings = gate.settings.model_copy(update={"embedding": embedding})
    tuned = Gatekeeper.from_settings(settings, catalog=gate.catalog)
    manifest = result.manifest
    summary = _tuning_summary(manifest, result.seconds)
    epochs = manifest["hyperparameters"]["epochs"]
    return tuned, {
        "model": str(result.path.resolve()),
        "method": manifest["method"],
        "epochs": epochs,
        **summary,
    }


def _tuning_summary(manifest: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What any tuning run's manifest tells the report."""
    keys = ("hash", "base_embedder", "train_seconds", "seed", "heldout")
    return {**{key: manifest[key] for key in keys}, "seconds": round(seconds, 2)}


def check_lengths(dataset: Dataset, limit: int) -> None:
    """Refuse, naming file and line, a message longer than the gate accepts."""
    for example in dataset.examples:
        if len(example.text) > limit:
            raise DatasetError(
                f"dataset {example.where}: the message has {len(example.text)} characters; "
                f"the gate's limit is {limit} (gate.max_message_chars)"
            )


def chunks(items: Sequence[Example], size: int) -> list[Sequence[Example]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def judge_chunk(
    gate: Gatekeeper, chunk: Sequence[Example], inputs: Sequence[Any] | None = None
) -> list[list[Turn]]:
    """``gate.judge_many`` on a chunk of examples (``inputs``: their :meth:`Example.as_input`,
    if made already). A message the gate refuses to judge is a :class:`DatasetError` naming
    its file, line and turn, not its place in the batch (``messages[127]: ...``)."""
    inputs = [e.as_input() for e in chunk] if inputs is None else inputs
    try:
        return gate.judge_many(inputs)
    except InputError as exc:
        for example, message in zip(chunk, inputs, strict=True):
            try:
                gate.validate(message)
            except InputError as alone:
                raise DatasetError(f"dataset {example.where}: {alone}") from exc
        raise


def judge_all(
    gate: Gatekeeper, dataset: Dataset, task: TaskFactory = no_progress, chunk_size: int = 128
) -> list[list[Turn]]:
    """Every example's customer turns, judged by the gate (no threshold, no backend)."""
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    advance, set_total = task(f"scoring {dataset.name}")
    set_total(len(dataset))
    judged: list[list[Turn]] = []
    for chunk in chunks(dataset.examples, chunk_size):
        judged += judge_chunk(gate, chunk)
        advance(len(chunk))
    return judged
