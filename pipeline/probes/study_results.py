"""The results file of a study: one JSON document, rows of every model on one set of folds.

Like a single cache's results file (:mod:`.results`) it holds the folds, the
settings and a row per (model, output, probe), plus each model's cache and cost,
the comparisons across models, the chosen (model, output, probe) and that
row's out-of-fold probabilities for the report's confusion matrix, ROC curve
and reliability diagram.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write
from ..errors import ProbeError
from .results import ProbeResults, _finite, read_document
from .splits import Folds

STUDY_FORMAT = "layerprobe-study-results"
STUDY_FORMAT_VERSION = 1
STUDY_SUFFIX = ".study.json"
TABLE_METRICS = ("roc_auc", "balanced_accuracy", "accuracy", "log_loss")


@dataclass
class StudyResults:
    """Everything one study file holds; ``rows`` are plain dicts with a ``model`` label, in study order."""

    models: list[dict]  # label, cache, cost, duplicates, leakage, outputs, comparisons (within the model)
    config: dict
    data: dict  # as a results file's, plus the ids and labels in the study's row order
    folds: Folds
    rows: list[dict] = field(default_factory=list)
    runtime: dict = field(default_factory=dict)
    created: str = ""
    version: str = ""
    comparisons: dict = field(default_factory=dict)  # {metric: {probe: ModelComparison.as_dict() + cheapest}}
    chosen: dict = field(default_factory=dict)  # metric, probe, model, output, best, tied
    predictions: dict = field(default_factory=dict)  # proba: (repeats, rows, classes) of the chosen row

    @property
    def labels(self) -> list[str]:
        return [m["label"] for m in self.models]

    def model(self, label: str) -> dict:
        for m in self.models:
            if m["label"] == label:
                return m
        raise ProbeError(f"the study has no model {label!r}; it has {', '.join(self.labels)}")

    def model_results(self, label: str) -> ProbeResults:
        """One model's rows as the results of a single cache, on the study's folds."""
        m = self.model(label)
        data = {k: v for k, v in self.data.items() if k not in ("ids", "y")}
        if m.get("leakage"):
            data["leakage"] = m["leakage"]
        rows = [{k: v for k, v in r.items() if k != "backbone"} for r in self.rows if r["backbone"] == label]
        return ProbeResults(cache=m["cache"], config=self.config, data=data, folds=self.folds,
                            outputs=m["outputs"], rows=rows, runtime=self.runtime, created=self.created,
                            version=self.version, comparisons=m.get("comparisons", {}))

    def records(self, metrics: tuple[str, ...] = TABLE_METRICS) -> list[dict]:
        """A tidy table: one record per (model, output, probe, metric) with its cost beside it."""
        out = []
        for r in self.rows:
            m = self.model(r["backbone"])
            tied = {(metric, probe): {tuple(t) for t in c["tied"]}
                    for metric, by in self.comparisons.items() for probe, c in by.items()}
            for name in metrics:
                if name not in r["metrics"]:
                    continue
                v = r["metrics"][name]
                out.append({"backbone": r["backbone"], "output": r["output"], "depth": r["depth"], "probe": r["probe"],
                            "metric": name, "mean": v["mean"], "sd": v["sd"], "ci_low": v["ci"][0],
                            "ci_high": v["ci"][1],
                            "tied_with_best": (r["backbone"], r["output"]) in tied.get((name, r["probe"]), set()),
                            "channels": r["channels"], "n_params": m["cost"]["n_params"],
                            "images_per_s": m["cost"]["images_per_s"]})
        return out

    def table(self, metrics: tuple[str, ...] = TABLE_METRICS):
        """:meth:`records` as a pandas DataFrame when pandas is installed, else the list of records."""
        records = self.records(metrics)
        try:
            import pandas
        except ImportError:
            return records
        return pandas.DataFrame.from_records(records)

    def as_dict(self) -> dict:
        return {"format": STUDY_FORMAT, "format_version": STUDY_FORMAT_VERSION, "layerprobe": self.version,
                "created": self.created, "models": self.models, "config": self.config, "data": self.data,
                "folds": self.folds.as_dict(), "runtime": self.runtime, "rows": self.rows,
                "comparisons": self.comparisons, "chosen": self.chosen, "predictions": self.predictions}


def default_study_path(cache_paths: list[str | Path]) -> Path:
    """``study-<digest of the caches' names>.study.json`` beside the first cache."""
    names = "\n".join(str(Path(p).resolve()) for p in cache_paths)
    return Path(cache_paths[0]).with_name(f"study-{hashlib.sha256(names.encode()).hexdigest()[:12]}{STUDY_SUFFIX}")


def write_study(study: StudyResults, path: str | Path) -> Path:
    text = json.dumps(_finite(study.as_dict()), indent=None, allow_nan=False, separators=(",", ":"))
    return atomic_write(path, text.encode())


def is_study(path: str | Path) -> bool:
    """Whether ``path`` is a study file (read only as far as its format entry)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(200).decode(errors="replace")
    except OSError:
        return False
    return f'"format":"{STUDY_FORMAT}"' in "".join(head.split())


def load_study(path: str | Path) -> StudyResults:
    """Read a study file, refusing anything that is not one."""
    doc = read_document(path, STUDY_FORMAT, STUDY_FORMAT_VERSION, "study", "study",
                        "layerprobe probe CACHE_A CACHE_B", "run the study again")
    return StudyResults(models=doc["models"], config=doc["config"], data=doc["data"],
                        folds=Folds.from_dict(doc["folds"]), rows=doc["rows"], runtime=doc.get("runtime", {}),
                        created=doc.get("created", ""), version=doc.get("layerprobe", ""),
                        comparisons=doc.get("comparisons", {}), chosen=doc.get("chosen", {}),
                        predictions=doc.get("predictions", {}))


def study_rows(study: StudyResults, metric: str) -> list[dict]:
    """One flat record per row for tables and ``--json``: ``best`` marks each probe's best (model, layer)
    across models, ``tied`` the candidates tied with it (ROC AUC and balanced accuracy)."""
    from .metrics import get_metric

    sign = 1.0 if get_metric(metric).higher_is_better else -1.0
    best: dict[str, tuple] = {}
    for r in study.rows:
        value = r["metrics"].get(metric, {}).get("mean")
        if value is not None and (r["probe"] not in best or sign * value > sign * best[r["probe"]][0]):
            best[r["probe"]] = (value, r["backbone"], r["output"])
    out = []
    for r in study.rows:
        m = r["metrics"].get(metric)
        if m is None:
            raise ProbeError(f"metric {metric!r} does not apply to these results (binary-only metric?)")
        tied = {tuple(t) for t in study.comparisons.get(metric, {}).get(r["probe"], {}).get("tied", [])}
        out.append({"backbone": r["backbone"], "output": r["output"], "depth": r["depth"], "probe": r["probe"],
                    "metric": metric, "mean": m["mean"], "sd": m["sd"], "pooled": m["pooled"], "ci": m["ci"],
                    "best": best.get(r["probe"], (None,))[1:] == (r["backbone"], r["output"]),
                    "tied": (r["backbone"], r["output"]) in tied, "channels": r["channels"]})
    return out
