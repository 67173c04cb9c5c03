"""Building a pretrained model and the preprocessing that travels with it."""

from __future__ import annotations

import difflib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from ..inputs import COLOUR_POLICY
from .hub import check_download_possible, quiet_hub, timm_weights, torchvision_weights
from .weights import (
    WeightsInfo,
    file_sha256,
    known_source_file,
    load_by_name,
    load_by_position,
    read_state_dict,
    state_dict_sha256,
)

log = logging.getLogger(__name__)

TORCHVISION_PREFIX = "torchvision/"
RANDOM_INIT_SEED = 0
# Named for both callers: the Python parameter, and in brackets the CLI option.
NO_WEIGHTS_FIX = "pass weights=FILE (--weights FILE), or random_init=True (--random-init) for an untrained model"


@dataclass(frozen=True)
class Preprocessing:
    """Resize, crop and normalisation from the model's data config, plus the colour policy."""

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str

    def as_dict(self) -> dict:
        return {**asdict(self), "colour": COLOUR_POLICY}

    def transform(self):
        """The evaluation transform: PIL RGB image -> normalised CHW float tensor."""
        from timm.data import create_transform

        from .to_tensor import without_torch_threads

        return without_torch_threads(create_transform(
            input_size=self.input_size,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            is_training=False,
        ))


@dataclass
class LoadedModel:
    """A model in eval mode with where its weights came from and how to feed it."""

    name: str
    module: torch.nn.Module
    weights: WeightsInfo
    preprocessing: Preprocessing

    @property
    def family(self) -> str:
        return "torchvision" if self.name.startswith(TORCHVISION_PREFIX) else "timm"


def build_model(
    name: str,
    weights: str | Path | None = None,
    random_init: bool = False,
    img_size: int | None = None,
) -> LoadedModel:
    """Create ``name`` (a timm name, or ``torchvision/<name>``) with its weights loaded.

    Weights come, in this order, from ``weights`` (a local file), a package known
    to ship them, a local hub cache, or the model hub (only where it can be
    reached; see :mod:`pipeline.model.hub`). ``random_init`` must be asked for
    explicitly.
    """
    if random_init and weights is not None:
        raise ModelError("random_init and weights (--random-init, --weights) exclude each other; pass one of them")
    source = "file" if weights is not None else ("random-init" if random_init else "pretrained")
    return _build(name, source, weights, img_size)


def build_architecture(name: str, img_size: int | None = None) -> LoadedModel:
    """``name`` with untrained weights, for listing its layers: never reads a weights file or the network."""
    return _build(name, "none", None, img_size)


def _build(name: str, source: str, weights, img_size: int | None) -> LoadedModel:
    if img_size is not None and img_size < 8:
        raise ModelError(f"image size must be at least 8 pixels, got {img_size}")
    if name.startswith(TORCHVISION_PREFIX):
        module, info, data_config = _torchvision(name.removeprefix(TORCHVISION_PREFIX), source, weights, img_size)
    else:
        module, info, data_config = _timm(name, source, weights, img_size)
    if img_size is not None:
        data_config["input_size"] = (3, img_size, img_size)
    module.eval()
    pre = Preprocessing(
        input_size=tuple(int(v) for v in data_config["input_size"]),
        interpolation=str(data_config["interpolation"]),
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
        crop_pct=float(data_config["crop_pct"]),
        crop_mode=str(data_config.get("crop_mode", "center")),
    )
    return LoadedModel(name, module, info, pre)


def _seeded(create):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return create()


def _sized(create, keyword: str, img_size: int | None):
    """``create(keyword=img_size)`` for models that fix their input size when built (ViT, Swin, MaxViT),
    plain ``create()`` for those that take any size (CNNs refuse the keyword)."""
    if img_size is None:
        return create()
    try:
        return create(**{keyword: img_size})
    except TypeError as exc:
        if keyword not in str(exc):
            raise
        return create()


def _timm(name, source, weights, img_size=None):
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models()` lists them"
        raise ModelError(f"unknown model {name!r}{hint} (torchvision models: torchvision/<name>)")
    bundled = known_source_file(name) if source == "pretrained" else None
    if source == "pretrained" and bundled is None:
        module, info = _timm_hub(name, img_size)
    else:
        module = _seeded(lambda: _sized(lambda **k: timm.create_model(name, pretrained=False, **k), "img_size",
                                        img_size))
        info = _load_local(module, name, source, weights, bundled)
    return module, info, timm.data.resolve_model_data_config(module)


def _timm_hub(name, img_size=None):
    """timm's own loader on a file from a local hub cache, or a download where the hub can be reached."""
    import timm

    found = timm_weights(name)
    if found.cached is None:
        check_download_possible(name, found)
        try:
            with quiet_hub():
                module = _sized(lambda **k: timm.create_model(name, pretrained=True, **k), "img_size", img_size)
        except Exception as exc:  # network and hub failures come in many types
            raise ModelError(f"the pretrained weights of {name!r} could not be downloaded "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             f"{NO_WEIGHTS_FIX}") from None
        found = timm_weights(name)  # now in the cache: the same digest as every later, offline run
        if found.cached is None:
            return module, WeightsInfo("hub", state_dict_sha256(module.state_dict()))
    else:
        try:
            overlay = {"file": str(found.cached)}
            module = _sized(lambda **k: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **k),
                            "img_size", img_size)
        except Exception as exc:  # a damaged or foreign cached file
            raise ModelError(f"the cached weights {str(found.cached)!r} of {name!r} cannot be loaded "
                             f"({type(exc).__name__}); delete the file, or pass weights=FILE (--weights FILE)"
                             ) from None
    return module, WeightsInfo("hub", file_sha256(found.cached), str(found.cached))


def _load_local(module, name, source, weights, bundled) -> WeightsInfo:
    if source == "none":
        return WeightsInfo("none", "")
    if source == "random-init":
        log.warning("%s has random weights (random_init=True, --random-init): codes carry no ImageNet knowledge", name)
        return WeightsInfo("random-init", state_dict_sha256(module.state_dict()))
    if source == "file":
        path = Path(weights)
        load_by_name(module, read_state_dict(path), f"weights file {str(path)!r}", ordered=path.suffix != ".safetensors")
        return WeightsInfo("file", file_sha256(path), str(path.resolve()))
    load_by_position(module, read_state_dict(bundled), f"bundled weights {bundled.name!r}")
    return WeightsInfo(f"package:{bundled.parent.parent.name}", file_sha256(bundled), str(bundled))


def _torchvision(name, source, weights, img_size=None):
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(TORCHVISION_PREFIX + c for c in close)}?" if close else ""
        raise ModelError(f"unknown torchvision model {name!r}{hint}")
    data_config = {
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "crop_mode": "center",
    }
    if source == "pretrained":
        found = torchvision_weights(name)
        if found.cached is None:
            check_download_possible(TORCHVISION_PREFIX + name, found)
        try:
            with quiet_hub():  # torch.hub loads a cached file without the network
                module = _sized(lambda **k: torchvision.models.get_model(name, weights="DEFAULT", **k),
                                "image_size", img_size)
        except Exception as exc:
            raise ModelError(
                f"the pretrained weights of torchvision/{name} could not be loaded ({type(exc).__name__}); "
                f"{NO_WEIGHTS_FIX}"
            ) from None
        cached = torchvision_weights(name).cached
        digest = file_sha256(cached) if cached else state_dict_sha256(module.state_dict())
        return module, WeightsInfo("hub", digest, str(cached) if cached else None), data_config
    module = _seeded(lambda: _sized(lambda **k: torchvision.models.get_model(name, weights=None, **k), "image_size",
                                    img_size))
    return module, _load_local(module, name, source, weights, None), data_config
