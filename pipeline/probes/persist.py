"""Saving fitted probes without pickle: arrays, JSON and LightGBM's own text format.

A probe file is one ``.npz`` archive read with ``allow_pickle=False``. It holds
the manifest and a description of each pipeline step as JSON, the learned
arrays of linear steps, and LightGBM models as their model text. Loading only
rebuilds estimator kinds named in :data:`CODECS` from those numbers and
strings, so a probe file from a colleague cannot run code.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..errors import ProbeError
from ..atomic import atomic_write
from .estimators import BoosterClassifier, CosineKNN, PlattSVM
from .fitted import FittedProbe

FORMAT = "layerprobe-probe"
FORMAT_VERSION = 1
PROBE_SUFFIX = ".probe.npz"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Codec:
    """How one estimator kind becomes JSON plus arrays, and back."""

    dump: Callable[[object], tuple[dict, dict[str, np.ndarray]]]
    load: Callable[[dict, dict[str, np.ndarray]], object]


def _restore(estimator, attrs: dict):
    for name, value in attrs.items():
        setattr(estimator, name, value)
    return estimator


def _dump_scaler(m: StandardScaler):
    return ({"with_mean": m.with_mean, "with_std": m.with_std, "n_features_in_": int(m.n_features_in_)},
            {"mean_": m.mean_, "scale_": m.scale_, "var_": m.var_, "n_samples_seen_": np.asarray(m.n_samples_seen_)})


def _load_scaler(p, a):
    m = StandardScaler(with_mean=p["with_mean"], with_std=p["with_std"])
    seen = a["n_samples_seen_"]
    return _restore(m, {"mean_": a["mean_"], "scale_": a["scale_"], "var_": a["var_"],
                        "n_samples_seen_": seen.item() if seen.ndim == 0 else seen,
                        "n_features_in_": p["n_features_in_"]})


def _dump_pca(m: PCA):
    return ({"n_components": m.n_components, "whiten": m.whiten, "n_components_": int(m.n_components_),
             "n_samples_": int(m.n_samples_), "n_features_in_": int(m.n_features_in_),
             "noise_variance_": float(m.noise_variance_)},
            {k: getattr(m, k) for k in ("components_", "mean_", "explained_variance_", "explained_variance_ratio_",
                                         "singular_values_")})


def _load_pca(p, a):
    m = PCA(n_components=p["n_components"], whiten=p["whiten"])
    return _restore(m, {**a, **{k: p[k] for k in ("n_components_", "n_samples_", "n_features_in_",
                                                  "noise_variance_")}})


def _dump_logistic(m):
    """LogisticRegression, or LogisticRegressionCV saved as the LogisticRegression it refitted."""
    C = float(np.ravel(m.C_)[0]) if hasattr(m, "C_") else float(m.C)
    return ({"C": C, "class_weight": m.class_weight, "solver": m.solver, "max_iter": m.max_iter,
             "n_features_in_": int(m.n_features_in_)},
            {"coef_": m.coef_, "intercept_": m.intercept_, "classes_": m.classes_})


def _load_logistic(p, a):
    m = LogisticRegression(C=p["C"], class_weight=p["class_weight"], solver=p["solver"], max_iter=p["max_iter"])
    return _restore(m, {**a, "n_features_in_": p["n_features_in_"]})


def _dump_linear_svc(m: LinearSVC):
    return ({"C": float(m.C), "class_weight": m.class_weight, "n_features_in_": int(m.n_features_in_)},
            {"coef_": m.coef_, "intercept_": m.intercept_, "classes_": m.classes_})


def _load_linear_svc(p, a):
    m = LinearSVC(C=p["C"], class_weight=p["class_weight"])
    return _restore(m, {**a, "n_features_in_": p["n_features_in_"]})


def _dump_platt(m: PlattSVM):
    svm_params, svm_arrays = _dump_linear_svc(m.svm_)
    cal_params, cal_arrays = _dump_logistic(m.calibrator_)
    params = {"Cs": list(m.Cs), "class_weight": m.class_weight, "max_iter": m.max_iter,
              "random_state": m.random_state, "C_": m.C_, "cv_log_loss_": m.cv_log_loss_,
              "n_features_in_": int(m.n_features_in_), "svm_": svm_params, "calibrator_": cal_params}
    arrays = {"classes_": m.classes_, **{f"svm_.{k}": v for k, v in svm_arrays.items()},
              **{f"calibrator_.{k}": v for k, v in cal_arrays.items()}}
    return params, arrays


def _load_platt(p, a):
    part = lambda prefix: {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix)}  # noqa: E731
    m = PlattSVM(Cs=tuple(p["Cs"]), cv=None, class_weight=p["class_weight"], max_iter=p["max_iter"],
                 random_state=p["random_state"])
    return _restore(m, {"C_": p["C_"], "cv_log_loss_": p["cv_log_loss_"], "classes_": a["classes_"],
                        "n_features_in_": p["n_features_in_"],
                        "svm_": _load_linear_svc(p["svm_"], part("svm_.")),
                        "calibrator_": _load_logistic(p["calibrator_"], part("calibrator_."))})


def _dump_lgbm(m):
    booster = m.booster_
    text = booster.model_to_string()
    return {"n_features_in_": int(m.n_features_in_)}, {"classes_": np.asarray(m.classes_),
                                                       "model_text": np.frombuffer(text.encode(), dtype=np.uint8)}


def _load_lgbm(p, a):
    return BoosterClassifier.from_text(a["model_text"].tobytes().decode(), a["classes_"])


def _dump_knn(m: CosineKNN):
    """The training codes and labels are the model; refitting a kNN on them only stores them again."""
    return ({"ks": list(m.ks), "k_": int(m.k_), "cv_brier_": list(m.cv_brier_)},
            {"X_train_": m.X_train_, "y_train_": m.y_train_})


def _load_knn(p, a):
    return CosineKNN.from_arrays(p["ks"], p["k_"], a["X_train_"], a["y_train_"], p["cv_brier_"])


CODECS: dict[str, Codec] = {
    "StandardScaler": Codec(_dump_scaler, _load_scaler),
    "PCA": Codec(_dump_pca, _load_pca),
    "LogisticRegression": Codec(_dump_logistic, _load_logistic),
    "LinearSVC": Codec(_dump_linear_svc, _load_linear_svc),
    "PlattSVM": Codec(_dump_platt, _load_platt),
    "LightGBM": Codec(_dump_lgbm, _load_lgbm),
    "CosineKNN": Codec(_dump_knn, _load_knn),
}
# Fitted classes that are saved as another kind.
_SAVED_AS = {"LogisticRegressionCV": "LogisticRegression", "LGBMClassifier": "LightGBM",
             "BoosterClassifier": "LightGBM"}


def save_probe(probe: FittedProbe, path: str | Path) -> Path:
    """Write ``probe`` to ``path`` atomically (temporary name, then ``os.replace``)."""
    path = Path(path)
    steps, arrays = [], {}
    for name, estimator in probe.pipeline.steps:
        kind = type(estimator).__name__
        kind = _SAVED_AS.get(kind, kind)
        if kind not in CODECS:
            raise ProbeError(f"cannot save a pipeline step of kind {kind!r} safely; savable: {', '.join(CODECS)}")
        params, step_arrays = CODECS[kind].dump(estimator)
        steps.append({"name": name, "kind": kind, "params": params})
        arrays.update({f"{name}/{k}": np.asarray(v) for k, v in step_arrays.items()})
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **probe.manifest, "steps": steps}
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())


def load_probe(path: str | Path) -> FittedProbe:
    """Read a probe file; no pickle is ever loaded, and unknown step kinds are refused."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe file {str(path)!r} does not exist; create one with `layerprobe fit`")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{path} is not a readable probe file ({exc})") from None
    try:
        manifest = json.loads(arrays.pop(_MANIFEST).tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise ProbeError(f"{path} is not a layerprobe probe file (no readable manifest)") from None
    if manifest.get("format") != FORMAT:
        raise ProbeError(f"{path} is not a layerprobe probe file (format {manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ProbeError(f"{path} has probe format version {manifest.get('format_version')}; this layerprobe "
                         f"reads version {FORMAT_VERSION}: fit the probe again")
    steps = []
    for step in manifest.pop("steps"):
        kind = step["kind"]
        if kind not in CODECS:
            raise ProbeError(f"{path} has a step of unknown kind {kind!r}; known: {', '.join(CODECS)}")
        prefix = f"{step['name']}/"
        step_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        steps.append((step["name"], CODECS[kind].load(step["params"], step_arrays)))
    for key in ("format", "format_version"):
        manifest.pop(key)
    return FittedProbe(Pipeline(steps), manifest)
