"""One extraction per rank of a `torchrun` launch: each rank its own shard and its own GPU.

torchrun starts one process per GPU (``--nproc_per_node``) on one or many nodes
and tells each its place through the environment: ``RANK`` (0 to
``WORLD_SIZE`` - 1 over all nodes) and ``LOCAL_RANK`` (its GPU on this node).
The ranks never talk to each other: rank R simply extracts shard R of
WORLD_SIZE, and `layerprobe merge` joins the shard files afterwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping

from ..errors import PipelineError
from .extract import ExtractConfig

_NEEDED = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Rank:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_rank(environ: Mapping[str, str] | None = None) -> Rank | None:
    """The rank torchrun gave this process, or None when it was not started by torchrun."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in _NEEDED):
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        found = {k: env.get(k) for k in (*_NEEDED, "LOCAL_RANK")}
        raise PipelineError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, found {found}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise PipelineError(f"RANK {rank} is out of range (0 to {world - 1}) for WORLD_SIZE {world}")
    return Rank(rank, world, local)


def launched_in_parallel(environ: Mapping[str, str] | None = None) -> bool:
    """True under a torchrun launch of more than one process (then sharding is the default)."""
    found = torchrun_rank(environ)
    return found is not None and found.world_size > 1


def rank_config(config: ExtractConfig, environ: Mapping[str, str] | None = None,
                cuda_available: bool | None = None) -> ExtractConfig:
    """``config`` for this rank: shard RANK of WORLD_SIZE and, when CUDA is present, GPU LOCAL_RANK.

    ``--device cpu`` stays on the CPU; ``auto`` and ``cuda`` become ``cuda:<LOCAL_RANK>``.
    """
    found = torchrun_rank(environ)
    if found is None:
        raise PipelineError(
            "rank_config (--shard auto) takes its shard from torchrun's RANK and WORLD_SIZE, which are not set; "
            "launch with `torchrun --nproc_per_node N -m pipeline.cli extract ...`, or pass shard=(I, N) (--shard I/N)"
        )
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    device = config.device
    if device in ("auto", "cuda") and cuda_available:
        device = f"cuda:{found.local_rank}"
    return replace(config, shard=(found.rank, found.world_size), device=device)
