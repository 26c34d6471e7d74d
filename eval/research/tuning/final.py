"""Final runs with recipe.py: tune (timed), calibrate on calibration files, report test numbers.

    python final.py local banking77 '{...recipe kwargs...}'
    python final.py local shop '{...}'
    python final.py determinism shop '{...}'
    python final.py linear banking77|shop '{...}'
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time

import numpy as np

import eval_numpy as E
import recipe


def bench(name):
    return E.banking_bench() if name == "banking77" else E.shop_bench()


def main():
    mode, bname = sys.argv[1], sys.argv[2]
    kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    b = bench(bname)
    g = E.load_generic_off_topic()
    off = list(b.catalog.off_topic) + g
    out = {"mode": mode, "bench": bname, "kwargs": kw}
    if mode in ("local", "determinism", "localcal"):
        d = f"/tmp/tunelab/models/final_{bname}" + kw.pop("suffix", "")
        t = time.time()
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        m = recipe.tune_local(E.base_model_path(), b.catalog.intents, off, d, **kw)
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        out["tune"] = m
        out["tune_wall_seconds"] = round(time.time() - t, 1)
        out["tune_cpu_seconds"] = round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1)
        if mode == "determinism":
            d2 = d + "_b"
            recipe.tune_local(E.base_model_path(), b.catalog.intents, off, d2, **kw)
            texts = b.cal.texts[:500]
            v1 = E.embedder(E.load_model(d))(texts)
            v2 = E.embedder(E.load_model(d2))(texts)
            out["determinism_max_abs_diff"] = float(np.abs(v1 - v2).max())
            shutil.rmtree(d2, ignore_errors=True)
        embed = E.embedder(E.load_model(d))
        cache = {}
        test = mode != "localcal"  # localcal: calibration numbers only (for choosing)
        out["tuned"] = E.evaluate(b, embed, test=test, cache=cache)
        out["tuned_genidx"] = E.evaluate(b, embed, test=test, cache=cache, extra_off=g)
    elif mode == "linear":
        from linear import get_cache

        cache = get_cache()
        emb = None

        def lazy(ts):
            nonlocal emb
            if emb is None:
                emb = E.embedder(E.load_model())
            return emb(ts)

        texts, labels = [], []
        for n, ex in b.catalog.intents.items():
            texts += ex
            labels += [n] * len(ex)
        offc = E._clean(off)
        X = E.evaluate.__globals__["np"].stack  # noqa (keep flake quiet)
        per = cache.setdefault("_t", {})
        need = [t for t in dict.fromkeys(texts + offc) if t not in per]
        if need:
            per.update(zip(need, lazy(need)))
        t = time.time()
        W, info = recipe.tune_linear(np.stack([per[x] for x in texts]), labels,
                                     np.stack([per[x] for x in offc]), **kw)
        out["train_seconds"] = round(time.time() - t, 1)
        out["info"] = info
        tr = lambda v: v @ W
        out["frozen"] = E.evaluate(b, lazy, test=True, cache=cache)
        out["tuned"] = E.evaluate(b, lazy, test=True, cache=cache, transform=tr)
        out["tuned_genidx"] = E.evaluate(b, lazy, test=True, cache=cache, transform=tr, extra_off=g)
        np.save(f"/tmp/tunelab/linear_W_{bname}.npy", W)
    print(json.dumps(out))
    for k in ("frozen", "tuned", "tuned_genidx"):
        if k in out:
            print(k, E.fmt(out[k]))
    with open("/tmp/tunelab/final_results.jsonl", "a") as h:
        h.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
