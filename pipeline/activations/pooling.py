"""Pooling a layer's output to one vector per image: a registry others can add to.

Every pooling receives the output and its :class:`~pipeline.model.Layout` (read
from the model, never from the tensor's shape) and returns float32 ``(N, C)``.
Maps are pooled over their spatial axes wherever the channels sit (``NCHW`` or
``NHWC``); token sequences over their patch tokens only, leaving out the class,
distillation and register tokens. ``token`` takes the class token and applies
only to outputs that have one. Vector outputs (``pre_logits``, ``logits``) are
stored as they are, under the pooling name ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import PipelineError
from ..model.layout import NCHW, NHWC, NLC, Layout

NO_POOLING = "none"
GEM_P = 3.0
GEM_EPS = 1e-6

PoolFn = Callable[[torch.Tensor, Layout], torch.Tensor]


def spatial(layout: Layout) -> bool:
    """Maps and token sequences: everything with positions to pool over."""
    return layout.format in (NCHW, NHWC, NLC)


def has_class_token(layout: Layout) -> bool:
    return layout.format == NLC and layout.class_token and layout.prefix_tokens >= 1


@dataclass(frozen=True)
class Pooling:
    """A pooling: the function, which layouts it accepts, and what it pools over (for the manifest)."""

    name: str
    fn: PoolFn
    accepts: Callable[[Layout], bool] = spatial
    over: str = "positions"

    def __call__(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        if not self.accepts(layout):
            raise PipelineError(f"pooling {self.name!r} does not apply to a {layout.describe()} output")
        return self.fn(x, layout)

    def pooled_over(self, layout: Layout) -> str:
        """In words, what this pooling reduced for an output of ``layout``."""
        if self.over != "positions":
            return self.over
        if layout.format == NLC:
            return f"{layout.grid[0]}x{layout.grid[1]} patch tokens (the {layout.prefix_tokens} prefix tokens left out)"
        return f"H and W of the {layout.format} map"


def positions(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The tensor to reduce and the axes of its positions: H, W of maps, the patch tokens of sequences."""
    if layout.format == NCHW:
        return x, (2, 3)
    if layout.format == NHWC:
        return x, (1, 2)
    if layout.format == NLC:
        return x[:, layout.prefix_tokens:], (1,)
    raise PipelineError(f"a {layout.describe()} output has no positions to pool over")


def avg_pool(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    values, dims = positions(x, layout)
    return values.float().mean(dim=dims)


def max_pool(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    values, dims = positions(x, layout)
    return values.float().amax(dim=dims)


def avgmax_pool(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Mean of average and max pooling (timm's ``avgmax``)."""
    return 0.5 * (avg_pool(x, layout) + max_pool(x, layout))


def gem_pool(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Generalised mean, p=3 (Radenović et al. 2018); inputs clamped at a small epsilon."""
    values, dims = positions(x, layout)
    return values.float().clamp(min=GEM_EPS).pow(GEM_P).mean(dim=dims).pow(1.0 / GEM_P)


def class_token(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The class token (the first prefix token: timm and torchvision put it before any other)."""
    return x[:, 0].float()


POOLINGS: dict[str, Pooling] = {
    "avg": Pooling("avg", avg_pool),
    "max": Pooling("max", max_pool),
    "avgmax": Pooling("avgmax", avgmax_pool),
    "gem": Pooling("gem", gem_pool),
    "token": Pooling("token", class_token, has_class_token, "class token"),
}


def register_pooling(name: str, fn: PoolFn, accepts: Callable[[Layout], bool] = spatial,
                     over: str = "positions") -> None:
    """Add a pooling; ``fn(x, layout)`` maps an output of an accepted layout to float32 ``(N, C)``."""
    if not name or name == NO_POOLING or "/" in name:
        raise PipelineError(f"invalid pooling name {name!r}")
    POOLINGS[name] = Pooling(name, fn, accepts, over)


def get_pooling(name: str) -> Pooling:
    try:
        return POOLINGS[name]
    except KeyError:
        raise PipelineError(f"unknown pooling {name!r}; available: {', '.join(sorted(POOLINGS))}") from None


def accepted_poolings(layout: Layout) -> list[str]:
    """The poolings an output of ``layout`` accepts; ``none`` for vectors."""
    if not layout.spatial:
        return [NO_POOLING]
    return [name for name, pooling in POOLINGS.items() if pooling.accepts(layout)]


def check_poolings(layers, pools: tuple[str, ...]) -> None:
    """Every requested pooling must apply to every requested map or token output; one line names the first misfit."""
    for spec in layers:
        if not spec.layout.spatial:
            continue
        for name in pools:
            if not get_pooling(name).accepts(spec.layout):
                raise PipelineError(
                    f"pooling {name!r} does not apply to layer {spec.name!r} ({spec.layout.describe()}); it accepts "
                    f"{', '.join(accepted_poolings(spec.layout))} (`layerprobe layers MODEL` lists each layer's "
                    "poolings)"
                )
