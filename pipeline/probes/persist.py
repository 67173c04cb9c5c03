"""Saving fitted probes without pickle: arrays, JSON and LightGBM's own text format.

A probe file is one ``.npz`` archive read with ``allow_pickle=False``. It holds
the manifest and a description of each pipeline step as JSON, the learned
arrays of linear steps, and LightGBM models as their model text. Loading only
rebuilds estimator kinds named in :data:`CODECS` from those numbers and
strings, so a probe file from a colleague cannot run code. Nor can it exhaust
memory or crash the process: every array's declared dtype, shape and size is
checked (against the zip entry, :data:`LIMITS` and the step's shapes) before any
array is read, and LightGBM model text is checked before LightGBM parses it.
"""

from __future__ import annotations

import io
import json
import zipfile
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
from .archive import LIMITS, bounded, check_numbers, check_shapes, declared_members, read_member
from .lgbm_text import checked_model_text

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
    try:
        text = a["model_text"].tobytes().decode()
    except UnicodeDecodeError:
        raise ProbeError("its LightGBM model text is not UTF-8 text") from None
    checked = checked_model_text(text, p["n_features_in_"], len(a["classes_"]))
    from lightgbm.basic import LightGBMError

    try:
        return BoosterClassifier.from_text(checked, a["classes_"])
    except LightGBMError as exc:
        raise ProbeError(f"LightGBM cannot read its model text ({str(exc).strip()})") from None


def _rows(k: int) -> int:
    """Rows of a linear model's coefficients: one for two classes, else one per class."""
    return 1 if k == 2 else k


def _shapes_scaler(p, k):
    f = p["n_features_in_"]
    return {"mean_": [(f,)], "scale_": [(f,)], "var_": [(f,)], "n_samples_seen_": [(), (f,)]}


def _shapes_pca(p, k):
    f, c = p["n_features_in_"], p["n_components_"]
    return {"components_": [(c, f)], "mean_": [(f,)], "explained_variance_": [(c,)],
            "explained_variance_ratio_": [(c,)], "singular_values_": [(c,)]}


def _shapes_linear(p, k):
    return {"coef_": [(_rows(k), p["n_features_in_"])], "intercept_": [(_rows(k),)], "classes_": [(k,)]}


def _shapes_platt(p, k):
    svm = {f"svm_.{name}": shape for name, shape in _shapes_linear(p["svm_"], k).items()}
    calibrator = {f"calibrator_.{name}": shape for name, shape in _shapes_linear(p["calibrator_"], k).items()}
    return {"classes_": [(k,)], **svm, **calibrator}


def _shapes_lgbm(p, k):
    return {"classes_": [(k,)], "model_text": [(None,)]}


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
# Every array a step of each kind holds, with its allowed shapes given the step's parameters and
# the number of classes (None: any length). A kind not listed gets the generic checks only.
SHAPES: dict[str, Callable[[dict, int], dict[str, list[tuple]]]] = {
    "StandardScaler": _shapes_scaler,
    "PCA": _shapes_pca,
    "LogisticRegression": _shapes_linear,
    "LinearSVC": _shapes_linear,
    "PlattSVM": _shapes_platt,
    "LightGBM": _shapes_lgbm,
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
    """Read a probe file; no pickle is ever loaded, and unknown step kinds are refused.

    Before any array is read, every member's declared dtype, shape and size are
    checked (plain numbers or strings, within :data:`LIMITS`, matching the manifest);
    LightGBM model text is checked before LightGBM parses it.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe file {str(path)!r} does not exist; create one with `layerprobe fit`")
    try:
        with zipfile.ZipFile(path) as archive:
            members = declared_members(path, archive)
            manifest = _read_manifest(path, archive, members)
            _check_steps(path, manifest, members)
            arrays = {name: read_member(archive, name) for name in members if name != _MANIFEST}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ProbeError(f"{path} is not a readable probe file ({exc})") from None
    steps = []
    for step in manifest.pop("steps"):
        prefix = f"{step['name']}/"
        step_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            steps.append((step["name"], CODECS[step["kind"]].load(step["params"], step_arrays)))
        except ProbeError as exc:
            raise ProbeError(f"{path}: step {step['name']!r}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProbeError(f"{path}: step {step['name']!r} cannot be rebuilt ({type(exc).__name__}: {exc})") from None
    for key in ("format", "format_version"):
        manifest.pop(key)
    return FittedProbe(Pipeline(steps), manifest)


def _check_steps(path: Path, manifest: dict, members: dict) -> None:
    """Every step of a known kind, every array it holds present with an allowed shape, nothing else."""
    steps = manifest.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ProbeError(f"{path} is not a layerprobe probe file (no steps in its manifest)")
    k, owned = len(manifest["class_names"]), set()
    for position, step in enumerate(steps):
        kind = step.get("kind") if isinstance(step, dict) else None
        if kind not in CODECS:
            raise ProbeError(f"{path} has a step of unknown kind {kind!r}; known: {', '.join(CODECS)}")
        name, params = step.get("name"), step.get("params")
        if not isinstance(name, str) or not isinstance(params, dict):
            raise ProbeError(f"{path}: step {position} has no name or parameters")
        if "n_features_in_" in params:
            width = bounded(path, f"n_features_in_ of step {name!r}", params["n_features_in_"], 1,
                            LIMITS["channels"])
            if position == 0 and width != manifest["channels"]:
                raise ProbeError(f"{path}: step {name!r} takes {width} features, the manifest says "
                                 f"{manifest['channels']} channels")
        prefix = f"{name}/"
        mine = {m[len(prefix):]: members[m] for m in members if m.startswith(prefix)}
        owned |= {prefix + m for m in mine}
        if kind in SHAPES:
            check_shapes(path, name, mine, _expected(path, name, SHAPES[kind], params, k))
    stray = sorted(set(members) - owned - {_MANIFEST})
    if stray:
        raise ProbeError(f"{path}: member {stray[0]!r} belongs to no step")


def _expected(path: Path, name: str, shapes, params: dict, k: int) -> dict:
    try:
        return shapes(params, k)
    except (KeyError, TypeError) as exc:
        raise ProbeError(f"{path}: step {name!r} lacks parameter {exc}") from None


def _read_manifest(path: Path, archive: zipfile.ZipFile, members: dict) -> dict:
    shape, dtype = members.get(_MANIFEST, ((), None))
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > LIMITS["manifest_bytes"]:
        raise ProbeError(f"{path} is not a layerprobe probe file (no readable manifest)")
    try:
        manifest = json.loads(read_member(archive, _MANIFEST).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProbeError(f"{path} is not a layerprobe probe file (no readable manifest)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ProbeError(f"{path} is not a layerprobe probe file (format {found!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ProbeError(f"{path} has probe format version {manifest.get('format_version')}; this layerprobe "
                         f"reads version {FORMAT_VERSION}: fit the probe again")
    check_numbers(path, manifest)
    return manifest
