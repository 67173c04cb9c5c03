"""Pooling a layer's output to one vector per image: a registry others can add to.

Every pooling takes a feature map ``(N, C, H, W)`` or a token sequence
``(N, L, C)`` and returns float32 ``(N, C)``. Vector outputs (``pre_logits``,
``logits``) are stored as they are, under the pooling name ``none``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import PipelineError

Pooling = Callable[[torch.Tensor], torch.Tensor]
NO_POOLING = "none"
GEM_P = 3.0
GEM_EPS = 1e-6


def _axes(x: torch.Tensor) -> tuple[int, ...]:
    if x.ndim == 4:
        return (2, 3)
    if x.ndim == 3:
        return (1,)
    raise PipelineError(f"pooling needs a (N, C, H, W) map or (N, L, C) tokens, got shape {tuple(x.shape)}")


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean(dim=_axes(x))


def max_pool(x: torch.Tensor) -> torch.Tensor:
    return x.float().amax(dim=_axes(x))


def avgmax_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean of average and max pooling (timm's ``avgmax``)."""
    return 0.5 * (avg_pool(x) + max_pool(x))


def gem_pool(x: torch.Tensor) -> torch.Tensor:
    """Generalised mean, p=3 (Radenović et al. 2018); inputs clamped at a small epsilon."""
    return x.float().clamp(min=GEM_EPS).pow(GEM_P).mean(dim=_axes(x)).pow(1.0 / GEM_P)


POOLINGS: dict[str, Pooling] = {
    "avg": avg_pool,
    "max": max_pool,
    "avgmax": avgmax_pool,
    "gem": gem_pool,
}


def register_pooling(name: str, fn: Pooling) -> None:
    """Add a pooling; ``fn`` maps a map or token tensor to float32 ``(N, C)``."""
    if not name or name == NO_POOLING or "/" in name:
        raise PipelineError(f"invalid pooling name {name!r}")
    POOLINGS[name] = fn


def get_pooling(name: str) -> Pooling:
    try:
        return POOLINGS[name]
    except KeyError:
        raise PipelineError(f"unknown pooling {name!r}; available: {', '.join(sorted(POOLINGS))}") from None
