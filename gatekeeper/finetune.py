"""``gatekeeper tune --method encoder``: fine-tune a local encoder on one catalog.

Where the linear adapter (:mod:`gatekeeper.tuning`) moves the frozen model's vectors, this
changes the model itself, with sentence-transformers' trainer and losses (the field's tooling,
CPU-friendly for MiniLM-size encoders):

* **a domain-level triplet loss** (cosine distance, margin 0.6): anchor an exemplar, positive
  another exemplar of *any* intent, negative an off-topic line (the catalog's ``off_topic``
  block plus the bundled generic set). It teaches "the shop's domain" against "anything else",
  not the listed intents, so an on-topic question of an intent the catalog lacks stays close
  to the domain; intent-level objectives were measured to push exactly those away;
* **a distillation term** (MSE toward the frozen model's own vectors of the same texts), which
  keeps the model where the triplets do not speak (measured: without it off-topic blocking fell
  on banking77; eval/README.md, "Tuned vs frozen").

Only the catalog reaches the trainer; a seeded 10% of each intent's exemplars and of the
off-topic lines is held out and scored before and after. The result is a model directory
(``model.safetensors``, ``tokenizer.json``, ... as sentence-transformers saves it, so the native
runtime loads it) with a ``manifest.json``, named ``<catalog>-encoder-<hash[:12]>``: its name is
part of the gate's model identity, so an index or threshold of the base or of another tuning is
refused for it. It is written into a temporary sibling and renamed at the end: an interrupted
run leaves nothing. torch, datasets and sentence-transformers are imported inside the run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper._version import __version__
from gatekeeper.artifacts import (
    MANIFEST_FILE,
    artifact_name,
    publish,
    scratch_dir,
    write_manifest,
)
from gatekeeper.catalog import Catalog
from gatekeeper.errors import ConfigError
from gatekeeper.settings import EmbeddingSettings
from gatekeeper.tuning import (
    TrainProgress,
    TuningTexts,
    heldout_metrics,
    split_holdout,
    tuning_texts,
)

ENCODER_METHOD = "encoder-triplet-distill"


@dataclass(frozen=True)
class FinetuneConfig:
    """The recipe's hyper-parameters (defaults: the measured recipe, eval/README.md)."""

    epochs: int = 1
    triplets: int = 1500
    batch_size: int = 32
    lr: float = 2e-5
    margin: float = 0.6
    warmup_ratio: float = 0.1
    holdout: float = 0.1
    k: int = 5


@dataclass(frozen=True)
class FinetuneResult:
    """A written fine-tuned model and what the run measured."""

    path: Path
    manifest: dict[str, Any]
    seconds: float


def finetune_encoder(
    catalog: Catalog,
    settings: EmbeddingSettings,
    *,
    out: Path | None = None,
    models_dir: Path | None = None,
    name: str = "catalog",
    seed: int = 0,
    config: FinetuneConfig | None = None,
    progress: TrainProgress | None = None,
) -> FinetuneResult:
    """Fine-tune the local encoder of ``settings`` on ``catalog`` and write it to ``out`` or
    to ``models_dir/<name>-encoder-<hash[:12]>``. Nothing is written unless the run succeeds."""
    if (out is None) == (models_dir is None):
        raise ValueError("give exactly one of out and models_dir")
    base = _base_model(settings)
    config = config or FinetuneConfig()
    started = time.perf_counter()
    prefix = settings.query_instruction or ""

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import set_seed

    from gatekeeper.embedding.local import available_cores

    set_seed(seed)
    torch.set_num_threads(available_cores())
    model = SentenceTransformer(str(base), device="cpu")
    texts = tuning_texts(catalog, lambda t: _unit(model, [prefix + x for x in t]))
    split = split_holdout(texts, config.holdout, seed)
    names = sorted(split.train)
    train = [t for n in names for t in split.train[n]]
    measure = _HeldOut(split, names, prefix, config.k)
    frozen = measure.metrics(model)
    fit_started = time.perf_counter()
    loss = _train(model, train, split.off_train, prefix, config, seed, progress)
    fit_seconds = time.perf_counter() - fit_started
    tuned = measure.metrics(model)

    tmp = _scratch(out, models_dir)
    try:
        model.save(str(tmp), create_model_card=False)
        described = _described(settings, catalog, seed, config, tmp / "model.safetensors")
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        manifest = {
            "format": 1,
            **described,
            "hash": digest,
            "data": _data_counts(texts, split),
            "final_loss": loss,
            "heldout": {"frozen": frozen, "tuned": tuned},
            "train_seconds": round(fit_seconds, 2),
            "seconds": round(time.perf_counter() - started, 2),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gatekeeper_version": __version__,
        }
        write_manifest(tmp, manifest)
        target = out if out is not None else models_dir / artifact_name(name, digest, "encoder")  # type: ignore[operator]
        publish(tmp, Path(target).expanduser())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FinetuneResult(Path(target), manifest, time.perf_counter() - started)


def _described(
    settings: EmbeddingSettings, catalog: Catalog, seed: int, config: FinetuneConfig, weights: Path
) -> dict[str, Any]:
    """What the model's hash covers: its base, data, recipe and weights."""
    return {
        "method": ENCODER_METHOD,
        "base_model": settings.model,
        "base_embedder": _identity(settings),
        "catalog_hash": catalog.content_hash(),
        "seed": seed,
        "hyperparameters": asdict(config),
        "weights_sha256": _digest(weights),
    }


def _data_counts(texts: TuningTexts, split: Any) -> dict[str, Any]:
    """How much of what the trainer saw (and held out)."""
    return {
        "language": texts.language,
        "intents": len(split.train),
        "exemplars_train": sum(len(v) for v in split.train.values()),
        "exemplars_heldout": sum(len(v) for v in split.held.values()),
        "off_topic_train": len(split.off_train),
        "off_topic_heldout": len(split.off_held),
        "off_topic_from_catalog": texts.n_catalog_off_topic,
        "off_topic_generic": texts.n_generic,
    }


def _base_model(settings: EmbeddingSettings) -> Path:
    from gatekeeper.embedding.local import resolve_model_path

    if settings.provider != "local" or settings.model_class != "encoder":
        raise ConfigError(
            "tune --method encoder fine-tunes a local encoder (embedding.provider: local, "
            "embedding.model_class: encoder); for an OpenAI-compatible embedder or another model "
            "class use the linear adapter (gatekeeper tune, the default --method adapter)"
        )
    if settings.quantize != "none":
        raise ConfigError(
            "tune --method encoder trains the float model: unset embedding.quantize for the "
            "run (quantize the tuned model when serving it)"
        )
    return resolve_model_path(settings.model)


def _identity(settings: EmbeddingSettings) -> str:
    from gatekeeper.embedding.local import LocalEmbedder

    return LocalEmbedder(settings).identity


def _train(
    model: Any,
    train: list[str],
    off_topic: list[str],
    prefix: str,
    config: FinetuneConfig,
    seed: int,
    progress: TrainProgress | None,
) -> float:
    """Triplet + distillation training with sentence-transformers' trainer; the last loss."""
    from datasets import Dataset
    from transformers import TrainerCallback

    rng = np.random.default_rng(seed)

    def pick(pool: list[str]) -> list[str]:
        return [prefix + pool[i] for i in rng.integers(len(pool), size=config.triplets)]

    triplets = Dataset.from_dict(
        {"anchor": pick(train), "positive": pick(train), "negative": pick(off_topic)}
    )
    anchors = pick(train + off_topic)
    targets = model.encode(anchors, batch_size=64, convert_to_numpy=True)
    distill = Dataset.from_dict({"text": anchors, "label": [v.tolist() for v in targets]})

    losses = LossReport(progress)

    class Report(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            losses.logged(state.global_step, state.max_steps, logs)

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            losses.stepped(state.global_step, state.max_steps)

        @property
        def last(self) -> float:
            return losses.last

    import datasets

    quiet = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()  # our own progress bar reports the steps
    try:
        return _run_trainer(model, triplets, distill, config, seed, Report())
    finally:
        if quiet:
            datasets.utils.logging.enable_progress_bar()


class LossReport:
    """The trainer's progress as ``progress`` sees it: each step, and each logged loss as it
    comes. The trainer logs a step's loss after that step's end, so a bar updated at step ends
    only showed the loss of the step before the last (0.0267 shown, 0.0204 in the manifest)."""

    def __init__(self, progress: TrainProgress | None) -> None:
        self.progress = progress
        self.last = float("nan")

    def stepped(self, step: int, total: int) -> None:
        if self.progress is not None:
            self.progress(step, total, self.last)

    def logged(self, step: int, total: int, logs: dict[str, Any] | None) -> None:
        if logs and "loss" in logs:
            self.last = float(logs["loss"])
            self.stepped(step, total)


def _run_trainer(
    model: Any, triplets: Any, distill: Any, config: FinetuneConfig, seed: int, report: Any
) -> float:
    import tempfile

    import sentence_transformers.losses as losses
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import PrinterCallback

    # A non-empty widget list stops the trainer from sampling "widget examples" for a model
    # card (a progress bar of its own); no model card is written.
    model.model_card_data.widget = [{"text": "gatekeeper"}]
    with tempfile.TemporaryDirectory(prefix="gatekeeper-finetune-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr,
            warmup_ratio=config.warmup_ratio,
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset={"triplet": triplets, "distill": distill},
            loss={
                "triplet": losses.TripletLoss(
                    model,
                    distance_metric=losses.TripletDistanceMetric.COSINE,
                    triplet_margin=config.margin,
                ),
                "distill": losses.MSELoss(model),
            },
            callbacks=[report],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return float(report.last)


class _HeldOut:
    """The held-out metrics of :func:`gatekeeper.tuning.heldout_metrics`, for a model."""

    def __init__(self, split: Any, names: list[str], prefix: str, k: int) -> None:
        number = {n: i for i, n in enumerate(names)}
        self.train = [prefix + t for n in names for t in split.train[n]]
        self.held = [prefix + t for n in names for t in split.held[n]]
        self.off = [prefix + t for t in split.off_held]
        self.train_labels = np.array([number[n] for n in names for _ in split.train[n]])
        self.held_labels = np.array([number[n] for n in names for _ in split.held[n]])
        self.k = k

    def metrics(self, model: Any) -> dict[str, float]:
        index, held = _unit(model, self.train), _unit(model, self.held)
        off = _unit(model, self.off)
        eye = np.eye(index.shape[1], dtype=np.float32)
        return heldout_metrics(
            eye, (index, self.train_labels), (held, self.held_labels), off, self.k
        )


def _unit(model: Any, texts: list[str]) -> npt.NDArray[np.float32]:
    """The sentence-transformers ``model``'s vectors of ``texts``, as unit rows."""
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    v = model.encode(texts, batch_size=64, convert_to_numpy=True)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.asarray(v, dtype=np.float32)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _scratch(out: Path | None, models_dir: Path | None) -> Path:
    parent = Path(out).expanduser().parent if out is not None else Path(models_dir)  # type: ignore[arg-type]
    return scratch_dir(parent, "finetune")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a model directory written by :func:`finetune_encoder`, if it has one."""
    file = Path(path) / MANIFEST_FILE
    if not file.is_file():
        return None
    loaded: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return loaded
