"""The metric against layer depth, one line per probe, with its bootstrap interval as a band.

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global
backend switch, nothing shown on screen.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..probes import ProbeResults, get_metric

# Chance level, where a metric has one that does not depend on the class balance.
DODGE = 0.06  # horizontal offset between probes, so lines that coincide stay visible
CHANCE = {"roc_auc": lambda k: 0.5, "balanced_accuracy": lambda k: 1.0 / k}


def _nan(value) -> float:
    return np.nan if value is None else float(value)


def layer_figure(results: ProbeResults, metric: str = "roc_auc") -> Figure:
    """A figure of ``metric`` (fold mean, 95% bootstrap band) for every probe against depth."""
    info = get_metric(metric)
    outputs = [o["output"] for o in results.outputs if any(r["output"] == o["output"] for r in results.rows)]
    x_of = {name: i for i, name in enumerate(outputs)}
    best = results.best(metric)
    fig = Figure(figsize=(max(6.0, 1.1 * len(outputs) + 2), 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    probes = list(dict.fromkeys(r["probe"] for r in results.rows))
    for i, probe in enumerate(probes):
        rows = [r for r in results.rows if r["probe"] == probe and metric in r["metrics"]]
        x = np.array([x_of[r["output"]] for r in rows]) + DODGE * (i - (len(probes) - 1) / 2)
        mean = np.array([_nan(r["metrics"][metric]["mean"]) for r in rows])
        low = np.array([_nan(r["metrics"][metric]["ci"][0]) for r in rows])
        high = np.array([_nan(r["metrics"][metric]["ci"][1]) for r in rows])
        colour = f"C{i}"
        ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
        ax.plot(x, mean, "o-", color=colour, label=probe)
        if probe in best:
            at = rows.index(best[probe])
            ax.plot(x[at:at + 1], mean[at:at + 1], marker="*", markersize=14, color=colour, markeredgecolor="black",
                    linestyle="none")
    n_classes = len(results.data.get("class_names", [])) or 2
    if metric in CHANCE:
        ax.axhline(CHANCE[metric](n_classes), color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(range(len(outputs)), outputs, rotation=30, ha="right")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel(f"{info.label} (mean over folds)")
    folds = results.folds
    grouped = f"groups: {folds.groups}" if folds.groups else "no groups"
    ax.set_title(f"{info.label} by layer: {results.provenance.model.name} on {results.provenance.input.name} "
                 f"({folds.n_folds}-fold x {folds.repeats}, {grouped}); bands: 95% bootstrap CI; * best layer",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def comparison_figure(grouped: ProbeResults, plain: ProbeResults, metric: str = "roc_auc") -> Figure:
    """Each probe's fold-mean ``metric`` by layer on group-aware (solid) and plain (dashed) folds."""
    info = get_metric(metric)
    outputs = [o["output"] for o in grouped.outputs if any(r["output"] == o["output"] for r in grouped.rows)]
    fig = Figure(figsize=(max(6.0, 1.1 * len(outputs) + 2), 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, probe in enumerate(dict.fromkeys(r["probe"] for r in grouped.rows)):
        for results, style, what in ((grouped, "o-", f"groups {grouped.data['groups']}"), (plain, "s--", "plain")):
            rows = [results.row(o, probe) for o in outputs]
            y = [_nan(r["metrics"][metric]["mean"]) if r and metric in r["metrics"] else np.nan for r in rows]
            ax.plot(range(len(outputs)), y, style, color=f"C{i}", label=f"{probe}, {what}",
                    alpha=1.0 if results is grouped else 0.6)
    ax.set_xticks(range(len(outputs)), outputs, rotation=30, ha="right")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel(f"{info.label} (mean over folds)")
    ax.set_title("Group-aware folds (solid) against plain stratified folds (dashed)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    return fig
