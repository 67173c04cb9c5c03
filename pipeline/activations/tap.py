"""One forward pass, many layers: hooks pool each requested output as it goes by.

Spatial maps of a batch live only until their hook has pooled them, so memory
holds no more than one batch's maps. When neither ``pre_logits`` nor ``logits``
is wanted, the pass stops right after the deepest requested layer.
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..model import LOGITS, PRE_LOGITS, LayerSpec, LoadedModel
from ..model.layers import head_outputs
from ..model.layout import check_shape
from .pooling import NO_POOLING, check_poolings, get_pooling


def output_keys(layers: list[LayerSpec], pools: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (layer, pooling) pairs a set of layers yields, in depth order."""
    keys = []
    for layer in layers:
        keys += [(layer.name, p) for p in pools] if layer.layout.spatial else [(layer.name, NO_POOLING)]
    return keys


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the network."""


class LayerTap:
    """Registers pooling hooks on a model; :meth:`run` returns pooled float32 codes."""

    def __init__(self, loaded: LoadedModel, layers: list[LayerSpec], pools: tuple[str, ...], full_pass: bool = False):
        self.loaded = loaded
        self.model = loaded.module
        self.layers = sorted(layers, key=lambda s: s.depth)
        check_poolings(self.layers, pools)
        self.keys = output_keys(self.layers, pools)
        self._pools = {p: get_pooling(p) for p in pools}
        self._outputs: dict[tuple[str, str], torch.Tensor] = {}
        self._special = {s.name: s for s in self.layers if s.name in (PRE_LOGITS, LOGITS)}
        self._full = full_pass or LOGITS in self._special
        stop_early = self.layers and not self._full and not self._special
        self._last = self.layers[-1].name if stop_early else None
        self.forward_passes = 0
        modules = dict(self.model.named_modules())
        self._handles = [
            modules[spec.name].register_forward_hook(lambda m, inputs, output, s=spec: self._capture(s, output))
            for spec in self.layers if spec.name not in self._special
        ]

    def _capture(self, spec: LayerSpec, value) -> None:
        value = value[0] if isinstance(value, (tuple, list)) else value
        if spec.name in {k[0] for k in self._outputs}:
            return  # a module that runs twice: keep its first output
        check_shape(spec.layout, tuple(value.shape), spec.name)
        if spec.layout.spatial:
            for name, fn in self._pools.items():
                self._store(spec, name, fn(value, spec.layout))
        else:
            self._store(spec, NO_POOLING, value.float().flatten(1))
        if spec.name == self._last:
            raise _StopForward

    def _store(self, spec: LayerSpec, pooling: str, code: torch.Tensor) -> None:
        """Keep a code only if its width is the channels `layers` lists: a mismatch never reaches the cache."""
        if code.ndim != 2 or code.shape[1] != spec.channels:
            raise ModelError(
                f"layer {spec.name!r} pooled with {pooling!r} gives codes of shape {tuple(code.shape)}, but the layer "
                f"has {spec.channels} channels ({spec.layout.describe()}); nothing was stored"
            )
        self._outputs[(spec.name, pooling)] = code

    @torch.inference_mode()
    def run(self, images: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
        """Codes of every (layer, pooling) for one batch, float32, on the batch's device."""
        self._outputs = {}
        self.forward_passes += 1
        try:
            pre, logits = head_outputs(self.loaded, images, logits=self._full)
        except _StopForward:
            pre = logits = None
        if PRE_LOGITS in self._special:
            self._capture(self._special[PRE_LOGITS], pre)
        if LOGITS in self._special:
            self._capture(self._special[LOGITS], logits)
        missing = [k for k in self.keys if k not in self._outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output in the forward pass")
        outputs, self._outputs = self._outputs, {}
        return {k: outputs[k] for k in self.keys}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
