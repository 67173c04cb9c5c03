"""Where the probe grid without intervals spends CPU beyond the plain script (bench/probe_plain.py).

On one cache made by `layerprobe extract`, prints CPU seconds (process time,
so other load on the machine disturbs them less than wall time):

  score      `summarise` of one (layer, probe) row without intervals: 5 folds
             and the pooled predictions, every metric (mean of 20 calls)
  fits       two of the five folds of every output x logreg, svm, lgbm in one
             process: layerprobe's fit task on its float64 codes, and
             bench/probe_plain.py's plain fits on float32 and on float64
  imports    in a fresh process that already imported what the plain script
             imports (sklearn, lightgbm, joblib, ...): what a fitting worker
             imports to unpickle its task (`pipeline.probes.task`) and the
             LayerSource it reads its layer with (`pipeline.probes.data`: h5py,
             the cache, PIL); then in another such process what the main
             process imports to run the grid: PIL, h5py, the rest of
             `pipeline.probes.grid`. At --jobs 2 there is one worker: the main
             process fits too (`pipeline/probes/pool.py`), which saves one
             worker's start: the CPU time of a new interpreter importing what a
             fitting worker imports

Usage: python bench/probe_overheads.py CACHE
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import probe_plain as plain  # noqa: E402

PLAIN_IMPORTS = """
import sys, time, numpy, sklearn, lightgbm, joblib, threadpoolctl, sklearn.linear_model, sklearn.decomposition
import sklearn.svm, sklearn.pipeline, sklearn.model_selection, sklearn.metrics
"""
WORKER_IMPORTS = PLAIN_IMPORTS + """
t = time.process_time(); import pipeline.probes.task; a = time.process_time() - t
heavy = sorted(m for m in ("PIL", "h5py", "pipeline.cache", "pipeline.inputs") if m in sys.modules)
t = time.process_time(); import pipeline.probes.data; b = time.process_time() - t
print(f"a fitting worker's imports beyond the plain script's, CPU s: pipeline.probes.task {a:.3f} "
      f"(PIL, h5py, cache, inputs imported: {heavy or 'none'}), then pipeline.probes.data {b:.3f}")
"""
WORKER_START = """
import resource, threadpoolctl, lightgbm, joblib.externals.loky, pipeline.probes.task
u = resource.getrusage(resource.RUSAGE_SELF)
print(f"a worker's start (a new interpreter importing what a fitting worker imports), CPU s: "
      f"{u.ru_utime + u.ru_stime:.3f}")
"""
MAIN_IMPORTS = PLAIN_IMPORTS + """
t = time.process_time(); import PIL.Image; a = time.process_time() - t
t = time.process_time(); import h5py; b = time.process_time() - t
t = time.process_time(); import pipeline.probes.grid; c = time.process_time() - t
print(f"the main process's imports beyond the plain script's, CPU s: PIL {a:.3f}, h5py {b:.3f}, "
      f"rest of pipeline.probes.grid {c:.3f}")
"""


def score_cost(data, folds) -> float:
    from pipeline.probes.metrics import summarise

    rng = np.random.default_rng(0)
    p = rng.random(len(data.y))
    oof = np.stack([1 - p, p], axis=1)[None]
    fold_rows = [[test for _, test in folds]]
    empty = np.zeros((0, len(data.y)))
    summarise(data.y, oof, fold_rows, empty)
    start = time.process_time()
    for _ in range(20):
        summarise(data.y, oof, fold_rows, empty)
    return (time.process_time() - start) / 20


def fit_costs(data, folds, inner) -> dict:
    from pipeline.probes.task import fit_fold
    from pipeline.probes.registry import ProbeSettings

    total = {"layerprobe (float64)": 0.0, "plain float32": 0.0, "plain float64": 0.0}
    for output in data.outputs:
        X64 = data.codes[output.name]
        X32 = X64.astype(np.float32)
        for probe in plain.PROBES:
            for k in range(2):
                train, test = folds[k]
                for label, run in (("layerprobe (float64)",
                                    lambda: fit_fold(probe, ProbeSettings(), X64, data.y, train, test, inner[k], 0)),
                                   ("plain float32", lambda: plain.plain_fit(probe, X32, data.y, train, test, inner[k])),
                                   ("plain float64", lambda: plain.plain_fit(probe, X64, data.y, train, test, inner[k]))):
                    start = time.process_time()
                    run()
                    total[label] += time.process_time() - start
    return total


def main() -> None:
    import warnings

    from sklearn.model_selection import StratifiedKFold

    from pipeline.cache import open_cache
    from pipeline.probes.data import load_probe_data

    warnings.simplefilter("ignore")
    cache = Path(sys.argv[1])
    with open_cache(cache) as c:
        data = load_probe_data(c, (), "none", keep_codes=True)
    folds = list(StratifiedKFold(plain.FOLDS, shuffle=True, random_state=plain.SEED).split(np.zeros(len(data.y)),
                                                                                         data.y))
    inner = [list(StratifiedKFold(plain.INNER, shuffle=True, random_state=plain.SEED).split(
        np.zeros(len(train)), data.y[train])) for train, _ in folds]
    print(f"{cache.name}: {len(data.y)} rows, {len(data.outputs)} outputs")
    print(f"score: one row without intervals, {1e3 * score_cost(data, folds):.1f} ms CPU")
    costs = fit_costs(data, folds, inner)
    print("fits (2 of 5 folds, every output x probe), CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
    for script in (WORKER_START, WORKER_IMPORTS, MAIN_IMPORTS):
        print(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
