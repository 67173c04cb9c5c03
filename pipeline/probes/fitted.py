"""A probe fitted on all rows of a cache, its manifest, and applying it to codes.

The manifest names everything the probe's input must come from: model,
weights digest, layer, pooling and preprocessing. Applying a probe to codes of
anything else is refused, with the field that differs.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from .. import __version__
from ..cache import CodeSource, open_cache
from ..cache.manifest import ProvenanceCopy
from ..errors import ProbeError
from ..atomic import atomic_write
from .data import Output, labelled_rows, load_codes, resolve_groups, resolve_outputs
from .registry import ProbeSettings, build_probe, chosen_params, get_probe
from .splits import inner_splits

log = logging.getLogger(__name__)


@dataclass
class FittedProbe:
    """A fitted scikit-learn pipeline plus the manifest of where its inputs must come from."""

    pipeline: Pipeline
    manifest: dict

    @property
    def probe(self) -> str:
        return self.manifest["probe"]

    @property
    def output(self) -> str:
        return self.manifest["output"]

    @property
    def layer(self) -> str:
        return self.manifest["layer"]

    @property
    def pooling(self) -> str:
        return self.manifest["pooling"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def provenance(self) -> ProvenanceCopy:
        """The model (and its weights), preprocessing and precision of the codes the probe was fitted on."""
        return ProvenanceCopy.from_dict(self.manifest, "the probe")

    @property
    def source(self) -> CodeSource:
        """The model, weights, preprocessing and precision of the codes the probe was fitted on."""
        return self.provenance.source

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities for (rows, channels) codes of this probe's layer."""
        codes = np.asarray(codes)
        channels = self.manifest["channels"]
        if codes.ndim != 2 or codes.shape[1] != channels:
            raise ProbeError(
                f"this {self.probe} probe takes codes of {self.output} with {channels} channels, "
                f"got an array of shape {codes.shape}"
            )
        return np.asarray(self.pipeline.predict_proba(codes.astype(np.float64)), dtype=np.float64)


@dataclass
class Predictions:
    """One row per image: id, predicted class and the probability of each class."""

    ids: np.ndarray
    class_names: list[str]
    proba: np.ndarray
    groups: np.ndarray | None = None  # the cache's group column (patients, volumes), where it has one

    @property
    def predicted(self) -> list[str]:
        return [self.class_names[i] for i in np.argmax(self.proba, axis=1)]

    def per_group_csv(self) -> str:
        """One row per group: ``group,n_images,predicted,p_<class>...`` (mean over its images), and for two
        classes ``max_p_<positive>``, the largest positive probability ("any image positive")."""
        from .patients import aggregate_max, aggregate_mean

        if self.groups is None:
            raise ProbeError("per-group predictions need a group column (DICOM PatientID, a NIfTI volume or a CSV's "
                             "group column), and these images have none")
        names, index = np.unique(self.groups, return_inverse=True)
        mean = aggregate_mean(self.proba, index, len(names))
        top = aggregate_max(self.proba, index, len(names))[:, 1] if len(self.class_names) == 2 else None
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["group", "n_images", "predicted", *(f"p_{name}" for name in self.class_names),
                         *([f"max_p_{self.class_names[1]}"] if top is not None else [])])
        counts = np.bincount(index, minlength=len(names))
        for g, name in enumerate(names):
            writer.writerow([name, int(counts[g]), self.class_names[int(np.argmax(mean[g]))],
                             *(repr(float(v)) for v in mean[g]), *([repr(float(top[g]))] if top is not None else [])])
        return buffer.getvalue()

    def to_csv(self) -> str:
        """``id,predicted,p_<class>...``; probabilities at full (round-trip) precision."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "predicted", *(f"p_{name}" for name in self.class_names)])
        for row_id, label, p in zip(self.ids, self.predicted, self.proba):
            writer.writerow([row_id, label, *(repr(float(v)) for v in p)])
        return buffer.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        return atomic_write(path, self.to_csv().encode())


def fit_probe(
    cache_path: str | Path,
    layer: str,
    probe: str,
    settings: ProbeSettings = ProbeSettings(),
    groups: str | None = None,
    seed: int = 0,
) -> FittedProbe:
    """Fit ``probe`` on every labelled row of one layer; C still comes from inner folds."""
    get_probe(probe)
    with open_cache(cache_path) as cache:
        rows, y, names = labelled_rows(cache)
        outputs = resolve_outputs(cache, (layer,))
        if len(outputs) != 1:
            raise ProbeError(
                f"layer {layer!r} is stored with poolings {', '.join(o.pooling for o in outputs)}; "
                f"name one as {layer}/<pooling>"
            )
        output = outputs[0]
        group_name, group_values = resolve_groups(cache, groups)
        group_values = None if group_values is None else group_values[rows]
        X = load_codes(cache, output, rows, cache.ids[rows])
        made, key, path = cache.provenance, cache.key, cache.path
    inner = inner_splits(y, group_values, settings.inner_folds, seed, names)
    pipeline = build_probe(probe, settings, X.shape, inner, seed).fit(X, y)
    return FittedProbe(pipeline, {
        "probe": probe,
        "output": output.name,
        "layer": output.layer,
        "pooling": output.pooling,
        "channels": output.channels,
        "class_names": names,
        "settings": settings.as_dict(),
        "seed": seed,
        "chosen": chosen_params(pipeline),
        **made.copy(),
        "extract_config": made.get("config", {}),
        "precision": made.runtime.precision,
        "training": {
            "cache": str(Path(path).resolve()),
            "cache_key": key,
            "input": made.input.summary(),
            "n_rows": int(len(y)),
            "class_counts": {n: int((y == c).sum()) for c, n in enumerate(names)},
            "groups": group_name,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "layerprobe": __version__,
    })


def check_compatible(probe: "FittedProbe", source: CodeSource, outputs: list[str], where: str) -> None:
    """Refuse codes whose model, weights, preprocessing or layer differ from the probe's.

    ``source`` is where the codes come from (a cache's, or the model's about to
    make codes), ``outputs`` the ``layer/pooling`` names it holds.
    """
    fix = "extract codes with the probe's model, weights and preprocessing (`layerprobe predict IMAGES` does)"
    for d in probe.source.differences(source, among=("model", "weights_sha256", "preprocessing")):
        if d.keys:
            raise ProbeError(f"the probe was fitted on other {d.label} than {where} ({d.detail('; ', repr)}); {fix}")
        raise ProbeError(f"the probe was fitted on {d.label} {d.mine!r}, but {where} has {d.theirs!r}; {fix}")
    if probe.output not in outputs:
        raise ProbeError(
            f"the probe needs layer {probe.output}, but {where} holds only {', '.join(outputs)}; {fix}"
        )


def apply_probe(probe: FittedProbe, cache_path: str | Path) -> Predictions:
    """Predict every row of a cache whose manifest matches the probe's."""
    with open_cache(cache_path) as cache:
        source = cache.provenance.source
        check_compatible(probe, source, [f"{l}/{p}" for l, p in cache.outputs], str(cache.path))
        for d in source.differences(probe.source, among=("precision",)):
            log.warning("codes were made at %s precision, the probe was fitted on %s codes", d.mine, d.theirs)
        ids = cache.ids
        rows = np.arange(len(ids))
        output = Output(probe.layer, probe.pooling, 0, probe.manifest["channels"])
        codes = load_codes(cache, output, rows, ids, fix="re-extract those images before predicting them")
        groups = resolve_groups(cache, "groups")[1] if cache.groups is not None else None
    return Predictions(ids, probe.class_names, probe.predict_proba(codes), groups)
