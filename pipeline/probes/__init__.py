"""Probes: classifiers cross-validated on cached codes, their results, saved probes (no torch here).

::

    from pipeline.probes import ProbeConfig, run_probes, fit_probe, save_probe
    results = run_probes("cache/br35h-....h5", ProbeConfig(folds=5), jobs=2)
    study = run_probes(["cache/br35h-lite0.h5", "cache/br35h-lite2.h5"], jobs=2)  # one set of folds
    study.table()  # tidy: a pandas DataFrame if pandas is installed, else records
    probe = fit_probe("cache/br35h-....h5", "blocks.6/avg", "logreg")
    save_probe(probe, "tumour.probe.npz")
"""

from __future__ import annotations

from ..lazy import lazy_names

# Every name is imported from its module on first use, so that a process needing one module (a fitting
# worker unpickling its task from .task) does not import the cache, h5py and the rest of the stage.
_LAZY = {
    "BACKENDS": "backends", "get_backend": "backends",
    "Comparison": "compare", "Difference": "compare", "ModelComparison": "compare", "compare_all": "compare",
    "compare_models": "compare", "compare_outputs": "compare", "corrected_t": "compare", "default_repeats": "compare",
    "CurvePoint": "curve", "LearningCurve": "curve", "learning_curve": "curve",
    "GROUP_SOURCES": "data", "LayerSource": "data", "Output": "data", "ProbeData": "data", "load_probe_data": "data",
    "register_group_source": "data", "resolve_outputs": "data",
    "FittedProbe": "fitted", "Predictions": "fitted", "apply_probe": "fitted", "check_compatible": "fitted",
    "fit_probe": "fitted",
    "DEFAULT_PROBES": "grid", "ProbeConfig": "grid", "run_probes": "grid",
    "METRICS": "metrics", "N_BOOT": "metrics", "bootstrap_weights": "metrics", "get_metric": "metrics",
    "metric_names": "metrics",
    "PROBE_SUFFIX": "persist", "load_probe": "persist", "save_probe": "persist",
    "PROBES": "registry", "ProbeSettings": "registry", "build_probe": "registry", "get_probe": "registry",
    "register_probe": "registry",
    "ProbeResults": "results", "comparison_path": "results", "default_results_path": "results",
    "load_results": "results", "split_comparison": "results", "summary_rows": "results", "write_results": "results",
    "Folds": "splits", "inner_splits": "splits", "make_folds": "splits",
    "run_study": "study",
    "StudyResults": "study_results", "default_study_path": "study_results", "is_study": "study_results",
    "load_study": "study_results", "study_rows": "study_results",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

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
