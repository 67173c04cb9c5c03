"""Advice on tasks with known answers: is `layerprobe advise` right where the answer is known?

Each task of ``tests/panel_data.py`` (low-level labels where an early layer must
win, scene-content labels where the top must win, a saturated task, a task with
random labels) is written as image files, a small training set and a large
held-out test set, and extracted with the bundled EfficientNet-Lite0 through
layerprobe's own extract (every stage and pre_logits, 128 px).

* Truth, from the held-out set: a logistic-regression probe per output fitted on
  a training set and scored on the test set; the best output and the outputs
  tied with it. Two truths are printed. "one draw": the probes fitted on the
  training set the advice sees; tied when the 95% paired bootstrap interval of
  the difference to the best, over test images or their groups, covers 0.
  "mean of draws" (the main one): the mean held-out score of probes fitted on
  --draws independent training sets of the same size, since cross-validation
  estimates that average rather than the score of the one training set at hand
  (Bates, Hastie & Tibshirani 2023, "Cross-validation: what does it estimate
  and how well does it do it?"); tied when the 95% interval of a two-level
  bootstrap (training draws, then test images) covers 0.
* The advice, from the training set alone, as a user would get it: the probe
  grid with 5-fold CV (repeats as the library chooses for small data) and ``advise``
  with ROC AUC and with balanced accuracy.

Prints one table (and the checks against the targets): whether the chosen layer
lies in the held-out tied set, the verdicts, whether they agree with the
held-out truth, and, on the no-signal task, whether every verdict is
"uncertain" and every ROC AUC interval covers 0.5.

Images and codes are kept under --cache-dir, so a re-run only re-fits.

Usage: .venv/bin/python bench/advice.py [--train 200] [--test 800] [--tasks noise blur ...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.panel_data

import tests.panel_data  # noqa: E402
from tests.panel_data import TASKS, make_draws, write_samples  # noqa: E402

# Images are kept per version of the task code: the folder names carry a digest of it.
PANEL_DIGEST = hashlib.sha256(Path(tests.panel_data.__file__).read_bytes()).hexdigest()[:8]

METRICS = ("roc_auc", "balanced_accuracy")
PROBE = "logreg"
N_BOOT = 1000


@dataclass
class HeldOut:
    """Per output, the held-out score, its interval, and the outputs tied with the best.

    ``value``, ``ci`` and ``tied``: probes fitted on the first training draw (the
    one the advice sees). ``mean_value`` and ``mean_tied``: the mean over every
    training draw, tied by a two-level bootstrap (draws, then test images).
    """

    outputs: list[str]
    value: dict[str, list[float]]
    ci: dict[str, list[tuple[float, float]]]
    tied: dict[str, list[str]]
    mean_value: dict[str, list[float]] = field(default_factory=dict)
    mean_ci: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    mean_tied: dict[str, list[str]] = field(default_factory=dict)
    draws: int = 1

    def best(self, metric: str) -> str:
        values = self.value[metric]
        return self.outputs[int(np.argmax(values))]

    def mean_best(self, metric: str) -> str:
        return self.outputs[int(np.argmax(self.mean_value[metric]))]


@dataclass
class TaskResult:
    name: str
    answer: str
    n_train: int
    n_test: int
    held_out: HeldOut
    advice: dict[str, dict] = field(default_factory=dict)  # metric -> read_advice()
    cv_ci: list[tuple[float, float]] = field(default_factory=list)  # ROC AUC bootstrap interval per output
    cv_paired_ci: list[tuple[float, float]] = field(default_factory=list)  # corrected-t interval per output
    seconds: float = 0.0


def extract_split(folder: Path, samples, config) -> Path:
    """Writes the images once, then extracts (a re-run reuses the cache: no forward pass)."""
    from pipeline.activations import extract
    from pipeline.inputs import from_csv

    table = folder / "images.csv"
    if not table.exists():
        write_samples(folder, samples)
    return extract(from_csv(table), config, out=folder.with_suffix(".h5"), progress=False).path


def held_out(trains: list[Path], test: Path, seed: int) -> HeldOut:
    """Each output's probe fitted on every training draw, scored on ``test``; paired bootstraps over test groups."""
    from pipeline.cache import open_cache
    from pipeline.probes import METRICS as ALL, bootstrap_weights, fit_probe

    with open_cache(test) as cache:
        y, names, groups = cache.labels, list(cache.class_names), cache.groups
        outputs = [f"{layer}/{pool}" for layer, pool in cache.outputs]
        codes = {o: cache.codes(*o.split("/")) for o in outputs}
    weights = bootstrap_weights(len(y), groups, N_BOOT, seed)
    point = {m: np.empty((len(trains), len(outputs))) for m in METRICS}  # (draw, output)
    boot = {m: np.empty((len(trains), len(outputs), N_BOOT)) for m in METRICS}  # (draw, output, replicate)
    for d, train in enumerate(trains):
        for i, o in enumerate(outputs):
            probe = fit_probe(train, o, PROBE, seed=seed)
            if probe.class_names != names:
                raise SystemExit(f"{train} and {test} have different classes: {probe.class_names} vs {names}")
            proba = probe.predict_proba(codes[o])
            for m in METRICS:
                point[m][d, i] = float(ALL[m].point(y, proba))
                boot[m][d, i] = ALL[m].weighted(weights, y, proba)
    value = {m: point[m][0].tolist() for m in METRICS}
    ci = {m: [tuple(float(v) for v in np.percentile(b, [2.5, 97.5])) for b in boot[m][0]] for m in METRICS}
    tied = {m: _tied(outputs, point[m][0], boot[m][0]) for m in METRICS}
    # Two-level bootstrap: each replicate resamples the training draws, and the test images through `weights`.
    picks = np.random.default_rng(seed).integers(0, len(trains), size=(N_BOOT, len(trains)))
    replicate = np.arange(N_BOOT)[:, None]
    mean_boot = {m: np.stack([boot[m][picks, i, replicate].mean(axis=1) for i in range(len(outputs))])
                 for m in METRICS}
    mean_value = {m: point[m].mean(axis=0).tolist() for m in METRICS}
    mean_ci = {m: [tuple(float(v) for v in np.percentile(b, [2.5, 97.5])) for b in mean_boot[m]] for m in METRICS}
    mean_tied = {m: _tied(outputs, np.asarray(mean_value[m]), mean_boot[m]) for m in METRICS}
    return HeldOut(outputs, value, ci, tied, mean_value, mean_ci, mean_tied, len(trains))


def _tied(outputs: list[str], values: np.ndarray, boot: np.ndarray) -> list[str]:
    """The best output and those whose 95% bootstrap interval of (best - output) reaches 0."""
    best = int(np.argmax(values))
    return [o for i, o in enumerate(outputs) if i == best or np.percentile(boot[best] - boot[i], 2.5) <= 0.0]


def read_advice(comparison, advice) -> dict:
    """The figures the panel checks: the advice a user gets, and the paired comparison under it."""
    return {"layer": advice.layer, "best": comparison.best, "tied": list(advice.tied), "different": advice.similarity,
            "raw_verdict": comparison.verdict, "p_last_worse": comparison.p_last_worse,
            "signal": comparison.signal, "saturated": advice.saturated, "fine_tune": advice.fine_tune,
            "metrics_disagree": any(f.topic == "metrics" for f in advice.findings), "text": advice.text()}


def cv_advice(train: Path, folder: Path, seed: int, jobs: int) -> tuple[dict, list, list]:
    """The user's view: the probe grid with 5-fold CV (repeats chosen by the library), then advise."""
    from pipeline.errors import ProbeError
    from pipeline.probes import ProbeConfig, run_probes
    from pipeline.probes.compare import compare_outputs
    from pipeline.similarity import advise_cache

    out = folder / "train.probes.json"
    config = ProbeConfig(probes=(PROBE,), folds=5, repeats=None, seed=seed)  # None: repeats for paired statistics
    try:
        results = run_probes(train, config, out=out, jobs=jobs, progress=False)
    except ProbeError as exc:  # kept from another version of the probe settings: start afresh
        print(f"  {out}: {exc}; fitting afresh", file=sys.stderr)
        out.unlink()
        results = run_probes(train, config, out=out, jobs=jobs, progress=False)
    comparisons = {m: compare_outputs(results, m) for m in METRICS}
    boot = [tuple(r["metrics"]["roc_auc"]["ci"]) for r in results.rows]
    paired = [tuple(o.interval) for o in comparisons["roc_auc"].outputs]
    advice = {m: read_advice(comparisons[m], advise_cache(train, out, m)) for m in METRICS}
    return advice, boot, paired


def run_task(name: str, root: Path, n_train: int, n_test: int, seed: int, jobs: int, config,
             draws: int = 1) -> TaskResult:
    started = time.perf_counter()
    task = TASKS[name]
    folder = root / f"{name}-seed{seed}-{n_train}-{n_test}-{PANEL_DIGEST}"
    parts = [folder / ("train" if d == 0 else f"train-{d}") for d in range(draws)]
    train_samples, test_samples = [None] * draws, None
    if not all((p / "images.csv").exists() for p in (*parts, folder / "test")):
        train_samples, test_samples = make_draws(task, n_train, n_test, seed, draws)
    trains = [extract_split(p, s, config) for p, s in zip(parts, train_samples)]
    test = extract_split(folder / "test", test_samples, config)
    truth = held_out(trains, test, seed)
    train = trains[0]
    advice, boot, paired = cv_advice(train, folder, seed, jobs)
    return TaskResult(name, task.answer, n_train, n_test, truth, advice, boot, paired, time.perf_counter() - started)


def truth_verdict(r: TaskResult, one_draw: bool = False) -> str:
    """What the held-out set says: no signal, or whether the last output is tied with the best."""
    if r.answer == "none":
        return "none"
    tied = r.held_out.tied if one_draw else r.held_out.mean_tied
    return "similar" if r.held_out.outputs[-1] in tied["roc_auc"] else "different"


def short(output: str) -> str:
    return output.split("/")[0].replace("blocks.", "b").replace("pre_logits", "pl")


def agreement(verdict: str, truth: str) -> str:
    """yes (right), uncertain (no claim), NO (a claim the held-out set contradicts)."""
    if truth == "none" or verdict == "uncertain":
        return "yes" if verdict == "uncertain" else "NO" if truth == "none" else "uncertain"
    return "yes" if verdict == truth else "NO"


def flip(r: TaskResult) -> str:
    """Do the paired comparisons under ROC AUC and balanced accuracy disagree, and does the advice say so?"""
    auc, ba = r.advice["roc_auc"], r.advice["balanced_accuracy"]
    if auc["different"] != ba["different"]:
        return "SILENT"  # the advice itself changes with the metric
    if auc["raw_verdict"] == ba["raw_verdict"]:
        return "no"
    return "said" if auc["metrics_disagree"] and ba["metrics_disagree"] else "SILENT"


def row(r: TaskResult) -> tuple:
    h, auc, ba = r.held_out, r.advice["roc_auc"], r.advice["balanced_accuracy"]
    best = h.mean_best("roc_auc")
    truth = truth_verdict(r)

    def within(tied: dict) -> str:
        return "yes" if auc["layer"] in tied["roc_auc"] else "NO"

    return (r.name, r.answer, f"{short(best)} {h.mean_value['roc_auc'][h.outputs.index(best)]:.3f}",
            ",".join(short(o) for o in h.mean_tied["roc_auc"]), ",".join(short(o) for o in h.tied["roc_auc"]), truth,
            short(auc["best"]), short(auc["layer"]), ",".join(short(o) for o in auc["tied"]),
            f"{within(h.mean_tied)} / {within(h.tied)}", f"{auc['raw_verdict']} / {ba['raw_verdict']}", flip(r),
            f"{auc['p_last_worse']:.2f}", auc["different"],
            f"{agreement(auc['different'], truth)} / {agreement(auc['different'], truth_verdict(r, True))}",
            "yes" if auc["saturated"] else "no", auc["fine_tune"], f"{r.seconds:.0f}")


HEAD = ("task", "answer", "held-out best (AUC, mean of draws)", "held-out tied", "one draw tied", "held-out says",
        "CV best", "CV chosen", "CV tied", "chosen in held-out tied (mean / one draw)",
        "paired verdict AUC / bal. acc.", "metric flip", "P(last worse)", "advice", "advice right (mean / one draw)",
        "saturated", "fine-tune", "s")


def table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def curves(results: list[TaskResult]) -> str:
    """Held-out ROC AUC per output: the mean over training draws, and the first draw with its 95% interval."""
    outputs = results[0].held_out.outputs
    rows = [("task", *(short(o) for o in outputs))]
    for r in results:
        h = r.held_out
        rows.append((r.name, *(f"{m:.3f} [{mlo:.2f},{mhi:.2f}] ({v:.3f} [{lo:.2f},{hi:.2f}])"
                               for m, (mlo, mhi), v, (lo, hi) in zip(h.mean_value["roc_auc"], h.mean_ci["roc_auc"],
                                                                     h.value["roc_auc"], h.ci["roc_auc"]))))
    return table(rows)


def checks(results: list[TaskResult]) -> list[str]:
    lines = []
    for what, key, one in (("mean of draws", "mean_tied", False), ("one draw", "tied", True)):
        tied = {r.name: getattr(r.held_out, key)["roc_auc"] for r in results}
        missed = [r.name for r in results if r.advice["roc_auc"]["layer"] not in tied[r.name]]
        best = [r for r in results if r.advice["roc_auc"]["best"] in tied[r.name]]
        last = [r for r in results if r.held_out.outputs[-1] in tied[r.name]]
        lines.append(f"chosen layer in the held-out tied set ({what}): {len(results) - len(missed)} of {len(results)} "
                     f"tasks" + (f" (missed: {', '.join(missed)})" if missed else "")
                     + f"; for comparison, the CV best: {len(best)}, always the last output: {len(last)}")
        values = {r.name: (r.held_out.value if one else r.held_out.mean_value)["roc_auc"] for r in results}
        regret = {r.name: max(values[r.name]) - values[r.name][r.held_out.outputs.index(r.advice["roc_auc"]["layer"])]
                  for r in results}
        worst = max(regret, key=regret.get)
        lines.append(f"  held-out ROC AUC lost by the chosen layer against the held-out best ({what}): at most "
                     f"{regret[worst]:.3f} ({worst}); mean {np.mean(list(regret.values())):.3f}")
        covered = [r for r in results if (r.held_out.best if one else r.held_out.mean_best)("roc_auc")
                   in r.advice["roc_auc"]["tied"]]
        lines.append(f"  the held-out best output in the CV tied set ({what}): {len(covered)} of {len(results)} tasks")
        wrong = [r.name for r in results if agreement(r.advice["roc_auc"]["different"], truth_verdict(r, one)) == "NO"]
        lines.append(f"advice contradicted by the held-out set ({what}): {len(wrong)} of {len(results)} tasks"
                     + (f" ({', '.join(wrong)})" if wrong else ""))
    for r in (r for r in results if r.answer == "none"):
        verdicts = [f"{k} ({m}): {r.advice[m][k]}" for m in METRICS for k in ("different", "fine_tune")]
        claims = [v for v in verdicts if not v.endswith("uncertain")]
        lines.append(f"{r.name}: {len(claims)} of {len(verdicts)} verdicts not 'uncertain'"
                     + (f" ({'; '.join(claims)})" if claims else ""))
        for what, intervals in (("CV bootstrap", r.cv_ci), ("CV corrected t", r.cv_paired_ci),
                                ("held-out bootstrap, one draw", r.held_out.ci["roc_auc"]),
                                ("held-out two-level bootstrap, mean of draws", r.held_out.mean_ci["roc_auc"])):
            cover = sum(lo <= 0.5 <= hi for lo, hi in intervals)
            lines.append(f"{r.name}: {what} ROC AUC intervals covering 0.5: {cover} of {len(intervals)}")
    flips = {r.name: flip(r) for r in results}
    silent = [n for n, f in flips.items() if f == "SILENT"]
    said = [n for n, f in flips.items() if f == "said"]
    lines.append(f"ROC AUC and balanced accuracy disagree: {len(said) + len(silent)} task(s), said so on "
                 f"{len(said)}{' (' + ', '.join(said) + ')' if said else ''}, silently on {len(silent)}"
                 + (f" ({', '.join(silent)})" if silent else ""))
    for r in (r for r in results if r.answer == "saturated"):
        lines.append(f"{r.name}: named saturated: {'yes' if r.advice['roc_auc']['saturated'] else 'no'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=200, help="Training images per task (5-fold CV on these).")
    parser.add_argument("--test", type=int, default=800, help="Held-out test images per task.")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--draws", type=int, default=5,
                        help="Training sets per task behind the held-out truth (the advice sees the first).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache/advice-panel"))
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from pipeline.activations import ExtractConfig

    config = ExtractConfig(layers=("all",), img_size=128, batch_size=32, device=args.device)
    started = time.perf_counter()
    print(f"{len(args.tasks)} tasks, {args.draws} x {args.train} training + {args.test} held-out images each, 128 px, "
          f"tf_efficientnet_lite0, probe {PROBE}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    results = []
    for name in args.tasks:
        with threadpool_limits(1, user_api="blas"):
            results.append(run_task(name, args.cache_dir, args.train, args.test, args.seed, args.jobs, config,
                                    args.draws))
        print(f"  {name}: {results[-1].seconds:.0f} s", file=sys.stderr, flush=True)
    for name in args.tasks:
        print(f"  {name}: {TASKS[name].what}")
    print("\n" + table([HEAD, *(row(r) for r in results)]))
    print("\nHeld-out ROC AUC per output [95% interval]: mean of draws (first draw)\n" + curves(results))
    print("\nTargets")
    for line in checks(results):
        print("  " + line)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
