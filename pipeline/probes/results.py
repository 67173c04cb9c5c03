"""The results file: one JSON document with the folds, the settings and a row per (layer, probe).

Written to a unique temporary name beside its target and renamed into place,
so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.manifest import ProvenanceCopy
from ..errors import ProbeError
from ..atomic import atomic_write
from .metrics import get_metric
from .splits import Folds

FORMAT = "layerprobe-probe-results"
FORMAT_VERSION = 1
SUFFIX = ".probes.json"


@dataclass
class ProbeResults:
    """Everything one results file holds; ``rows`` are plain dicts, in depth then probe order."""

    cache: dict  # path, key, model, preprocessing, input
    config: dict  # ProbeConfig.as_dict()
    data: dict  # rows used, class names and counts, ids digest, group source
    folds: Folds
    outputs: list[dict]
    rows: list[dict] = field(default_factory=list)
    runtime: dict = field(default_factory=dict)
    created: str = ""
    version: str = ""
    comparisons: dict = field(default_factory=dict)  # compare.compare_all(); absent from files before it

    @property
    def provenance(self) -> ProvenanceCopy:
        """The cache's model (and weights), preprocessing and input these results were made from."""
        return ProvenanceCopy.from_dict(self.cache, "the probe results")

    def row(self, output: str, probe: str) -> dict | None:
        return next((r for r in self.rows if r["output"] == output and r["probe"] == probe), None)

    def best(self, metric: str) -> dict[str, dict]:
        """The best row of each probe by the fold mean of ``metric``."""
        sign = 1.0 if get_metric(metric).higher_is_better else -1.0
        best: dict[str, dict] = {}
        for r in self.rows:  # depth order, so ties go to the shallower layer
            value = r["metrics"].get(metric, {}).get("mean")
            if value is None or not math.isfinite(value):
                continue
            current = best.get(r["probe"])
            if current is None or sign * value > sign * current["metrics"][metric]["mean"]:
                best[r["probe"]] = r
        return best

    def as_dict(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "layerprobe": self.version, "created": self.created,
            "cache": self.cache, "config": self.config, "data": self.data, "outputs": self.outputs,
            "folds": self.folds.as_dict(), "runtime": self.runtime, "rows": self.rows,
            "comparisons": self.comparisons,
        }


def default_results_path(cache_path: str | Path) -> Path:
    """``<cache>.probes.json`` beside the cache."""
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.stem + SUFFIX)


def _finite(value):
    """JSON has no NaN: undefined numbers (a one-class bootstrap sample) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_results(results: ProbeResults, path: str | Path) -> Path:
    """Write the results file atomically (see :func:`atomic_write`)."""
    text = json.dumps(_finite(results.as_dict()), indent=1, allow_nan=False)
    return atomic_write(path, text.encode())


def read_document(path: str | Path, fmt: str, version: int, what: str, kind: str, create: str, rerun: str) -> dict:
    """The JSON document at ``path`` if it is a ``fmt`` file of ``version``; else one line naming the problem.

    ``what`` names the file in messages ("results"), ``kind`` the format ("probe results"), ``create`` the
    command that makes one and ``rerun`` the fix for an old version.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{what} file {str(path)!r} does not exist; create it with `{create}`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{path} is not a readable JSON file ({exc}); it is not a {kind} file") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise ProbeError(f"{path} is not a layerprobe {kind} file (no format {fmt!r})")
    if doc.get("format_version") != version:
        raise ProbeError(f"{path} has {what} format version {doc.get('format_version')}; this layerprobe reads "
                         f"version {version}: {rerun}")
    return doc


def load_results(path: str | Path) -> ProbeResults:
    """Read a results file, refusing anything that is not one."""
    doc = read_document(path, FORMAT, FORMAT_VERSION, "results", "probe results", "layerprobe probe CACHE",
                        "run `layerprobe probe` again")
    return ProbeResults(
        cache=doc["cache"], config=doc["config"], data=doc["data"], folds=Folds.from_dict(doc["folds"]),
        outputs=doc["outputs"], rows=doc["rows"], runtime=doc.get("runtime", {}), created=doc.get("created", ""),
        version=doc.get("layerprobe", ""), comparisons=doc.get("comparisons", {}),
    )


def summary_rows(results: ProbeResults, metric: str) -> list[dict]:
    """One flat record per row for tables and ``--json``: value, spread, interval, best mark."""
    from .compare import ADVICE_METRICS, compare_outputs

    get_metric(metric)
    best = {id(r) for r in results.best(metric).values()}
    tied = set()
    for probe in dict.fromkeys(r["probe"] for r in results.rows) if metric in ADVICE_METRICS else ():
        try:
            tied.update((o, probe) for o in compare_outputs(results, metric, probe).tied)
        except ProbeError:  # no feature layer of this probe
            continue
    out = []
    for r in results.rows:
        m = r["metrics"].get(metric)
        if m is None:
            raise ProbeError(f"metric {metric!r} does not apply to these results (binary-only metric?)")
        out.append({"output": r["output"], "depth": r["depth"], "probe": r["probe"], "metric": metric,
                    "mean": m["mean"], "sd": m["sd"], "pooled": m["pooled"], "ci": m["ci"],
                    "best": id(r) in best, "tied": (r["output"], r["probe"]) in tied, "chosen": r.get("chosen", []),
                    "patient": {how: {"mean": s[metric]["mean"], "ci": s[metric]["ci"]}
                                for how, s in r.get("patient_metrics", {}).items() if metric in s}})
    return out


def comparison_path(results_path: str | Path) -> Path:
    """Where ``probe --compare-splits`` keeps the plain-split run: ``<results stem>.leaky.json``."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.stem + ".leaky.json")


def split_comparison(grouped: ProbeResults, leaky: ProbeResults, metric: str) -> list[dict]:
    """Each (layer, probe) scored on the group-aware folds and on plain stratified folds."""
    get_metric(metric)
    if grouped.cache.get("key") != leaky.cache.get("key"):
        raise ProbeError("the two results files come from different caches; run both on one cache "
                         "(layerprobe probe --compare-splits does)")
    out = []
    for r in grouped.rows:
        other = leaky.row(r["output"], r["probe"])
        if other is None or metric not in r["metrics"]:
            continue
        safe, inflated = r["metrics"][metric]["mean"], other["metrics"][metric]["mean"]
        out.append({"output": r["output"], "probe": r["probe"], "metric": metric, "grouped": safe,
                    "plain": inflated, "difference": None if safe is None or inflated is None else inflated - safe})
    return out
