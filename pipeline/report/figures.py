"""Figures of a study: model x layer heat map, per-model curves, cost against score, and the chosen
probe's confusion matrix, ROC curve and reliability diagram. Object API on Agg, as in :mod:`.plots`."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..probes import StudyResults, get_metric
from .diagnostics import Calibration, OperatingPoint

SMALL = (4.0, 3.4)  # inches at DPI: three side by side fit a 1280-px window
DPI = 100


def _figure(size) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _outputs(study: StudyResults) -> list[str]:
    """Every output name of the study, in depth order of the model that first has it."""
    names: list[str] = []
    for m in study.models:
        for o in sorted(m["outputs"], key=lambda o: o["depth"]):
            if o["output"] not in names:
                names.append(o["output"])
    return names


def heat_map(study: StudyResults, metric: str, probe: str) -> Figure:
    """Fold-mean ``metric`` of ``probe`` for every (model, output); = tied with the best, * the best."""
    outputs, labels = _outputs(study), study.labels
    grid = np.full((len(labels), len(outputs)), np.nan)
    for r in study.rows:
        if r["probe"] == probe and r["metrics"].get(metric, {}).get("mean") is not None:
            grid[labels.index(r["backbone"]), outputs.index(r["output"])] = r["metrics"][metric]["mean"]
    comparison = study.comparisons.get(metric, {}).get(probe, {})
    tied = {tuple(t) for t in comparison.get("tied", [])}
    best = tuple(comparison.get("best", ()))
    fig = _figure((min(12.0, 1.0 + 0.95 * len(outputs)), 1.3 + 0.55 * len(labels)))
    ax = fig.add_subplot()
    finite = grid[np.isfinite(grid)]
    low = float(finite.min()) if finite.size else 0.0
    image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=max(low + 1e-3, float(np.nanmax(grid)) if finite.size else 1),
                      aspect="auto")
    for i, model in enumerate(labels):
        for j, output in enumerate(outputs):
            if np.isfinite(grid[i, j]):
                mark = "*" if (model, output) == best else ("=" if (model, output) in tied else "")
                shade = (grid[i, j] - low) / max(1e-9, np.nanmax(grid) - low)
                ax.text(j, i, f"{grid[i, j]:.3f}{mark}", ha="center", va="center", fontsize=7,
                        color="black" if shade > 0.6 else "white")
    ax.set_xticks(range(len(outputs)), outputs, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8).set_label(get_metric(metric).label, fontsize=8)
    ax.set_title(f"{get_metric(metric).label} of {probe} by model and layer; * best, = tied with it", fontsize=9)
    return fig


def model_curves(study: StudyResults, metric: str) -> Figure:
    """One panel per probe: each model's fold mean against relative depth, its 95% bootstrap interval as a band."""
    info = get_metric(metric)
    probes = list(dict.fromkeys(r["probe"] for r in study.rows))
    fig = _figure((min(12.0, 3.6 * len(probes) + 0.4), 3.2))
    axes = fig.subplots(1, len(probes), sharey=True, squeeze=False)[0]
    for ax, probe in zip(axes, probes):
        for i, model in enumerate(study.labels):
            rows = sorted((r for r in study.rows if r["backbone"] == model and r["probe"] == probe
                           and r["metrics"].get(metric, {}).get("mean") is not None), key=lambda r: r["depth"])
            if not rows:
                continue
            x = np.linspace(0, 1, len(rows)) if len(rows) > 1 else np.array([1.0])
            mean = np.array([r["metrics"][metric]["mean"] for r in rows], dtype=float)
            ci = np.array([[np.nan if v is None else v for v in r["metrics"][metric]["ci"]] for r in rows], dtype=float)
            ax.fill_between(x, ci[:, 0], ci[:, 1], color=f"C{i}", alpha=0.18, linewidth=0)
            ax.plot(x, mean, "o-", color=f"C{i}", markersize=3, label=model)
        ax.set_title(probe, fontsize=9)
        ax.set_xlabel("relative depth (input to output)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"{info.label} (mean over folds)", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right")
    return fig


def cost_figure(study: StudyResults, metric: str, probe: str) -> Figure:
    """Each model's best score (with its corrected interval) against its extraction throughput."""
    comparison = study.comparisons.get(metric, {}).get(probe, {})
    fig = _figure(SMALL)
    ax = fig.add_subplot()
    for i, m in enumerate(study.models):
        mine = [c for c in comparison.get("candidates", []) if c["backbone"] == m["label"]]
        rate = m["cost"]["images_per_s"]
        if not mine or not rate:
            continue
        top = max(mine, key=lambda c: c["mean"])
        low, high = top["interval"]
        ax.errorbar([rate], [top["mean"]], yerr=[[top["mean"] - low], [high - top["mean"]]], fmt="o", color=f"C{i}",
                    capsize=3, label=f"{m['label']} ({_params(m['cost']['n_params'])})")
    ax.set_xlabel("extraction throughput (images/s, as measured)", fontsize=8)
    ax.set_ylabel(f"best {get_metric(metric).label} of {probe}", fontsize=8)
    ax.set_title("Score against cost (right and up is better)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def _params(n) -> str:
    return "? params" if n is None else f"{n / 1e6:.1f} M params"


def confusion_figure(counts: np.ndarray, class_names: list[str]) -> Figure:
    fig = _figure(SMALL)
    ax = fig.add_subplot()
    shares = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{counts[i, j]}\n{shares[i, j]:.1%}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted (most probable class)", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    ax.set_title("Confusion matrix (row shares)", fontsize=9)
    return fig


def roc_figure(y: np.ndarray, p: np.ndarray, point: OperatingPoint | None) -> Figure:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig = _figure(SMALL)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="C0", label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    if point is not None:
        ax.plot([1 - point.specificity], [point.sensitivity], "o", color="C3",
                label=f"{point.target} {point.wanted:g}: t={point.threshold:.3f}")
    ax.set_xlabel("1 - specificity", fontsize=8)
    ax.set_ylabel("sensitivity", fontsize=8)
    ax.set_title("ROC curve (out-of-fold)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    return fig


def reliability_figure(cal: Calibration) -> Figure:
    fig = _figure(SMALL)
    ax = fig.add_subplot()
    centres = [(a + b) / 2 for a, b in zip(cal.edges[:-1], cal.edges[1:])]
    width = cal.edges[1] - cal.edges[0]
    observed = [np.nan if v is None else v for v in cal.observed]
    ax.bar(centres, observed, width=width * 0.9, color="C0", alpha=0.6, label="observed")
    predicted = [(c, v) for c, v in zip(centres, cal.mean_predicted) if v is not None]
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1, label="perfect")
    if predicted:
        ax.plot([v for _, v in predicted], [o for o in observed if np.isfinite(o)], "o-", color="C3", markersize=3,
                label="mean predicted")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability (10 bins)", fontsize=8)
    ax.set_ylabel("observed share", fontsize=8)
    ax.set_title(f"Reliability: ECE {cal.ece:.3f}, Brier {cal.brier:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(labelsize=7)
    return fig
