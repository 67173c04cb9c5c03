"""The measures, by name: a plain registry with a getter whose error lists the valid names.

Every measure has a kind, and all measures of a kind take the same arguments:

* ``gaussian``: ``(mean, var, ref_mean, ref_var) -> float``, per-channel statistics
  of one layer (BatchNorm statistics against ImageNet, or codes against codes);
* ``sample``: ``(codes_a, codes_b, seed=0, max_rows=MAX_ROWS) -> float``, two samples of one
  layer's codes (``seed`` and ``max_rows`` bound the cost of the measures that subsample);
* ``transfer``: ``(codes, labels) -> float``, one layer's codes and the labels;
* ``source``: ``(logits, labels) -> float``, the ImageNet head's logits and the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from ..errors import SimilarityError
from . import gaussian, samples, transfer

KINDS = ("gaussian", "sample", "transfer", "source")


@dataclass(frozen=True)
class Measure:
    """One measure: what it takes (``kind``), how to read it, and the function."""

    name: str
    kind: str
    label: str  # for tables and plot axes
    higher: str  # what a larger value means: "further" (a distance) or "better" (transferability)
    compute: Callable[..., float]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SimilarityError(f"measure {self.name!r} has kind {self.kind!r}; kinds are {', '.join(KINDS)}")
        if self.higher not in ("further", "better"):
            raise SimilarityError(f"measure {self.name!r}: higher must be 'further' or 'better', got {self.higher!r}")


def _channel_mean(fn, mean, var, ref_mean, ref_var) -> float:
    return float(fn(mean, var, ref_mean, ref_var).mean())


def _sample(fn, a, b, seed: int = 0, max_rows: int = samples.MAX_ROWS) -> float:
    return fn(a, b, seed=seed, max_rows=max_rows)


def _deterministic(fn, a, b, seed: int = 0, max_rows: int = samples.MAX_ROWS) -> float:
    return fn(a, b)  # uses every row: no sampling, no seed


MEASURES: dict[str, Measure] = {
    "w2": Measure("w2", "gaussian", "W2 per channel (ref. sd)", "further",
                  partial(_channel_mean, gaussian.w2_channels)),
    "sym_kl": Measure("sym_kl", "gaussian", "symmetric KL per channel", "further",
                      partial(_channel_mean, gaussian.sym_kl_channels)),
    "mean_shift": Measure("mean_shift", "gaussian", "mean shift per channel (ref. sd)", "further",
                          partial(_channel_mean, gaussian.mean_shift_channels)),
    "frechet": Measure("frechet", "sample", "Fréchet distance", "further", partial(_deterministic, samples.frechet)),
    "frechet_rel": Measure("frechet_rel", "sample", "Fréchet / its bound", "further",
                           partial(_deterministic, samples.frechet_rel)),
    "mmd": Measure("mmd", "sample", "MMD² (RBF, unbiased)", "further", partial(_sample, samples.mmd)),
    "domain_auc": Measure("domain_auc", "sample", "domain classifier AUC", "further",
                          partial(_sample, samples.domain_auc)),
    "logme": Measure("logme", "transfer", "LogME", "better", transfer.logme),
    "hscore": Measure("hscore", "transfer", "H-score (shrinkage)", "better", transfer.hscore),
    "leep": Measure("leep", "source", "LEEP", "better", transfer.leep),
}


def get_measure(name: str) -> Measure:
    """The measure called ``name``; the error lists every valid name."""
    try:
        return MEASURES[name]
    except KeyError:
        raise SimilarityError(f"unknown measure {name!r}; available: {', '.join(sorted(MEASURES))}") from None


def measure_names(kind: str | None = None) -> list[str]:
    """Names of every measure, or of one kind, in registry order."""
    if kind is not None and kind not in KINDS:
        raise SimilarityError(f"unknown measure kind {kind!r}; kinds are {', '.join(KINDS)}")
    return [name for name, m in MEASURES.items() if kind is None or m.kind == kind]


def register_measure(measure: Measure) -> None:
    """Add a measure; its ``compute`` must take the arguments of its kind (see the module docstring)."""
    if not measure.name or "," in measure.name:
        raise SimilarityError(f"invalid measure name {measure.name!r}")
    MEASURES[measure.name] = measure
