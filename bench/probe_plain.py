"""The probe grid of `layerprobe probe` against the same fits written directly in scikit-learn/LightGBM.

On one cache made by `layerprobe extract`: every output x logreg, svm, lgbm x 5
folds, with the default settings of `layerprobe probe` (inner 3-fold choice of
C by log loss, PCA to 256 components above 512 channels for the linear probes,
LightGBM's small-data settings, one BLAS thread per fit, `--jobs`). Four
variants, each a fresh child process, interleaved round by round:

  layerprobe          `run_probes()` as `layerprobe probe` runs it: reads and
                      checks the cache, fits, 1,000-resample intervals of every
                      metric, paired comparisons, writes the results file
  layerprobe-noboot   the same with `--bootstrap 0`
  plain               the same folds (StratifiedKFold, shuffled, seed 0), the
                      same pipelines written out in scikit-learn/LightGBM on
                      the codes as float32 `.npy` files (exported once, before
                      timing; `--plain-dtype float64`: the float64 codes
                      layerprobe fits on, for the very same numbers), joblib
                      with the same jobs and one BLAS thread per fit, and for
                      every (layer, probe) a 1,000-resample
                      percentile interval of the ROC AUC (scikit-learn's
                      `roc_auc_score` per resample, as a user writes it; layerprobe
                      computes intervals of 7 metrics), results to one JSON file
  plain-noboot        the same without the intervals

Printed: median wall time of the whole child (interpreter start and imports
included) and of the work alone, the CPU time of the child and its workers
(user + system; less disturbed than wall time by other load on the machine), the ratio layerprobe / plain with and without
intervals (> 1: layerprobe slower), and how far apart the pooled out-of-fold
ROC AUCs and the AUC intervals of the two are.

Usage: python bench/probe_plain.py CACHE [--jobs 2] [--rounds 3] [--plain-dtype float32|float64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("layerprobe", "plain", "layerprobe-noboot", "plain-noboot")
N_BOOT = 1000
SEED = 0
FOLDS = 5
INNER = 3
C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
SVM_C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
PROBES = ("logreg", "svm", "lgbm")


# ----------------------------------------------------------------------------------------------
# The plain version: what a user writes with scikit-learn and LightGBM alone
def plain_pipeline(probe: str, n_features: int, inner: list):
    from lightgbm import LGBMClassifier
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    if probe != "lgbm" and n_features > 512:
        steps.append(PCA(n_components=256, random_state=SEED))
    if probe == "logreg":
        steps.append(LogisticRegressionCV(Cs=C_GRID, l1_ratios=(0.0,), cv=inner, scoring="neg_log_loss",
                                          class_weight="balanced", max_iter=1000, use_legacy_attributes=False))
    elif probe == "lgbm":
        steps.append(LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=7, min_child_samples=10,
                                    subsample=0.8, subsample_freq=1, colsample_bytree=0.5, reg_lambda=1.0,
                                    max_bin=63, class_weight="balanced", random_state=SEED, n_jobs=1,
                                    deterministic=True, force_col_wise=True, verbose=-1))
    return make_pipeline(*steps)


def plain_svm(X_train, y_train, X_test, inner: list):
    """Scale (+ PCA), then for each C: out-of-fold SVM scores on the inner folds, a Platt sigmoid on them,
    lowest log loss wins; refit at that C and keep its sigmoid."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import cross_val_predict
    from sklearn.svm import LinearSVC

    prepare = plain_pipeline("svm", X_train.shape[1], inner).fit(X_train)
    Z_train, Z_test = prepare.transform(X_train), prepare.transform(X_test)
    best = None
    for C in SVM_C_GRID:
        svm = LinearSVC(C=C, dual="auto", class_weight="balanced", max_iter=1000, random_state=SEED)
        scores = cross_val_predict(svm, Z_train, y_train, cv=inner, method="decision_function").reshape(-1, 1)
        sigmoid = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(scores, y_train)
        loss = log_loss(y_train, sigmoid.predict_proba(scores))
        if best is None or loss < best[0]:
            best = (loss, C, sigmoid)
    svm = LinearSVC(C=best[1], dual="auto", class_weight="balanced", max_iter=1000, random_state=SEED)
    svm.fit(Z_train, y_train)
    return best[2].predict_proba(svm.decision_function(Z_test).reshape(-1, 1))


def plain_fit(probe: str, X, y, train, test, inner):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if probe == "svm":
            return plain_svm(X[train], y[train], X[test], inner)
        return plain_pipeline(probe, X.shape[1], inner).fit(X[train], y[train]).predict_proba(X[test])


def run_plain(codes_dir: Path, jobs: int, n_boot: int, out: Path) -> dict:
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    y = np.load(codes_dir / "y.npy")
    layers = json.loads((codes_dir / "layers.json").read_text())
    X = {name: np.load(codes_dir / f"{i}.npy") for i, name in enumerate(layers)}
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y))
    inner = [list(StratifiedKFold(INNER, shuffle=True, random_state=SEED).split(np.zeros(len(tr)), y[tr]))
             for tr, _ in folds]
    tasks = [(name, probe, k) for name in layers for probe in PROBES for k in range(FOLDS)]
    probas = Parallel(n_jobs=jobs)(delayed(plain_fit)(probe, X[name], y, *folds[k], inner[k])
                                   for name, probe, k in tasks)
    oof = {}
    for (name, probe, k), proba in zip(tasks, probas):
        oof.setdefault((name, probe), np.zeros(len(y)))[folds[k][1]] = proba[:, 1]
    rng = np.random.default_rng(SEED)
    rows = []
    for (name, probe), scores in oof.items():
        row = {"output": name, "probe": probe, "auc": roc_auc_score(y, scores),
               "fold_auc": [roc_auc_score(y[te], scores[te]) for _, te in folds]}
        if n_boot:
            boot = []
            for _ in range(n_boot):
                idx = rng.integers(0, len(y), len(y))
                if len(np.unique(y[idx])) == 2:
                    boot.append(roc_auc_score(y[idx], scores[idx]))
            row["auc_ci"] = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
        rows.append(row)
    out.write_text(json.dumps(rows))
    return {"auc": {f"{r['output']} {r['probe']}": r["auc"] for r in rows},
            "ci": {f"{r['output']} {r['probe']}": r.get("auc_ci") for r in rows}}


def run_layerprobe(cache: Path, jobs: int, n_boot: int, out: Path) -> dict:
    from pipeline.probes import ProbeConfig, run_probes

    results = run_probes(cache, ProbeConfig(n_boot=n_boot), out=out, jobs=jobs, progress=False)
    return {"auc": {f"{r['output']} {r['probe']}": r["metrics"]["roc_auc"]["pooled"] for r in results.rows},
            "ci": {f"{r['output']} {r['probe']}": r["metrics"]["roc_auc"]["ci"] if n_boot else None
                   for r in results.rows}}


def child(variant: str, cache: Path, codes_dir: Path, jobs: int, out: Path) -> None:
    import numpy  # noqa: F401
    import sklearn  # noqa: F401

    if variant.startswith("layerprobe"):
        import pipeline.probes  # noqa: F401
    start = time.perf_counter()
    n_boot = 0 if variant.endswith("noboot") else N_BOOT
    if variant.startswith("layerprobe"):
        result = run_layerprobe(cache, jobs, n_boot, out)
    else:
        result = run_plain(codes_dir, jobs, n_boot, out)
    print(json.dumps({"work": time.perf_counter() - start, **result}))


# ----------------------------------------------------------------------------------------------
def export_codes(cache: Path, codes_dir: Path, dtype: str = "float32") -> list[str]:
    """The cache's outputs and labels as plain .npy files: float32 is what a plain user starts from; float64 is
    what layerprobe fits on, so that the plain fits give layerprobe's numbers to the last bit."""
    import numpy as np

    from pipeline.cache import open_cache
    from pipeline.probes.data import load_probe_data

    with open_cache(cache) as c:
        data = load_probe_data(c, (), "none", keep_codes=True)
        names = [o.name for o in data.outputs]
        for i, output in enumerate(data.outputs):
            np.save(codes_dir / f"{i}.npy", data.codes[output.name].astype(dtype))
        np.save(codes_dir / "y.npy", data.y)
    (codes_dir / "layers.json").write_text(json.dumps(names))
    return names


def run_child(variant: str, args, codes_dir: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", variant, str(args.cache), "--jobs", str(args.jobs),
               "--codes", str(codes_dir), "--out", str(out)]
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, "cpu": _children_cpu() - cpu, **json.loads(proc.stdout.strip().splitlines()[-1])}


def _children_cpu() -> float:
    """CPU seconds of every finished child and its waited-for children (the fitting workers), user + system."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(results: dict) -> None:
    for label, pick in (("median of rounds", statistics.median), ("fastest round", min)):
        med = lambda v, key: pick(r[key] for r in results[v])  # noqa: E731
        print(f"\n{label}:\n{'variant':<18} {'wall s':>7} {'work s':>7} {'cpu s':>7} {'x plain (wall)':>14} "
              f"{'x plain (work)':>14} {'x plain (cpu)':>14}")
        for v in VARIANTS:
            twin = v.replace("layerprobe", "plain")
            ratios = (" ".join(f"{med(v, key) / med(twin, key):14.2f}" for key in ("wall", "work", "cpu"))
                      if v.startswith("layerprobe") else "")
            print(f"{v:<18} {med(v, 'wall'):7.1f} {med(v, 'work'):7.1f} {med(v, 'cpu'):7.1f} {ratios}")
    print("per round (wall s / work s / cpu s): " + "; ".join(
        f"{v} " + ", ".join(f"{r['wall']:.1f}/{r['work']:.1f}/{r['cpu']:.1f}" for r in rows)
        for v, rows in results.items()))
    lp, plain = results["layerprobe"][0], results["plain"][0]
    gaps = {key: abs(lp["auc"][key] - plain["auc"][key]) for key in plain["auc"]}
    worst = max(gaps, key=gaps.get)
    print(f"pooled out-of-fold ROC AUC, layerprobe vs plain, {len(gaps)} (layer, probe) rows: max |diff| "
          f"{gaps[worst]:.2e} ({worst}: {lp['auc'][worst]:.6f} vs {plain['auc'][worst]:.6f})")
    ci = {key: max(abs(a - b) for a, b in zip(lp["ci"][key], plain["ci"][key])) for key in plain["ci"]}
    far = max(ci, key=ci.get)
    print(f"95% ROC AUC intervals (layerprobe's multinomial resamples vs plain integers(): different draws, same "
          f"method): max |diff| of an end {ci[far]:.4f} ({far}: {lp['ci'][far]} vs {plain['ci'][far]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-dtype", choices=("float32", "float64"), default="float32",
                        help="the codes plain fits on: float32 as stored, or float64 as layerprobe fits (same numbers)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--codes", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.cache, args.codes, args.jobs, args.out)

    with tempfile.TemporaryDirectory() as tmp:
        codes_dir = Path(tmp)
        names = export_codes(args.cache, codes_dir, args.plain_dtype)
        import numpy as np

        n = len(np.load(codes_dir / "y.npy"))
        print(f"{args.cache.name}: {n} images, {len(names)} outputs ({', '.join(names)}); {', '.join(PROBES)} x "
              f"{FOLDS} folds, --jobs {args.jobs}, plain on {args.plain_dtype}, {os.cpu_count()} CPUs, {args.rounds} interleaved round(s); "
              f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        results = {v: [] for v in VARIANTS}
        for round_no in range(args.rounds):
            for v in VARIANTS:
                results[v].append(run_child(v, args, codes_dir, codes_dir / f"{v}{round_no}.json"))
        report(results)
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
