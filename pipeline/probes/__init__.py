"""Probes: classifiers cross-validated on cached codes, their results, saved probes (no torch here).

::

    from pipeline.probes import ProbeConfig, run_probes, fit_probe, save_probe
    results = run_probes("cache/br35h-....h5", ProbeConfig(folds=5), jobs=2)
    study = run_probes(["cache/br35h-lite0.h5", "cache/br35h-lite2.h5"], jobs=2)  # one set of folds
    study.table()  # tidy: a pandas DataFrame if pandas is installed, else records
    probe = fit_probe("cache/br35h-....h5", "blocks.6/avg", "logreg")
    save_probe(probe, "tumour.probe.npz")
"""

from .backends import BACKENDS, get_backend
from .compare import (
    Comparison,
    Difference,
    ModelComparison,
    compare_all,
    compare_models,
    compare_outputs,
    corrected_t,
    default_repeats,
)
from .curve import CurvePoint, LearningCurve, learning_curve
from .data import (
    GROUP_SOURCES,
    LayerSource,
    Output,
    ProbeData,
    load_probe_data,
    register_group_source,
    resolve_outputs,
)
from .fitted import FittedProbe, Predictions, apply_probe, check_compatible, fit_probe
from .grid import DEFAULT_PROBES, ProbeConfig, run_probes
from .metrics import METRICS, N_BOOT, bootstrap_weights, get_metric, metric_names
from .persist import PROBE_SUFFIX, load_probe, save_probe
from .registry import PROBES, ProbeSettings, build_probe, get_probe, register_probe
from .results import (
    ProbeResults,
    comparison_path,
    default_results_path,
    load_results,
    split_comparison,
    summary_rows,
    write_results,
)
from .splits import Folds, inner_splits, make_folds
from .study import run_study
from .study_results import StudyResults, default_study_path, is_study, load_study, study_rows

__all__ = [
    "BACKENDS",
    "DEFAULT_PROBES",
    "GROUP_SOURCES",
    "METRICS",
    "N_BOOT",
    "PROBES",
    "PROBE_SUFFIX",
    "Comparison",
    "ModelComparison",
    "StudyResults",
    "CurvePoint",
    "Difference",
    "FittedProbe",
    "LearningCurve",
    "Folds",
    "LayerSource",
    "Output",
    "Predictions",
    "ProbeConfig",
    "ProbeData",
    "ProbeResults",
    "ProbeSettings",
    "apply_probe",
    "bootstrap_weights",
    "build_probe",
    "compare_all",
    "compare_models",
    "compare_outputs",
    "comparison_path",
    "corrected_t",
    "default_repeats",
    "check_compatible",
    "default_results_path",
    "default_study_path",
    "fit_probe",
    "get_backend",
    "get_metric",
    "get_probe",
    "inner_splits",
    "is_study",
    "learning_curve",
    "load_probe",
    "load_probe_data",
    "load_results",
    "load_study",
    "make_folds",
    "metric_names",
    "register_group_source",
    "register_probe",
    "resolve_outputs",
    "run_probes",
    "run_study",
    "save_probe",
    "split_comparison",
    "study_rows",
    "summary_rows",
    "write_results",
]
