"""Predict with a saved probe on new images: one forward pass to the probe's layer, then the probe.

This module composes two stages (extract, then probes) and so imports torch;
``pipeline.probes`` itself never does. The probe's manifest says which model,
weights, layer, pooling and preprocessing its codes came from: the same
extraction is rebuilt from it, checked before any image is read, and run into a
temporary cache that holds only that one layer.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .cache import CodeSource
from .errors import InputError, ProbeError
from .inputs import ImageRecord, ImageSet, from_csv, from_folder
from .inputs.records import IMAGE_SUFFIXES, image_files
from .probes import FittedProbe, Predictions, apply_probe, check_compatible, load_probe

log = logging.getLogger(__name__)


def images_from_paths(paths: list[str | Path]) -> ImageSet:
    """An image set from a CSV table, a folder (class sub-folders or loose images) or image files."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no images given; pass image files, a folder or a CSV table")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"{len(missing)} input path(s) do not exist: {', '.join(missing[:5])}")
    if len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() == ".csv":
        return from_csv(paths[0])
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        if any(p.is_dir() for p in root.iterdir()) and not any(_is_image(p) for p in root.iterdir()):
            return from_folder(root)
        problems = []
        files = image_files(root, problems)
        if problems:
            raise InputError(f"{len(problems)} problem(s) in {str(root)!r}: {'; '.join(problems[:10])}")
        return _unlabelled(root.name, root, files)
    bad = [str(p) for p in paths if not _is_image(p)]
    if bad:
        raise InputError(f"not image files: {', '.join(bad[:5])}; pass image files, one folder or one CSV table")
    files = sorted({p.resolve() for p in paths})
    root = Path(os.path.commonpath([p.parent for p in files]))
    return _unlabelled(root.name or "images", root, files)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _unlabelled(name: str, root: Path, files: list[Path]) -> ImageSet:
    if not files:
        raise InputError(f"no images found in {str(root)!r} (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    records = tuple(ImageRecord(p.relative_to(root).as_posix(), p) for p in files)
    return ImageSet(name, "images", root, records)


def extract_config_for(probe: FittedProbe, weights: str | Path | None = None, device: str = "auto",
                       batch_size: int | None = None, workers: int | None = None):
    """The ExtractConfig that makes this probe's codes: its model, weights and size, only its layer."""
    from .activations import ExtractConfig
    from .activations.pooling import NO_POOLING

    m = probe.manifest
    saved = m.get("extract_config", {})
    source = m["model"]["weights"]["source"]
    if weights is None and source == "file":
        weights = m["model"]["weights"]["path"]
    pools = (probe.pooling,) if probe.pooling != NO_POOLING else tuple(saved.get("pools") or ("avg",))[:1]
    return ExtractConfig(
        model=m["model"]["name"], weights=None if weights is None else str(weights),
        random_init=source == "random-init" and weights is None, layers=(probe.layer,), pools=pools,
        img_size=saved.get("img_size"), batch_size=batch_size or saved.get("batch_size", 32), device=device,
        workers=workers,
    )


def check_model(probe: FittedProbe, config) -> None:
    """Build the model the config names and refuse it if its weights or preprocessing differ."""
    from .model import build_model, resolve_layers

    loaded = build_model(config.model, config.weights, config.random_init, config.img_size)
    found = CodeSource(loaded.name, loaded.weights.sha256, loaded.preprocessing.as_dict())
    names = [spec.name for spec in resolve_layers(loaded, [probe.layer])]
    check_compatible(probe, found, [f"{n}/{probe.pooling}" for n in names],
                     f"the model built for prediction ({config.model}, weights {loaded.weights.source})")


def predict_images(
    probe: FittedProbe | str | Path,
    images: ImageSet,
    weights: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Class probabilities of ``probe`` for every image; refuses a model that differs from the probe's."""
    from .activations import extract

    probe = load_probe(probe) if not isinstance(probe, FittedProbe) else probe
    config = extract_config_for(probe, weights, device, batch_size, workers)
    check_model(probe, config)
    with tempfile.TemporaryDirectory(prefix="layerprobe-predict-") as tmp:
        result = extract(images, config, out=Path(tmp) / "codes.h5", progress=progress)
        try:
            return apply_probe(probe, result.path)
        except ProbeError as exc:  # checked above already; a mismatch here means the extraction changed
            raise ProbeError(f"codes extracted for prediction do not fit the probe: {exc}") from None
