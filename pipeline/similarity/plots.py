"""Each measure of a similarity table against depth, one panel per measure.

Against ImageNet, the distance panels show every BatchNorm layer (thin line)
and each output's mean over its BatchNorm layers (large dots, labelled);
other panels show one point per output. matplotlib's object API on an Agg
canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .registry import get_measure
from .tables import SimilarityTable


def _values(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values])


def similarity_figure(table: SimilarityTable) -> Figure:
    """One panel per distance and transferability measure of ``table``, against depth."""
    measures = table.distances + table.transfers
    cols = min(3, max(1, len(measures)))
    rows = max(1, math.ceil(len(measures) / cols))
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, measures):
        measure = get_measure(name)
        if table.bn_rows and measure.kind == "gaussian":
            _bn_panel(ax, table, name)
        else:
            _output_panel(ax, table, name)
        ax.set_title(f"{measure.label} ({'higher = further' if measure.higher == 'further' else 'higher = better'})",
                     fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    for ax in axes[len(measures):]:
        ax.set_visible(False)
    against = "ImageNet (BatchNorm statistics)" if table.bn_rows else (table.reference or "no reference")
    fig.suptitle(f"{table.model}: {table.n_images} images against {against}", fontsize=10)
    return fig


def _output_panel(ax, table: SimilarityTable, name: str) -> None:
    x = np.arange(len(table.rows))
    ax.plot(x, _values(table.column(name)), "o-", color="C0")
    ax.set_xticks(x, [r.name for r in table.rows], rotation=35, ha="right", fontsize=7)
    ax.set_xlabel("layer (input to output)", fontsize=8)


def _bn_panel(ax, table: SimilarityTable, name: str) -> None:
    position = {r.name: i for i, r in enumerate(table.bn_rows)}
    ax.plot(np.arange(len(table.bn_rows)), _values([r.values[name] for r in table.bn_rows]), ".-", color="C0",
            linewidth=0.8, markersize=3, label="BatchNorm layer")
    placed = [(np.mean([position[m] for m in r.members]), r.values.get(name), r.name) for r in table.rows if r.members]
    if placed:
        x, y, labels = zip(*placed)
        ax.plot(x, _values(y), "o", color="C1", markersize=7, label="output (mean of its BatchNorm layers)")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=7)
    ax.set_xlabel("BatchNorm layer, input to output", fontsize=8)
    ax.legend(fontsize=7, loc="best")


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
