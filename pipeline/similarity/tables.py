"""Per-layer tables from caches: distance to ImageNet or to a second data set, and transferability.

Rows follow the cache's outputs in depth order, except the ImageNet ``logits``,
which feed LEEP only. Against ImageNet, each BatchNorm layer gets its own row
too (``bn_rows``), and each output row summarises the BatchNorm layers that
belong to it: those that ran at or after the previous output and before or at
this one, as the extraction recorded from a forward pass (see
:func:`pipeline.model.batchnorm_members`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..errors import SimilarityError
from .gaussian import channel_moments
from .registry import get_measure, measure_names
from .samples import CV_FOLDS, MAX_ROWS, check_pair

IMAGENET = "imagenet"
LOGITS = "logits"


class BNStatLike(Protocol):
    """What the tables need of a BatchNorm layer's statistics (``pipeline.cache.bnstats.BNStat``)."""

    module: str
    depth: int
    channels: int
    mean: np.ndarray
    var: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray


@dataclass
class LayerRow:
    """One layer's values; ``members`` are the BatchNorm layers an output row summarises."""

    name: str  # an output "layer/pooling", or a BatchNorm module
    depth: int  # outputs: position among the outputs; BatchNorm layers: firing order
    channels: int
    values: dict[str, float | None] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "depth": self.depth, "channels": self.channels, "values": _finite(self.values),
                "members": list(self.members)}


@dataclass
class SimilarityTable:
    """Everything ``layerprobe similarity`` shows, and what ``advise`` reads."""

    cache: str
    reference: str  # "imagenet" or the reference cache's path
    model: str
    n_images: int
    n_labelled: int
    n_classes: int
    n_reference: int | None
    distances: list[str]  # measure names of the distance columns
    transfers: list[str]  # measure names of the transferability columns
    rows: list[LayerRow]
    bn_rows: list[LayerRow] = field(default_factory=list)
    bn_outside: list[str] = field(default_factory=list)  # BatchNorm layers in no output row (after the last one)
    leep: float | None = None
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def column(self, measure: str) -> list[float | None]:
        """One measure's values along the output rows (None where it could not be computed)."""
        get_measure(measure)
        return [r.values.get(measure) for r in self.rows]

    def as_dict(self) -> dict:
        return {
            "cache": self.cache, "reference": self.reference, "model": self.model, "n_images": self.n_images,
            "n_labelled": self.n_labelled, "n_classes": self.n_classes, "n_reference": self.n_reference,
            "distances": self.distances, "transfers": self.transfers, "leep": _finite(self.leep),
            "settings": self.settings, "notes": self.notes, "rows": [r.as_dict() for r in self.rows],
            "bn_rows": [r.as_dict() for r in self.bn_rows], "bn_outside": list(self.bn_outside),
        }


def _finite(value):
    """JSON has no NaN: undefined numbers become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


# Against ImageNet, from BatchNorm statistics --------------------------------------------------
def bn_table(stats: Sequence[BNStatLike]) -> list[LayerRow]:
    """One row per BatchNorm layer, in firing order: every ``gaussian`` measure, data against ImageNet."""
    rows = []
    for s in sorted(stats, key=lambda s: s.depth):
        values = {name: get_measure(name).compute(s.mean, s.var, s.running_mean, s.running_var)
                  for name in measure_names("gaussian")}
        rows.append(LayerRow(s.module, int(s.depth), int(s.channels), values))
    return rows


def summarise_bn(bn_rows: list[LayerRow], outputs: Sequence[str],
                 members: dict[str, list[str]]) -> dict[str, tuple[dict, list[str]]]:
    """Per output ``layer/pooling``: the mean of each measure over its BatchNorm layers, and their names.

    ``members`` maps each layer to its BatchNorm layers (stored by the extraction).
    """
    by_name = {r.name: r for r in bn_rows}
    summary = {}
    for output in outputs:
        owned = [m for m in members.get(output.rsplit("/", 1)[0], []) if m in by_name]
        values = {name: (float(np.mean([by_name[m].values[name] for m in owned])) if owned else None)
                  for name in measure_names("gaussian")}
        summary[output] = (values, owned)
    return summary


# Against another data set, from codes ---------------------------------------------------------
def sample_values(a: np.ndarray, b: np.ndarray, seed: int = 0, max_rows: int = MAX_ROWS) -> dict[str, float]:
    """Every ``gaussian`` measure on the channels' moments (``b`` as reference) and every ``sample`` measure."""
    a, b = check_pair(a, b, "comparison", min_rows=CV_FOLDS)
    (ma, va), (mb, vb) = channel_moments(a), channel_moments(b)
    values = {name: get_measure(name).compute(ma, va, mb, vb) for name in measure_names("gaussian")}
    for name in measure_names("sample"):
        values[name] = get_measure(name).compute(a, b, seed=seed, max_rows=max_rows)
    return values


def _comparable(a, b) -> None:
    """Refuse two caches whose codes do not come from the same model, weights, preprocessing and outputs."""
    among = ("model", "weights_sha256", "preprocessing")
    found = [d.brief() for d in a.provenance.source.differences(b.provenance.source, among=among)]
    oa, ob = [f"{l}/{p}" for l, p in a.outputs], [f"{l}/{p}" for l, p in b.outputs]
    if oa != ob:
        only_a, only_b = [o for o in oa if o not in ob], [o for o in ob if o not in oa]
        found.append(f"outputs only in {a.path.name}: {', '.join(only_a) or 'none'}; only in {b.path.name}: "
                     f"{', '.join(only_b) or 'none'}" if only_a or only_b else "outputs in another order")
    if found:
        raise SimilarityError(f"{a.path.name} and {b.path.name} cannot be compared: {'; '.join(found)}. Extract both "
                              "with the same model, weights, img_size, layers and pools "
                              "(--model, --weights, --img-size, --layers, --pool)")


# Transferability ------------------------------------------------------------------------------
def transfer_values(codes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every ``transfer`` measure of one layer's codes."""
    return {name: get_measure(name).compute(codes, labels) for name in measure_names("transfer")}


def _classes(labels: np.ndarray) -> tuple[int, int]:
    labelled = labels[labels >= 0]
    return len(labelled), len(np.unique(labelled))


# The whole table ------------------------------------------------------------------------------
def similarity_table(cache_path: str | Path, reference: str | Path | None = IMAGENET, *, seed: int = 0,
                     max_rows: int = MAX_ROWS, transfer: bool = True) -> SimilarityTable:
    """Per-layer distance of a cache's data to ImageNet (from its BatchNorm statistics), to a second
    cache's data (``reference`` its path) or to nothing (None), and, where the images are labelled,
    each layer's transferability."""
    from ..cache import open_cache

    with open_cache(cache_path) as cache:
        outputs = [f"{l}/{p}" for l, p in cache.outputs if l != LOGITS]
        logits = next((f"{l}/{p}" for l, p in cache.outputs if l == LOGITS), None)
        labels = cache.labels
        n_labelled, n_classes = _classes(labels)
        table = SimilarityTable(
            cache=str(cache_path), reference=str(reference or ""), model=cache.provenance.source.model,
            n_images=cache.n_rows, n_labelled=n_labelled, n_classes=n_classes, n_reference=None,
            distances=measure_names("gaussian"), transfers=[], rows=[], settings={"seed": seed, "max_rows": max_rows},
        )
        rows = {o: LayerRow(o, i, int(cache.output_info(o)["shape"][1])) for i, o in enumerate(outputs)}
        if reference is None:
            table.distances = []
        elif str(reference) == IMAGENET:
            _imagenet(cache, table, rows)
        else:
            _reference(cache, Path(reference), table, rows, seed, max_rows)
        if transfer:
            _transfer(cache, table, rows, labels, logits, n_classes)
        table.rows = list(rows.values())
    return table


def _imagenet(cache, table: SimilarityTable, rows: dict[str, LayerRow]) -> None:
    stats = cache.bn_stats()
    if not stats:
        raise SimilarityError(
            f"{Path(cache.path).name} holds no BatchNorm statistics, so it cannot be compared with ImageNet: "
            "extract again with bn_stats=True (--bn-stats) (a model without BatchNorm layers cannot be compared "
            "this way; pass another cache as reference (--reference CACHE2))")
    table.bn_rows = bn_table(stats)
    members = cache.bn_members()
    if members is None:
        table.notes.append(f"{Path(cache.path).name} does not record which output each BatchNorm layer belongs to "
                           "(made by an older layerprobe): only the per-BatchNorm rows (bn_rows, --json) are shown; "
                           "delete it and extract again with bn_stats=True (--bn-stats) for per-layer distances")
        members = {}
    for output, (values, owned) in summarise_bn(table.bn_rows, list(rows), members).items():
        rows[output].values.update(values)
        rows[output].members = owned
    inside = {m for row in rows.values() for m in row.members}
    table.bn_outside = [r.name for r in table.bn_rows if r.name not in inside]


def _reference(cache, reference: Path, table: SimilarityTable, rows: dict[str, LayerRow], seed: int,
               max_rows: int) -> None:
    from ..cache import open_cache

    with open_cache(reference) as other:
        _comparable(cache, other)
        table.n_reference = other.n_rows
        table.distances = measure_names("gaussian") + measure_names("sample")
        for output, row in rows.items():
            row.values.update(sample_values(cache.codes(output), other.codes(output), seed, max_rows))


def _transfer(cache, table: SimilarityTable, rows: dict[str, LayerRow], labels, logits, n_classes: int) -> None:
    if n_classes < 2:
        table.notes.append(f"transferability needs labelled images of at least 2 classes; {Path(cache.path).name} "
                           f"has {n_classes}")
        return
    table.transfers = measure_names("transfer")
    for output, row in rows.items():
        row.values.update(transfer_values(cache.codes(output), labels))
    if logits is None:
        table.notes.append("LEEP needs the ImageNet logits: extract with layers=('all', 'logits') "
                           "(--layers all,logits)")
    else:
        table.leep = get_measure("leep").compute(cache.codes(logits), labels)
