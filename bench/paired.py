"""How often the advice says "different" when it should not, and when it should: naive vs corrected t.

Synthetic codes of five "layers", each an independent noisy view of the same
latent class signal, probed by logistic regression on the same stratified
folds (5 folds x 1 or 5 repeats) as `layerprobe probe` makes them. Null: every
layer carries the same signal, so the right verdict is never "different".
Alternative: the last layer carries less signal, so "different" is right.
Each data set is compared by :func:`pipeline.probes.compare.compare_rows` with
the Nadeau-Bengio correction (the project's rule) and without it (ratio 0, the
plain paired t-test over folds). Prints the share of data sets called
"different" for each.

    python bench/paired.py --datasets 200 --rows 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_layers(rng, n: int, strengths: list[float], width: int = 16):
    y = rng.permutation(np.repeat([0, 1], n // 2))
    latent = (2 * y - 1)[:, None].astype(float)
    layers = []
    for s in strengths:
        X = rng.normal(size=(n, width))
        X[:, :4] += s * latent
        layers.append(X)
    return y, layers


def fold_scores(y, layers, repeats: int, seed: int) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from pipeline.probes.splits import make_folds

    folds = make_folds(y, None, 5, repeats, seed, ["a", "b"])
    out = []
    for X in layers:
        scores = []
        for _, _, train, test in folds.splits():
            model = LogisticRegression(C=0.1, max_iter=500).fit(X[train], y[train])
            scores.append(roc_auc_score(y[test], model.predict_proba(X[test])[:, 1]))
        out.append(np.asarray(scores))
    return out


def verdicts(scores: list[np.ndarray]) -> tuple[str, str]:
    from pipeline.probes.compare import compare_rows

    rows = [{"output": f"blocks.{i}/avg", "probe": "logreg",
             "metrics": {"roc_auc": {"mean": float(s.mean()), "folds": list(s)}}} for i, s in enumerate(scores)]
    return compare_rows(rows, "roc_auc", 0.25, 2).verdict, compare_rows(rows, "roc_auc", 0.0, 2).verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    scenarios = {"null (all layers equal)": [0.35] * 5, "last layer weaker": [0.35, 0.35, 0.35, 0.35, 0.2]}
    print(f"{args.datasets} data sets of {args.rows} rows per line; share called 'different'")
    print(f"{'scenario':<26}{'folds':<8}{'corrected':>10}{'naive':>8}")
    for name, strengths in scenarios.items():
        for repeats in (1, 5):
            counts = np.zeros(2)
            for d in range(args.datasets):
                rng = np.random.default_rng(d)
                y, layers = make_layers(rng, args.rows, strengths)
                counts += [v == "different" for v in verdicts(fold_scores(y, layers, repeats, d))]
            share = counts / args.datasets
            print(f"{name:<26}{f'5x{repeats}':<8}{share[0]:>10.3f}{share[1]:>8.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
