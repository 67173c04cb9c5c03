"""Predict with a saved probe on new images: one forward pass to the probe's layer, then the probe.

This module composes two stages (extract, then probes) and so imports torch;
``pipeline.probes`` itself never does. The probe's manifest says which model,
weights, layer, pooling and preprocessing its codes came from: the same
extraction is rebuilt from it, checked before any image is read, and run into a
temporary cache that holds only that one layer.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from .cache import CodeSource
from .errors import ProbeError
from .inputs import ImageSet
from .inputs.decode import PIL_DECODER
from .inputs.sources import decoder_for_policy, from_paths
from .probes import FittedProbe, Predictions, apply_probe, check_compatible, load_probe

log = logging.getLogger(__name__)


def images_from_paths(paths: list[str | Path]) -> ImageSet:
    """An image set from a CSV table, a folder (class sub-folders or loose images) or image files.

    The input source is the first of :data:`pipeline.inputs.sources.SOURCES` that claims the paths.
    """
    return from_paths(paths)


def extract_config_for(probe: FittedProbe, weights: str | Path | None = None, device: str = "auto",
                       batch_size: int | None = None, workers: int | str | None = None):
    """The ExtractConfig that makes this probe's codes: its model, weights and size, only its layer."""
    from .activations import ExtractConfig
    from .activations.config import precision_option
    from .activations.pooling import NO_POOLING

    saved, model = probe.manifest.get("extract_config", {}), probe.provenance.model
    source = model.weights.source
    if weights is None and source == "file":
        weights = model.weights.path
    opted = precision_option(probe.provenance.precision)  # codes made with --precision bf16 are predicted so too
    pools = (probe.pooling,) if probe.pooling != NO_POOLING else tuple(saved.get("pools") or ("avg",))[:1]
    return ExtractConfig(
        model=model.name, weights=None if weights is None else str(weights),
        random_init=source == "random-init" and weights is None, layers=(probe.layer,), pools=pools,
        img_size=saved.get("img_size"), batch_size=batch_size or saved.get("batch_size", 32), device=device,
        workers=workers, precision=opted if opted == "bf16" else "auto",
    )


def with_probe_decoding(probe: FittedProbe, images: ImageSet) -> ImageSet:
    """``images`` decoded as the probe's codes were (its DICOM window, NIfTI scaling), where the kinds agree.

    A NIfTI decoder is only swapped for one slicing along the same axis, since
    the slices were chosen along it; any other difference is refused later.
    """
    policy = probe.provenance.preprocessing.get("colour") or {}
    recorded = decoder_for_policy(policy)
    same_kind = recorded.kind == images.decoder.kind
    if same_kind and getattr(recorded, "axis", None) == getattr(images.decoder, "axis", None):
        return replace(images, decoder=recorded)
    return images


def check_model(probe: FittedProbe, config, decoder=PIL_DECODER) -> None:
    """Build the model the config names and refuse it if its weights or preprocessing (decoding included) differ."""
    from .activations.extract import code_preprocessing
    from .model import build_model, resolve_layers

    loaded = build_model(config.model, config.weights, config.random_init, config.img_size)
    found = CodeSource(loaded.name, loaded.weights.sha256, code_preprocessing(loaded, decoder))
    names = [spec.name for spec in resolve_layers(loaded, [probe.layer])]
    check_compatible(probe, found, [f"{n}/{probe.pooling}" for n in names],
                     f"the model built for prediction ({config.model}, weights {loaded.weights.source})")


def predict_images(
    probe: FittedProbe | str | Path,
    images: ImageSet,
    weights: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | str | None = None,
    progress: bool = True,
) -> Predictions:
    """Class probabilities of ``probe`` for every image; refuses a model that differs from the probe's."""
    from .activations import extract

    probe = load_probe(probe) if not isinstance(probe, FittedProbe) else probe
    config = extract_config_for(probe, weights, device, batch_size, workers)
    images = with_probe_decoding(probe, images)
    check_model(probe, config, images.decoder)
    with tempfile.TemporaryDirectory(prefix="layerprobe-predict-") as tmp:
        result = extract(images, config, out=Path(tmp) / "codes.h5", progress=progress)
        try:
            return apply_probe(probe, result.path)
        except ProbeError as exc:  # checked above already; a mismatch here means the extraction changed
            raise ProbeError(f"codes extracted for prediction do not fit the probe: {exc}") from None
