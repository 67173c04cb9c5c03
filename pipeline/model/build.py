"""Building a pretrained model and the preprocessing that travels with it."""

from __future__ import annotations

import difflib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from ..inputs import COLOUR_POLICY
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

        return create_transform(
            input_size=self.input_size,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            is_training=False,
        )


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
    to ship them, or the model hub. ``random_init`` must be asked for explicitly.
    """
    if random_init and weights is not None:
        raise ModelError("--random-init and --weights exclude each other; pass one of them")
    if img_size is not None and img_size < 8:
        raise ModelError(f"image size must be at least 8 pixels, got {img_size}")
    if name.startswith(TORCHVISION_PREFIX):
        module, info, data_config = _torchvision(name.removeprefix(TORCHVISION_PREFIX), weights, random_init)
    else:
        module, info, data_config = _timm(name, weights, random_init)
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


def _timm(name, weights, random_init):
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models()` lists them"
        raise ModelError(f"unknown model {name!r}{hint} (torchvision models: torchvision/<name>)")
    bundled = None if (weights or random_init) else known_source_file(name)
    if weights is None and bundled is None and not random_init:
        try:
            module = timm.create_model(name, pretrained=True)
        except Exception as exc:  # network and hub failures come in many types
            raise ModelError(
                f"no pretrained weights for {name!r} could be loaded from the model hub ({exc}); "
                "pass --weights FILE, or --random-init for an untrained model"
            ) from None
        info = WeightsInfo("hub", state_dict_sha256(module.state_dict()))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            module = timm.create_model(name, pretrained=False)
        info = _load_local(module, name, weights, bundled, random_init)
    return module, info, timm.data.resolve_model_data_config(module)


def _load_local(module, name, weights, bundled, random_init) -> WeightsInfo:
    if random_init:
        log.warning("%s has random weights (--random-init): codes carry no ImageNet knowledge", name)
        return WeightsInfo("random-init", state_dict_sha256(module.state_dict()))
    if weights is not None:
        path = Path(weights)
        load_by_name(module, read_state_dict(path), f"weights file {str(path)!r}")
        return WeightsInfo("file", file_sha256(path), str(path.resolve()))
    load_by_position(module, read_state_dict(bundled), f"bundled weights {bundled.name!r}")
    return WeightsInfo(f"package:{bundled.parent.parent.name}", file_sha256(bundled), str(bundled))


def _torchvision(name, weights, random_init):
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
    if weights is None and not random_init:
        try:
            module = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as exc:
            raise ModelError(
                f"no pretrained weights for torchvision/{name} could be downloaded ({exc}); "
                "pass --weights FILE, or --random-init for an untrained model"
            ) from None
        return module, WeightsInfo("hub", state_dict_sha256(module.state_dict())), data_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        module = torchvision.models.get_model(name, weights=None)
    return module, _load_local(module, name, weights, None, random_init), data_config
