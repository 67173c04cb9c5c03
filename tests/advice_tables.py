"""Synthetic probe tables for the advice tests: per-fold scores of one probe along five outputs."""

from __future__ import annotations

import numpy as np

OUTPUTS = ("blocks.0/avg", "blocks.1/avg", "blocks.2/avg", "blocks.3/avg", "pre_logits/none")
KINDS = ("flat", "rising", "falling", "noisy", "saturated", "ties", "disagree", "peak")


def rows_from_folds(folds: dict[str, dict[str, np.ndarray]], probe: str = "logreg") -> list[dict]:
    """Results rows from ``{output: {metric: fold scores}}`` (outputs in depth order)."""
    rows = []
    for depth, (output, metrics) in enumerate(folds.items()):
        rows.append({"output": output, "depth": depth, "probe": probe, "metrics": {
            m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "folds": [float(x) for x in v],
                "pooled": float(np.mean(v)), "ci": [float(np.min(v)), float(np.max(v))]}
            for m, v in metrics.items()}})
    return rows


def _fold_scores(rng, level: float, shared: np.ndarray, noise: float) -> np.ndarray:
    return np.clip(level + shared + rng.normal(0, noise, len(shared)), 0.0, 1.0)


def synthetic_table(kind: str, seed: int, n_estimates: int = 25) -> list[dict]:
    """Rows of one probe with ROC AUC and balanced accuracy per fold, of the named shape."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.02, n_estimates)  # a hard fold is hard for every layer: the pairing
    noise = rng.uniform(0.002, 0.03)
    levels = {
        "flat": [0.85] * 5,
        "rising": list(np.linspace(0.7, 0.95, 5)),
        "falling": list(np.linspace(0.95, 0.75, 5)),
        "noisy": [0.5] * 5,
        "saturated": [0.9, 1.0, 1.0, 1.0, 1.0],
        "ties": [0.8, 0.9, 0.95, 0.95, 0.945],
        "disagree": [0.8, 0.9, 0.95, 0.93, 0.92],
        "peak": [0.7, 0.8, 0.97, 0.9, 0.8],
    }[kind]
    levels = [v + rng.normal(0, 0.01) if kind not in ("saturated",) else v for v in levels]
    if kind == "noisy":
        shared, noise = rng.normal(0, 0.06, n_estimates), 0.06
    out = {}
    for output, level in zip(OUTPUTS, levels):
        auc = np.ones(n_estimates) if level >= 1.0 else _fold_scores(rng, level, shared, noise)
        if kind == "disagree":  # balanced accuracy: flat and noisy where ROC AUC falls
            bal = _fold_scores(rng, 0.85, 3 * shared, 0.05)
        elif level >= 1.0:
            bal = np.ones(n_estimates)
        else:
            bal = _fold_scores(rng, 0.5 + (level - 0.5) * 0.9, shared, noise * 1.5)
        out[output] = {"roc_auc": auc, "balanced_accuracy": bal}
    return rows_from_folds(out)
