"""Per-BatchNorm-layer statistics of a data set, as stored in a cache (no torch here).

Layout: ``/bn_stats/<module>/{sum, sumsq, running_mean, running_var}`` (float64,
one value per channel), with attrs ``count`` (values summed per channel: images
x positions), ``depth`` (module order) and ``stride`` (input pixels per position).
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

GROUP = "bn_stats"


@dataclass(frozen=True)
class BNStat:
    """The data's and ImageNet's per-channel statistics at one BatchNorm layer's input."""

    module: str
    depth: int
    channels: int
    count: int
    stride: int | None
    mean: np.ndarray
    var: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray


def write_state(handle: h5py.File, state: dict[str, dict]) -> None:
    """Create or overwrite the sums in place (fixed sizes, so no file growth after the first write)."""
    group = handle.require_group(GROUP)
    for name, entry in state.items():
        sub = group.require_group(name)
        for key in ("sum", "sumsq", "running_mean", "running_var"):
            values = np.asarray(entry[key], dtype=np.float64)
            if key in sub:
                sub[key][...] = values
            else:
                sub.create_dataset(key, data=values)
        sub.attrs.update(count=int(entry["count"]), depth=int(entry["depth"]), stride=int(entry.get("stride") or 0))


def read_state(handle: h5py.File) -> dict[str, dict]:
    if GROUP not in handle:
        return {}
    state = {}
    for name, sub in handle[GROUP].items():
        state[name] = {key: sub[key][()] for key in ("sum", "sumsq", "running_mean", "running_var")}
        state[name].update(count=int(sub.attrs["count"]), depth=int(sub.attrs["depth"]),
                           stride=int(sub.attrs.get("stride", 0)))
    return state


def to_stats(state: dict[str, dict]) -> list[BNStat]:
    stats = []
    for name, e in state.items():
        count = max(1, e["count"])
        mean = e["sum"] / count
        var = np.maximum(e["sumsq"] / count - mean**2, 0.0)
        stats.append(BNStat(name, e["depth"], len(mean), e["count"], e["stride"] or None, mean, var,
                            np.asarray(e["running_mean"]), np.asarray(e["running_var"])))
    return sorted(stats, key=lambda s: s.depth)
