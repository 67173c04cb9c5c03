"""Streaming statistics of the user's data at the input of every BatchNorm layer.

An ImageNet-trained network stores ImageNet's per-channel mean and variance in
each BatchNorm layer (``running_mean``, ``running_var``). Accumulating the same
two moments for the user's images (exact sums in float64, over images and
positions) lets the similarity stage compare the data set with ImageNet layer by
layer, without ImageNet.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..model import batchnorm_modules


def _in_order(model: torch.nn.Module, order: Sequence[str] | None):
    """The BatchNorm layers, in ``order`` (their firing order) where it is given, else module order."""
    modules = batchnorm_modules(model)
    if order is None:
        return modules
    rank = {name: i for i, name in enumerate(order)}
    return sorted(modules, key=lambda item: rank.get(item[0], len(rank)))


class BatchNormStats:
    """Forward pre-hooks summing x and x**2 per channel at each BatchNorm input."""

    def __init__(self, model: torch.nn.Module, input_px: int, order: Sequence[str] | None = None):
        self.input_px = input_px
        self.modules = _in_order(model, order)
        self.sums: dict[str, torch.Tensor] = {}
        self.sumsq: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        self._handles = [m.register_forward_pre_hook(lambda mod, inputs, n=name: self._add(n, inputs[0]))
                         for name, m in self.modules]

    def _add(self, name: str, x: torch.Tensor) -> None:
        # Sum each image's positions in float32 (cheap on large early maps), then
        # accumulate across images and batches in float64 so totals stay exact.
        x = x.detach().float()
        spatial = (2, 3) if x.ndim == 4 else ()
        per_image = x.sum(dim=spatial) if spatial else x
        per_image_sq = (x * x).sum(dim=spatial) if spatial else x * x
        if name not in self.sums:
            self.sums[name] = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.sumsq[name] = torch.zeros_like(self.sums[name])
            self.counts.setdefault(name, 0)
        self.sums[name] += per_image.double().sum(dim=0)
        self.sumsq[name] += per_image_sq.double().sum(dim=0)
        self.counts[name] += x.numel() // x.shape[1]
        if x.ndim == 4 and name not in self.strides:
            self.strides[name] = max(1, round(self.input_px / x.shape[2]))

    def load(self, state: dict[str, dict]) -> None:
        """Continue from sums saved earlier (a resumed or incremental run)."""
        for name, entry in state.items():
            self.sums[name] = torch.as_tensor(entry["sum"], dtype=torch.float64)
            self.sumsq[name] = torch.as_tensor(entry["sumsq"], dtype=torch.float64)
            self.counts[name] = int(entry["count"])
            if entry.get("stride"):
                self.strides[name] = int(entry["stride"])

    def state(self) -> dict[str, dict]:
        """Sums, counts and the layer's ImageNet statistics, as numpy, per BatchNorm layer."""
        out = {}
        for depth, (name, module) in enumerate(self.modules):
            if name not in self.sums:
                continue
            out[name] = {
                "sum": self.sums[name].cpu().numpy(),
                "sumsq": self.sumsq[name].cpu().numpy(),
                "count": self.counts[name],
                "depth": depth,
                "stride": self.strides.get(name, 0),
                "running_mean": module.running_mean.detach().double().cpu().numpy(),
                "running_var": module.running_var.detach().double().cpu().numpy(),
            }
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def empty_state(model: torch.nn.Module, order: Sequence[str] | None = None) -> dict[str, dict]:
    """Zero sums for every BatchNorm layer (shapes and ImageNet statistics filled in); ``depth`` is the
    position in ``order`` (the firing order) where it is given."""
    out = {}
    for depth, (name, module) in enumerate(_in_order(model, order)):
        channels = module.running_mean.shape[0]
        out[name] = {
            "sum": np.zeros(channels), "sumsq": np.zeros(channels), "count": 0, "depth": depth, "stride": 0,
            "running_mean": module.running_mean.detach().double().cpu().numpy(),
            "running_var": module.running_var.detach().double().cpu().numpy(),
        }
    return out
