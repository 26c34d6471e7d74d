"""``gatekeeper tune``: a linear adapter learned for one catalog on the frozen embedder's vectors.

What is learned: a d×d matrix ``W`` (initialised at the identity, regularised toward it) that the
gate applies to every vector the embedder returns, exemplars and messages alike
(``normalise(v @ W)``, :class:`~gatekeeper.embedding.adapted.AdaptedEmbedder`). The embedder
itself stays frozen, so a local model and an OpenAI-compatible endpoint are tuned the same way,
and a decision costs one extra d×d product.

The objective is aligned with the gate's ``density`` rule: a softplus surrogate of the AUROC
between the density score (mean of the ``k`` nearest in-domain similarities) of in-domain
exemplars — leave-one-out (a supported question) and leave-intent-out (an on-topic question
of an intent the catalog lacks) — and the density score of off-topic lines (the catalog's
``off_topic`` block plus, as ``gatekeeper init`` would add them, the bundled generic set for
the catalog's language: none to a block that holds it already, else all but the lines init's
cut leaves out as too close to the exemplars; :func:`tuning_texts`); an intent term,
the same surrogate on "nearest exemplar of another intent minus nearest of its own" (weight
``intent``; without it the adapter blurred intents: shop held-out nearest-exemplar accuracy
0.78 → 0.70); and ``lam·‖W − I‖²``. Recipe and defaults were chosen by measurement
(eval/README.md, "Tuned vs frozen"); fine-tuning the encoder itself was measured too and is
not shipped.

Only the catalog reaches the trainer (never a calibration or test file). A seeded 10% of each
intent's exemplars and of the off-topic lines is held out and scored before and after.

The adapter is a directory ``<name>-<hash[:12]>`` holding ``W.npy`` and ``manifest.json``,
written into a temporary sibling and renamed at the end: an interrupted run leaves nothing.
torch is imported inside the training function only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper._version import __version__
from gatekeeper.artifacts import (
    artifact_name,
    publish,
    scratch_dir,
    write_manifest,
)
from gatekeeper.catalog import Catalog
from gatekeeper.embedding import Embedder
from gatekeeper.embedding.adapted import (
    ADAPTER_METHOD,
    WEIGHTS,
    Adapter,
    load_adapter,
    weights_digest,
)
from gatekeeper.errors import CatalogError

#: Called after each training step with (step, total steps, loss).
TrainProgress = Callable[[int, int, float], None]
Count = Callable[[int], None]
_DATA = Path(__file__).resolve().parent / "_data"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class TuneConfig:
    """The recipe's hyper-parameters (defaults: the measured recipe)."""

    steps: int = 100
    lam: float = 0.01
    lr: float = 2e-3
    margin: float = 0.4
    tau: float = 0.05
    k: int = 5
    anchors: int = 256
    loio: float = 0.5
    intent: float = 1.0
    intent_margin: float = 0.05
    holdout: float = 0.1
    threads: int = 1


@dataclass(frozen=True)
class TuningTexts:
    """What the trainer sees: the catalog's exemplars by intent, and off-topic lines."""

    intents: dict[str, list[str]]
    off_topic: list[str]
    language: str
    n_catalog_off_topic: int
    n_generic: int


@dataclass(frozen=True)
class TuneResult:
    """A written adapter and what the run measured."""

    adapter: Adapter
    seconds: float

    @property
    def path(self) -> Path:
        return self.adapter.path

    @property
    def manifest(self) -> dict[str, Any]:
        return self.adapter.manifest


@dataclass
class _Split:
    train: dict[str, list[str]] = field(default_factory=dict)
    held: dict[str, list[str]] = field(default_factory=dict)
    off_train: list[str] = field(default_factory=list)
    off_held: list[str] = field(default_factory=list)


# -- data ------------------------------------------------------------------------------------


def catalog_language(catalog: Catalog) -> str:
    """``zh`` when most exemplars are written in CJK script, else ``en``."""
    texts = [t for intent in catalog.intents for t in intent.exemplars]
    cjk = sum(1 for t in texts if _CJK.search(t))
    return "zh" if texts and cjk * 2 > len(texts) else "en"


def generic_off_topic(language: str) -> list[str]:
    """The bundled generic off-topic messages for ``language`` (empty if none are bundled)."""
    path = _DATA / f"off_topic.{language}.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


#: A catalog whose off-topic block is at least this share of generic lines holds the generic set
#: already (``gatekeeper init`` put it there, minus the lines it cut and those the owner then
#: deleted): tune adds none of the generic lines it lacks.
HOLDS_GENERIC_SHARE = 0.5

#: Embeds texts for the generic lines' cut (unit rows, one per text).
Embed = Callable[[list[str]], npt.NDArray[np.float32]]


def tuning_texts(catalog: Catalog, embed: Embed | None = None) -> TuningTexts:
    """The catalog's exemplars by intent; off-topic: its ``off_topic`` block, plus, as
    ``gatekeeper init`` would add them, the generic set for its language minus lines that
    repeat an exemplar (compared case-insensitively).

    Consistent with ``init``: a block that already holds the generic set (at least
    :data:`HOLDS_GENERIC_SHARE` of its lines are generic ones: init made it) gets none of the
    generic lines it lacks, since init left them out as too close to the exemplars, or the
    owner deleted them as lines the business serves; otherwise the generic lines init's cut
    leaves out (cosine to the nearest exemplar at least :func:`~gatekeeper.scaffold.auto_cut`,
    read off the exemplars' vectors by ``embed``; without ``embed``, no cut) are not added."""
    intents = {intent.name: list(intent.exemplars) for intent in catalog.intents}
    if len(intents) < 2:
        raise CatalogError("tuning needs a catalog with at least two intents")
    exemplars = {t.casefold() for texts in intents.values() for t in texts}
    language = catalog_language(catalog)
    own = list(catalog.off_topic.exemplars)
    bundled = generic_off_topic(language)
    generic = (
        [] if holds_generic(own, bundled) else [t for t in bundled if t.casefold() not in exemplars]
    )
    if generic and embed is not None:
        generic = _under_the_cut(intents, own, generic, embed)
    seen: set[str] = set()
    off: list[str] = []
    for text in own + generic:
        if text.casefold() not in seen:
            seen.add(text.casefold())
            off.append(text)
    if len(off) < 2:
        raise CatalogError(
            "tuning needs off-topic lines: give the catalog an off_topic block (no generic "
            f"set is bundled for language {language!r})"
        )
    return TuningTexts(intents, off, language, len(own), len(off) - len(own))


def holds_generic(off_topic: list[str], generic: list[str]) -> bool:
    """Whether the off-topic lines ``off_topic`` hold the ``generic`` set already (at least
    :data:`HOLDS_GENERIC_SHARE` of them are generic lines), as a catalog made by init does."""
    bundled = {t.casefold() for t in generic}
    share = sum(t.casefold() in bundled for t in off_topic) / max(len(off_topic), 1)
    return bool(off_topic) and share >= HOLDS_GENERIC_SHARE


def _under_the_cut(
    intents: dict[str, list[str]], own: list[str], generic: list[str], embed: Embed
) -> list[str]:
    """The ``generic`` lines init would keep: cosine to the nearest exemplar under the cut read
    off the exemplars (:func:`~gatekeeper.scaffold.auto_cut`). The catalog's own off-topic
    lines are embedded in the same call (the trainer needs them next)."""
    from gatekeeper.scaffold import auto_cut

    texts = [t for ts in intents.values() for t in ts]
    owners = [name for name, ts in intents.items() for _ in ts]
    vectors = embed(texts + own + generic)
    in_domain, lines = vectors[: len(texts)], vectors[len(texts) + len(own) :]
    nearest = (lines @ in_domain.T).max(axis=1)
    cut = auto_cut(in_domain, owners)
    return [line for line, sim in zip(generic, nearest, strict=True) if sim < cut]


def split_holdout(texts: TuningTexts, frac: float, seed: int) -> _Split:
    """Seeded split: ``frac`` of each intent's exemplars (at least one when it has three or
    more) and of the off-topic lines are held out from training."""
    rng = np.random.default_rng(seed)
    split = _Split()
    for name in sorted(texts.intents):
        exemplars = texts.intents[name]
        k = round(len(exemplars) * frac)
        if frac > 0 and k == 0 and len(exemplars) >= 3:
            k = 1
        perm = rng.permutation(len(exemplars))
        split.held[name] = [exemplars[i] for i in perm[:k]]
        split.train[name] = [exemplars[i] for i in perm[k:]]
    perm = rng.permutation(len(texts.off_topic))
    k = round(len(texts.off_topic) * frac)
    split.off_held = [texts.off_topic[i] for i in perm[:k]]
    split.off_train = [texts.off_topic[i] for i in perm[k:]]
    return split


# -- training --------------------------------------------------------------------------------


def fit_linear(
    in_vecs: npt.NDArray[np.float32],
    in_labels: npt.NDArray[np.int64],
    off_vecs: npt.NDArray[np.float32],
    config: TuneConfig,
    seed: int,
    progress: TrainProgress | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """Learn ``W`` on training vectors (unit rows); returns it and the last loss."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(np.ascontiguousarray(in_vecs, dtype=np.float32))
        o = torch.from_numpy(np.ascontiguousarray(off_vecs, dtype=np.float32))
        labels = torch.from_numpy(np.asarray(in_labels, dtype=np.int64))
        d, k = x.shape[1], min(config.k, max(1, x.shape[0] - 1))
        eye = torch.eye(d)
        w = torch.nn.Parameter(torch.eye(d))
        optimiser = torch.optim.Adam([w], lr=config.lr)
        anchors = min(config.anchors, x.shape[0])
        loss = torch.tensor(0.0)

        def density(q: Any, index: Any, mask: Any = None) -> Any:
            s = q @ index.T
            if mask is not None:
                s = s.masked_fill(mask, -2.0)
            return s.topk(k, dim=1).values.mean(1)

        def softplus(margin: Any) -> Any:
            return torch.nn.functional.softplus(margin / config.tau).mean()

        for step in range(config.steps):
            z = torch.nn.functional.normalize(x @ w, dim=1)
            zo = torch.nn.functional.normalize(o @ w, dim=1)
            a = torch.randperm(z.shape[0], generator=generator)[:anchors]
            same = labels[a][:, None] == labels[None, :]
            itself = torch.zeros_like(same)
            itself[torch.arange(len(a)), a] = True
            d_off = density(zo, z)[None]
            loo = softplus(d_off - density(z[a], z, itself)[:, None] + config.margin)
            loio = softplus(d_off - density(z[a], z, same)[:, None] + config.margin)
            mix = (1 - config.loio) * loo + config.loio * loio
            keep = softplus(_intent_margin(z[a] @ z.T, same, itself) + config.intent_margin)
            loss = config.tau * (mix + config.intent * keep) + config.lam * ((w - eye) ** 2).sum()
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            if progress is not None:
                progress(step + 1, config.steps, float(loss.detach()))
        return w.detach().numpy().astype(np.float32), float(loss.detach())
    finally:
        torch.set_num_threads(threads)


def _intent_margin(sims: Any, same: Any, itself: Any) -> Any:
    """Per anchor: nearest exemplar of another intent minus nearest other exemplar of its own
    (positive when the anchor's nearest neighbour names the wrong intent)."""
    own = sims.masked_fill(~same | itself, -2.0).max(1).values
    other = sims.masked_fill(same, -2.0).max(1).values
    return other - own


def _auroc(pos: npt.NDArray[Any], neg: npt.NDArray[Any]) -> float:
    """P(pos > neg) + ½·P(tie), by ranks."""
    values = np.concatenate([pos, neg]).astype(np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = (starts + (counts + 1) / 2.0)[inverse]
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def heldout_metrics(
    weights: npt.NDArray[np.float32],
    index: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    held: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    off_held: npt.NDArray[np.float32],
    k: int,
) -> dict[str, float]:
    """Held-out metrics with the training exemplars as the index, vectors mapped by
    ``weights``: nearest-exemplar intent accuracy of held-out exemplars; density AUROC
    held-out exemplars vs held-out off-topic; the same with each held-out exemplar's own
    intent removed from the index (leave-intent-out, a stand-in for an unsupported question)."""
    (vectors, labels), (held_vecs, held_labels) = index, held
    if not len(held_vecs) or not len(off_held):
        return {}

    def mapped(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = v @ weights
        return np.asarray(
            out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12), dtype=np.float32
        )

    z, zh, zo = mapped(vectors), mapped(held_vecs), mapped(off_held)
    k = min(k, len(z))

    def density(q: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None = None) -> Any:
        s = q @ z.T
        if mask is not None:
            s = np.where(mask, -2.0, s)
        return np.sort(s, axis=1)[:, -k:].mean(1)

    d_off = density(zo)
    return {
        "intent_accuracy": float((labels[(zh @ z.T).argmax(1)] == held_labels).mean()),
        "auroc_in_vs_off": _auroc(density(zh), d_off),
        "auroc_loio_vs_off": _auroc(density(zh, held_labels[:, None] == labels[None, :]), d_off),
    }


# -- the whole run ---------------------------------------------------------------------------


def tune_adapter(
    catalog: Catalog,
    embedder: Embedder,
    *,
    out: Path | None = None,
    adapters_dir: Path | None = None,
    name: str = "catalog",
    seed: int = 0,
    config: TuneConfig | None = None,
    embed_progress: Count | None = None,
    on_embed_total: Count | None = None,
    train_progress: TrainProgress | None = None,
) -> TuneResult:
    """Embed ``catalog`` with the frozen ``embedder``, learn ``W``, and write the adapter to
    ``out`` or to ``adapters_dir/<name>-<hash[:12]>``. Nothing is written unless the whole run
    succeeds."""
    if (out is None) == (adapters_dir is None):
        raise ValueError("give exactly one of out and adapters_dir")
    config = config or TuneConfig()
    started = time.perf_counter()
    embed = _EmbedOnce(embedder, embed_progress, on_embed_total)
    texts = tuning_texts(catalog, embed)
    split = split_holdout(texts, config.holdout, seed)
    names = sorted(split.train)
    number = {n: i for i, n in enumerate(names)}
    train_texts = [t for n in names for t in split.train[n]]
    held_texts = [t for n in names for t in split.held[n]]
    every = train_texts + held_texts + split.off_train + split.off_held
    vectors = embed(every)
    cut = np.cumsum([len(train_texts), len(held_texts), len(split.off_train)])
    train_v, held_v, off_v, off_held_v = np.split(vectors, cut)
    train_l = np.array([number[n] for n in names for _ in split.train[n]], dtype=np.int64)
    held_l = np.array([number[n] for n in names for _ in split.held[n]], dtype=np.int64)

    fit_started = time.perf_counter()
    weights, loss = fit_linear(train_v, train_l, off_v, config, seed, train_progress)
    fit_seconds = time.perf_counter() - fit_started
    eye = np.eye(weights.shape[0], dtype=np.float32)
    index, held = (train_v, train_l), (held_v, held_l)
    described = {
        "method": ADAPTER_METHOD,
        "base_embedder": embedder.identity,
        "dimension": int(weights.shape[0]),
        "catalog_hash": catalog.content_hash(),
        "seed": seed,
        "steps": config.steps,
        "hyperparameters": asdict(config),
        "weights_sha256": weights_digest(weights),
    }
    manifest_hash = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    manifest = {
        "format": 1,
        **described,
        "hash": manifest_hash,
        "data": {
            "language": texts.language,
            "intents": len(names),
            "exemplars_train": len(train_texts),
            "exemplars_heldout": len(held_texts),
            "off_topic_train": len(split.off_train),
            "off_topic_heldout": len(split.off_held),
            "off_topic_from_catalog": texts.n_catalog_off_topic,
            "off_topic_generic": texts.n_generic,
        },
        "final_loss": loss,
        "dist_from_identity": float(np.linalg.norm(weights - eye)),
        "heldout": {
            "frozen": heldout_metrics(eye, index, held, off_held_v, config.k),
            "adapted": heldout_metrics(weights, index, held, off_held_v, config.k),
        },
        "train_seconds": round(fit_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gatekeeper_version": __version__,
    }
    target = out if out is not None else adapters_dir / artifact_name(name, manifest_hash)  # type: ignore[operator]
    write_adapter(target, weights, manifest)
    return TuneResult(load_adapter(target), time.perf_counter() - started)


class _EmbedOnce:
    """The embedder's vectors of texts, each text embedded once (the generic lines' cut and
    the trainer ask for the same ones); the progress total grows by the texts still to embed."""

    def __init__(self, embedder: Embedder, progress: Count | None, on_total: Count | None) -> None:
        self.embedder, self.progress, self.on_total = embedder, progress, on_total
        self.vectors: dict[str, npt.NDArray[np.float32]] = {}

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            if self.on_total is not None:
                self.on_total(len(self.vectors) + len(missing))
            embedded = self.embedder.embed(missing, progress=self.progress)
            self.vectors.update(zip(missing, embedded, strict=True))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def write_adapter(target: Path, weights: npt.NDArray[np.float32], manifest: dict[str, Any]) -> None:
    """Write ``W.npy`` and ``manifest.json`` into a temporary sibling of ``target``, then
    rename it to ``target`` (replacing an older adapter there)."""
    target = Path(target).expanduser()
    tmp = scratch_dir(target.parent, target.name)
    try:
        np.save(tmp / WEIGHTS, np.ascontiguousarray(weights, dtype=np.float32))
        write_manifest(tmp, manifest)
        publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "HOLDS_GENERIC_SHARE",
    "TuneConfig",
    "TuneResult",
    "TuningTexts",
    "catalog_language",
    "fit_linear",
    "generic_off_topic",
    "heldout_metrics",
    "holds_generic",
    "load_adapter",
    "split_holdout",
    "tune_adapter",
    "tuning_texts",
    "write_adapter",
]
