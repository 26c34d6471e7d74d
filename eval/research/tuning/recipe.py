"""Fine-tuning recipes for gatekeeper's embedder, chosen by measurement (see REPORT.md).

tune_local  — adapt a local sentence-transformers model (all-MiniLM-L6-v2, mean pooling) to a
              catalog: domain-level TripletLoss (anchor = catalog exemplar, positive = another
              catalog exemplar of ANY intent, negative = an off-topic line) + MSE distillation to
              the original embeddings (keeps the model close to the original). Trained with
              sentence-transformers' SentenceTransformerTrainer on CPU.
tune_linear — for remote embedders: a d×d matrix W (init I, regularised toward I) applied to the
              returned vectors, trained on a rule-aligned pairwise objective in plain torch.

Both hold out a seeded split of the catalog's own exemplars (and of the off-topic lines) and
report held-out metrics before/after.

Interruptibility: tune_local trains into ``<out_dir>.partial-<pid>`` and renames it to
``out_dir`` only after the model is completely written (os.replace of a directory is atomic on
one filesystem; an existing out_dir is first moved aside and removed after the rename). A
``progress`` callback returning False stops training and nothing is written; Ctrl-C
(KeyboardInterrupt) leaves at most the temporary directory, which is removed in ``finally``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

Progress = Callable[[int, int, dict], "bool | None"]  # (step, total, logs) -> False to stop


# -- shared helpers ---------------------------------------------------------------------------

def _clean(texts):
    out: list[str] = []
    seen = set()
    for t in texts:
        t = (t or "").strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def split_holdout(intents: dict[str, list[str]], off_topic: list[str], frac: float, seed: int):
    """Seeded split: ``frac`` of each intent's exemplars (at least 1 when the intent has >= 3)
    and of the off-topic lines are held out from training."""
    rng = np.random.default_rng(seed)
    train, held = {}, {}
    for name in sorted(intents):
        ex = _clean(intents[name])
        k = int(round(len(ex) * frac))
        if frac > 0 and k == 0 and len(ex) >= 3:
            k = 1
        perm = rng.permutation(len(ex))
        held[name] = [ex[i] for i in perm[:k]]
        train[name] = [ex[i] for i in perm[k:]]
    off = _clean(off_topic)
    perm = rng.permutation(len(off))
    k = int(round(len(off) * frac))
    return train, held, [off[i] for i in perm[k:]], [off[i] for i in perm[:k]]


def _auroc(pos, neg) -> float:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        m = allv == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _density(q, index, k=5, exclude=None):
    s = q @ index.T
    if exclude is not None:
        s = np.where(exclude, -2.0, s)
    k = min(k, s.shape[1])
    return np.sort(s, axis=1)[:, -k:].mean(1)


def heldout_metrics(embed: Callable[[list[str]], np.ndarray], train: dict, held: dict,
                    off_train: list[str], off_held: list[str], k: int = 5) -> dict:
    """Held-out metrics on the catalog's own data, with the training exemplars as the index:
    nearest-exemplar intent accuracy of held-out exemplars; AUROC of the density score (mean of
    k nearest in-domain sims) held-out exemplars vs held-out off-topic lines; the same with each
    held-out exemplar's own intent removed from the index (LOIO: a stand-in for an on-topic
    question of an intent the catalog lacks)."""
    names = sorted(train)
    idx_t = [t for n in names for t in train[n]]
    idx_l = np.array([n for n in names for _ in train[n]])
    h_t = [t for n in names for t in held.get(n, [])]
    h_l = np.array([n for n in names for _ in held.get(n, [])])
    if not h_t:
        return {}
    I, H = embed(idx_t), embed(h_t)
    out: dict[str, float] = {}
    sims = H @ I.T
    out["heldout_intent_acc"] = float((idx_l[sims.argmax(1)] == h_l).mean())
    if off_held:
        O = embed(off_held)
        d_off = _density(O, I, k)
        out["heldout_auroc_in_vs_off"] = _auroc(_density(H, I, k), d_off)
        out["heldout_auroc_loio_vs_off"] = _auroc(_density(H, I, k, h_l[:, None] == idx_l[None, :]), d_off)
    return out


# -- local model ------------------------------------------------------------------------------

def _domain_triplets(intents: dict[str, list[str]], off: list[str], n: int, rng,
                     p_same: float = 0.5) -> dict:
    """anchor: an exemplar; positive: with probability p_same another exemplar of the same
    intent, else an exemplar of a random OTHER intent (domain-level: "this is the same
    business"); negative: a random off-topic line."""
    names = [k for k in sorted(intents) if intents[k]]
    flat = [(t, c) for c in names for t in intents[c]]
    A, P, N = [], [], []
    order = rng.permutation(len(flat))[:n] if n else rng.permutation(len(flat))
    for i in order:
        a, c = flat[i]
        if rng.random() < p_same and len(intents[c]) > 1:
            pool = [t for t in intents[c] if t != a]
        else:
            other = c
            while other == c and len(names) > 1:
                other = names[rng.integers(len(names))]
            pool = intents[other]
        A.append(a)
        P.append(pool[rng.integers(len(pool))])
        N.append(off[rng.integers(len(off))])
    return {"anchor": A, "positive": P, "negative": N}


class _Weighted:  # wraps a sentence-transformers loss with a constant weight
    def __new__(cls, inner, w):
        import torch

        class W(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, features, labels):
                return w * self.inner(features, labels)

        return W()


def tune_local(base_model_dir: str, intents: dict[str, list[str]], off_topic: list[str],
               out_dir: str, *, seed: int = 0, epochs: int = 1, max_anchors: int = 1500,
               margin: float = 0.6, lr: float = 2e-5, batch_size: int = 32, distill: float = 1.0,
               p_same: float = 0.5,
               holdout: float = 0.1, threads: int | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune ``base_model_dir`` on a catalog; save to ``out_dir`` (sentence-transformers
    layout, mean pooling; FlagEmbedding's FlagModel(out_dir, pooling_method="mean") loads it).

    ``intents``: intent name -> exemplars; ``off_topic``: the catalog's off_topic block plus the
    bundled generic off-topic lines. Returns metrics (held-out before/after, wall time)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, losses
    from sentence_transformers.trainer import SentenceTransformerTrainer
    from sentence_transformers.training_args import (BatchSamplers, MultiDatasetBatchSamplers,
                                                     SentenceTransformerTrainingArguments)
    from transformers import TrainerCallback, set_seed

    started = time.time()
    if threads:
        torch.set_num_threads(threads)
    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(seed)
    train, held, off_train, off_held = split_holdout(intents, off_topic, holdout, seed)
    if not off_train:
        raise ValueError("tune_local needs off-topic lines (catalog off_topic block and/or the generic set)")

    model = SentenceTransformer(base_model_dir, device="cpu")
    model.max_seq_length = min(model.max_seq_length or 256, 256)

    def embed(texts):
        return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    before = heldout_metrics(embed, train, held, off_train, off_held)

    n_anchor = sum(len(v) for v in train.values())
    # At most max_anchors triplets per epoch and at most one pass over the exemplars per epoch:
    # a big catalog sees a random subset of its exemplars as anchors. (Cycling a small catalog to
    # 1500 triplets — 3 passes on shop — gave the same calibration numbers but blurred intents:
    # held-out intent accuracy 0.78 -> 0.61 instead of 0.72; see REPORT.md.)
    budget = min(max_anchors or n_anchor, n_anchor) * epochs
    trip = {"anchor": [], "positive": [], "negative": []}
    while len(trip["anchor"]) < budget:
        take = min(n_anchor, budget - len(trip["anchor"]))
        for k, v in _domain_triplets(train, off_train, take, rng, p_same).items():
            trip[k] += v
    datasets = {"domain": Dataset.from_dict(trip)}
    loss = {"domain": losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE,
                                         triplet_margin=margin)}
    if distill > 0:
        texts = [t for n in sorted(train) for t in train[n]] + off_train
        # (ROUND_ROBIN alternates a triplet batch and a distillation batch and stops when either
        # set is exhausted: on a catalog with fewer texts than triplets, fewer triplets are used.)
        texts = [texts[i] for i in rng.permutation(len(texts))][: len(trip["anchor"])]
        teacher = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=False,
                               show_progress_bar=False)
        datasets["distill"] = Dataset.from_dict({"text": texts, "label": [v.tolist() for v in teacher]})
        loss["distill"] = _Weighted(losses.MSELoss(model), distill)

    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run (SIGKILL/SIGTERM)
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)

    class _Cb(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if progress is not None and progress(state.global_step, state.max_steps, dict(logs or {})) is False:
                control.should_training_stop = True
                self.stopped = True

        def on_step_end(self, args, state, control, **kw):
            if progress is not None and progress(state.global_step, state.max_steps, {}) is False:
                control.should_training_stop = True
                self.stopped = True

    cb = _Cb()
    cb.stopped = False
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp / "_trainer"), num_train_epochs=1, per_device_train_batch_size=batch_size,
        learning_rate=lr, warmup_ratio=0.1, weight_decay=0.01, seed=seed, data_seed=seed, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True,
        batch_sampler=BatchSamplers.BATCH_SAMPLER,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, callbacks=[cb],
        loss=loss if len(datasets) > 1 else loss["domain"],
        train_dataset=datasets if len(datasets) > 1 else datasets["domain"],
    )
    try:
        t0 = time.time()
        trainer.train()
        train_seconds = time.time() - t0
        if cb.stopped:
            return {"stopped": True, "steps": trainer.state.global_step}
        after = heldout_metrics(embed, train, held, off_train, off_held)
        model.save(str(tmp))
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "steps": trainer.state.global_step, "n_triplets": len(trip["anchor"]),
        "n_train_exemplars": n_anchor, "n_off_train": len(off_train),
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - started, 1),
        "before": before, "after": after, "out_dir": str(out),
    }


# -- linear adapter for remote embedders ------------------------------------------------------

def tune_linear(in_vecs, in_labels, off_vecs, *, seed: int = 0, lam: float = 0.01, steps: int = 100,
                lr: float = 2e-3, margin: float = 0.4, tau: float = 0.05, k: int = 5, anchors: int = 256,
                loio: float = 0.5, holdout: float = 0.1, threads: int | None = 1):
    """W (d×d, init I): apply as normalise(v @ W) to catalog AND query vectors.

    Loss: softplus surrogate of AUROC between the density score (mean of the k nearest
    in-domain sims, as the gate's rule) of in-domain exemplars — leave-one-out and
    leave-intent-out — and of off-topic lines, + lam * ||W - I||_F^2.
    Returns (W, info) with held-out AUROCs for W and for the identity."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = torch.tensor(np.asarray(in_vecs, np.float32))
    O = torch.tensor(np.asarray(off_vecs, np.float32))
    labs = np.asarray(in_labels)
    lab_id = torch.tensor(np.unique(labs, return_inverse=True)[1])
    d = X.shape[1]
    ho = np.zeros(len(X), bool)
    for c in np.unique(labs):
        idx = np.flatnonzero(labs == c)
        ho[rng.permutation(idx)[: int(round(len(idx) * holdout))]] = True
    ho_off = np.zeros(len(O), bool)
    ho_off[rng.permutation(len(O))[: int(round(len(O) * holdout))]] = True
    tr, tro = torch.tensor(~ho), torch.tensor(~ho_off)
    Xt, Lt, Ot = X[tr], lab_id[tr], O[tro]
    W = torch.nn.Parameter(torch.eye(d))
    eye = torch.eye(d)
    opt = torch.optim.Adam([W], lr=lr)

    def dens(q, index, mask=None):
        s = q @ index.T
        if mask is not None:
            s = s.masked_fill(mask, -2.0)
        return s.topk(k, dim=1).values.mean(1)

    def proj(v, M):
        return torch.nn.functional.normalize(v @ M, dim=1)

    loss = reg = torch.tensor(0.0)
    for _ in range(steps):
        Z, Zo = proj(Xt, W), proj(Ot, W)
        a = torch.randperm(Z.shape[0], generator=g)[:anchors]
        same = Lt[a][:, None] == Lt[None, :]
        selfm = torch.zeros_like(same)
        selfm[torch.arange(len(a)), a] = True
        d_off = dens(Zo, Z)
        l_in = torch.nn.functional.softplus((d_off[None] - dens(Z[a], Z, selfm)[:, None] + margin) / tau).mean()
        l_un = torch.nn.functional.softplus((d_off[None] - dens(Z[a], Z, same)[:, None] + margin) / tau).mean()
        reg = ((W - eye) ** 2).sum()
        loss = tau * ((1 - loio) * l_in + loio * l_un) + lam * reg
        opt.zero_grad()
        loss.backward()
        opt.step()

    info: dict[str, float] = {"final_loss": float(loss), "dist_from_identity": float(reg.detach().sqrt())}
    with torch.no_grad():
        if ho.any() and ho_off.any():
            hm, hom = torch.tensor(ho), torch.tensor(ho_off)
            same = lab_id[hm][:, None] == Lt[None, :]
            for tag, M in (("identity", eye), ("W", W.detach())):
                Z, Zh, Zo = proj(Xt, M), proj(X[hm], M), proj(O[hom], M)
                d_off = dens(Zo, Z).numpy()
                info[f"heldout_auroc_in_vs_off_{tag}"] = _auroc(dens(Zh, Z).numpy(), d_off)
                info[f"heldout_auroc_loio_vs_off_{tag}"] = _auroc(dens(Zh, Z, same).numpy(), d_off)
    return W.detach().numpy().astype(np.float32), info
