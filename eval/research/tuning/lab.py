"""Experiment driver: build training data from a catalog (+ generic off-topic), fine-tune MiniLM
with sentence-transformers losses, evaluate on calibration files, log to results.jsonl.

    python lab.py '{"name": "trip_m03", "loss": "triplet", "margin": 0.3, "lr": 2e-5}'
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

import eval_numpy as E

torch.set_num_threads(2)

DEFAULTS = dict(
    bench="banking77",  # or shop
    loss="triplet",  # triplet | contrastive | online_contrastive | mnrl_intent | proto
    margin=0.3,
    lr=2e-5,
    epochs=1,
    batch=32,
    p_same=0.5,  # triplet positive: same intent with this prob, else another intent
    hard_neg=0,  # >0: negative sampled among the hard_neg off-topic lines nearest the anchor (frozen)
    distill=0.0,  # weight of the MSE-to-original-embedding regulariser (0 = off)
    use_generic=True,  # add generic off-topic lines to training negatives
    use_catalog_off=True,  # the catalog's own off_topic block as negatives
    holdout=0.0,  # fraction of each intent's exemplars not trained on
    warmup=0.1,
    seed=0,
    max_anchors=0,  # cap anchors per epoch (0 = all in-domain exemplars)
    keep=False,
)


def build_triplets(intents, off, cfg, rng, frozen_embed=None):
    names = list(intents)
    flat = [(t, n) for n in names for t in intents[n]]
    order = rng.permutation(len(flat))
    if cfg["max_anchors"]:
        order = order[: cfg["max_anchors"]]
    hard = None
    if cfg["hard_neg"] and frozen_embed is not None:
        va = frozen_embed([flat[i][0] for i in order])
        vo = frozen_embed(off)
        sims = va @ vo.T
        hard = np.argsort(-sims, axis=1)[:, : cfg["hard_neg"]]
    A, P, N = [], [], []
    for j, i in enumerate(order):
        a, name = flat[i]
        if rng.random() < cfg["p_same"] and len(intents[name]) > 1:
            choices = [t for t in intents[name] if t != a]
            p = choices[rng.integers(len(choices))]
        else:
            other = names[rng.integers(len(names))]
            while other == name and len(names) > 1:
                other = names[rng.integers(len(names))]
            p = intents[other][rng.integers(len(intents[other]))]
        if hard is not None:
            n = off[hard[j, rng.integers(hard.shape[1])]]
        else:
            n = off[rng.integers(len(off))]
        A.append(a), P.append(p), N.append(n)
    return A, P, N


class Weighted(torch.nn.Module):
    def __init__(self, inner, w):
        super().__init__()
        self.inner, self.w = inner, w

    def forward(self, features, labels):
        return self.w * self.inner(features, labels)


def train(cfg: dict, catalog: E.Catalog, generic: list[str], out_dir: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, losses
    from sentence_transformers.trainer import SentenceTransformerTrainer
    from sentence_transformers.training_args import (BatchSamplers, MultiDatasetBatchSamplers,
                                                     SentenceTransformerTrainingArguments)
    from transformers import set_seed

    set_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    intents = {}
    for n, ex in catalog.intents.items():
        ex = list(ex)
        if cfg["holdout"]:
            perm = rng.permutation(len(ex))
            k = int(round(len(ex) * cfg["holdout"]))
            ex = [ex[i] for i in perm[k:]]
        intents[n] = ex
    off = (list(catalog.off_topic) if cfg["use_catalog_off"] else []) + (generic if cfg["use_generic"] else [])
    off = E._clean(off)
    model = SentenceTransformer(E.base_model_path(), device="cpu")
    model.max_seq_length = 256
    frozen = E.embedder(model)

    train_sets, loss_fns = {}, {}
    L = cfg["loss"]
    if L == "triplet":
        A, P, N = [], [], []
        for ep in range(cfg["epochs"]):
            a, p, n = build_triplets(intents, off, cfg, rng, frozen)
            A += a; P += p; N += n
        train_sets["main"] = Dataset.from_dict({"anchor": A, "positive": P, "negative": N})
        loss_fns["main"] = losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE,
                                              triplet_margin=cfg["margin"])
    elif L in ("contrastive", "online_contrastive"):
        a1, a2, lab = [], [], []
        for ep in range(cfg["epochs"]):
            A, P, N = build_triplets(intents, off, cfg, rng, frozen)
            for x, y, z in zip(A, P, N):
                a1 += [x, x]; a2 += [y, z]; lab += [1.0, 0.0]
        train_sets["main"] = Dataset.from_dict({"s1": a1, "s2": a2, "label": lab})
        if L == "contrastive":
            loss_fns["main"] = losses.ContrastiveLoss(model, margin=cfg["margin"])
        else:
            loss_fns["main"] = losses.OnlineContrastiveLoss(model, margin=cfg["margin"])
    elif L == "mnrl_intent":  # intent-level MNRL (anchor, same-intent positive, off-topic hard negative)
        cfg2 = dict(cfg, p_same=1.0)
        A, P, N = [], [], []
        for ep in range(cfg["epochs"]):
            a, p, n = build_triplets(intents, off, cfg2, rng, frozen)
            A += a; P += p; N += n
        train_sets["main"] = Dataset.from_dict({"anchor": A, "positive": P, "negative": N})
        loss_fns["main"] = losses.MultipleNegativesRankingLoss(model)
    else:
        raise ValueError(L)
    if cfg["distill"]:
        texts = [t for ex in intents.values() for t in ex] + off
        order = rng.permutation(len(texts))
        texts = [texts[i] for i in order]
        teacher = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=False,
                               show_progress_bar=False)
        reps = max(1, int(np.ceil(len(train_sets["main"]) / len(texts))))
        train_sets["distill"] = Dataset.from_dict({"text": texts * reps, "label": [v.tolist() for v in teacher] * reps})
        loss_fns["distill"] = Weighted(losses.MSELoss(model), cfg["distill"])

    args = SentenceTransformerTrainingArguments(
        output_dir=out_dir + ".trainer", num_train_epochs=1, per_device_train_batch_size=cfg["batch"],
        learning_rate=cfg["lr"], warmup_ratio=cfg["warmup"], seed=cfg["seed"], data_seed=cfg["seed"],
        use_cpu=True, report_to=[], save_strategy="no", logging_steps=50, disable_tqdm=True,
        dataloader_drop_last=False,
        batch_sampler=BatchSamplers.NO_DUPLICATES if L == "mnrl_intent" else BatchSamplers.BATCH_SAMPLER,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN,
    )
    if len(train_sets) == 1:
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_sets["main"],
                                             loss=loss_fns["main"])
    else:
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_sets, loss=loss_fns)
    t = time.time()
    trainer.train()
    secs = time.time() - t
    model.save(out_dir)
    shutil.rmtree(out_dir + ".trainer", ignore_errors=True)
    return {"train_seconds": round(secs, 1), "n_train": len(train_sets["main"]), "n_off": len(off)}


def main():
    cfg = dict(DEFAULTS)
    cfg.update(json.loads(sys.argv[1]))
    name = cfg.get("name") or "run"
    generic = E.load_generic_off_topic()
    bench = E.banking_bench() if cfg["bench"] == "banking77" else E.shop_bench()
    out = f"/tmp/tunelab/models/{name}"
    info = train(cfg, bench.catalog, generic, out)
    embed = E.embedder(E.load_model(out))
    cache = {}
    res = {"cfg": cfg, **info, bench.name: E.evaluate(bench, embed, test=cfg.get("test", False), cache=cache)}
    res[bench.name + "+genidx"] = E.evaluate(bench, embed, extra_off=generic, test=cfg.get("test", False), cache=cache)
    print(json.dumps(res))
    for k in (bench.name, bench.name + "+genidx"):
        print(k, E.fmt(res[k]))
    with open("/tmp/tunelab/results.jsonl", "a") as h:
        h.write(json.dumps(res) + "\n")
    if not cfg["keep"]:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
