"""What probing reads from a cache, checked once before any fitting starts.

Labels, classes, the group column and the codes of every requested layer are
read and validated here; later steps trust them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..cache import ActivationCache, CacheManifest
from ..duplicates import auto_groups, duplicate_clusters
from ..errors import ProbeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One (layer, pooling) of a cache, with its place in the network."""

    layer: str
    pooling: str
    depth: int
    channels: int
    kind: str = ""

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.pooling}"

    def as_dict(self) -> dict:
        return {"output": self.name, "layer": self.layer, "pooling": self.pooling, "depth": self.depth,
                "channels": self.channels, "kind": self.kind}


def cache_outputs(cache: ActivationCache) -> list[Output]:
    """Every output of ``cache``, in depth order; ``depth`` is the position in that order."""
    found = []
    for position, (layer, pooling) in enumerate(cache.outputs):
        info = cache.output_info(layer, pooling)
        found.append(Output(layer, pooling, position, int(info["shape"][1]), str(info.get("kind", ""))))
    return found


def resolve_outputs(cache: ActivationCache, tokens: tuple[str, ...] | list[str] = ()) -> list[Output]:
    """Turn ``--layers`` tokens into outputs: ``layer/pooling``, a layer name (all its poolings),
    or an index into the depth-ordered outputs (``-1`` is the deepest). Empty means all."""
    available = cache_outputs(cache)
    if not tokens:
        return available
    chosen: list[Output] = []
    for token in tokens:
        token = str(token).strip()
        if any(o.name == token for o in available):
            picked = [o for o in available if o.name == token]
        elif any(o.layer == token for o in available):
            picked = [o for o in available if o.layer == token]
        elif token.lstrip("-").isdigit():
            index = int(token)
            if not -len(available) <= index < len(available):
                raise ProbeError(
                    f"layer index {index} is out of range ({-len(available)} to {len(available) - 1}) "
                    f"for {cache.path.name}, which holds {len(available)} outputs"
                )
            picked = [available[index]]
        else:
            raise ProbeError(
                f"{token!r} is not a layer of {cache.path.name}; it holds "
                f"{', '.join(o.name for o in available)} (`layerprobe info` lists them)"
            )
        chosen += [o for o in picked if o not in chosen]
    return sorted(chosen, key=lambda o: o.depth)


# Where row groups come from. ``--groups NAME`` looks NAME up here; "auto" joins
# near-duplicate clusters with any user group column. A source returns one label
# per cache row or None.
GroupSource = Callable[[ActivationCache], "np.ndarray | None"]
GROUP_SOURCES: dict[str, GroupSource] = {
    "none": lambda cache: None,
    "groups": lambda cache: cache.groups,
    "auto": auto_groups,
    "dup_cluster": lambda cache: np.char.add("dup:", duplicate_clusters(cache).astype(str)),
}


def register_group_source(name: str, source: GroupSource) -> None:
    GROUP_SOURCES[name] = source


def default_groups(cache: ActivationCache) -> str:
    """``auto`` once duplicates are stored, else the cache's own group column, else ``none``."""
    if cache.dup_cluster is not None:
        return "auto"
    return "groups" if cache.groups is not None else "none"


def resolve_groups(cache: ActivationCache, name: str | None) -> tuple[str, np.ndarray | None]:
    """``(source name, per-row groups or None)`` for ``--groups``; rows without a group stand alone."""
    name = default_groups(cache) if name is None else name
    if name not in GROUP_SOURCES:
        raise ProbeError(f"unknown groups {name!r} (--groups); available: {', '.join(GROUP_SOURCES)}")
    values = GROUP_SOURCES[name](cache)
    if values is None:
        if name != "none":
            raise ProbeError(
                f"groups {name!r} (--groups {name}): {cache.path.name} has no such column; extract from a CSV "
                "with a 'group' column, or pass groups='none' (--groups none)"
            )
        return name, None
    values = np.asarray(values).astype(str)
    empty = values == ""
    if empty.any():
        log.info("%d row(s) have no group; each forms a group of its own", int(empty.sum()))
        values = np.where(empty, np.char.add("row:", cache.ids.astype(str)), values)
    return name, values


@dataclass
class ProbeData:
    """Labelled rows of a cache and the codes of the requested outputs, all checked."""

    cache_path: Path
    cache_key: str
    manifest: CacheManifest
    rows: np.ndarray  # cache row of each labelled row used
    ids: np.ndarray
    y: np.ndarray
    class_names: list[str]
    group_name: str
    groups: np.ndarray | None
    outputs: list[Output]
    codes: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    duplicates: np.ndarray | None = None  # stored near-duplicate cluster of each row, to measure leakage
    patients: np.ndarray | None = None  # the cache's own group column (patients, volumes), for patient-level results

    @property
    def ids_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()

    @property
    def groups_sha256(self) -> str | None:
        """Digest of the group of every row: a stored fold is only valid for the same groups."""
        return None if self.groups is None else hashlib.sha256("\n".join(self.groups).encode()).hexdigest()

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.y == c).sum()) for c, name in enumerate(self.class_names)}


def labelled_rows(cache: ActivationCache) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(rows, labels, class names)`` of the labelled rows; refuses caches that cannot be probed."""
    labels, names = cache.labels, list(cache.class_names)
    rows = np.flatnonzero(labels >= 0)
    if rows.size == 0:
        raise ProbeError(
            f"{cache.path.name} has no labels ({len(labels)} unlabelled rows); probing needs labelled "
            "images: extract from one sub-folder per class or a CSV with a 'label' column"
        )
    if rows.size < len(labels):
        log.warning("leaving out %d unlabelled row(s) of %s", len(labels) - rows.size, cache.path.name)
    present = np.unique(labels[rows])
    if present.size < 2:
        only = names[int(present[0])] if names else str(present[0])
        raise ProbeError(
            f"all {rows.size} labelled images of {cache.path.name} are of one class ({only!r}); "
            "probing needs at least two classes"
        )
    return rows, labels[rows].astype(np.int64), names


def load_codes(cache: ActivationCache, output: Output, rows: np.ndarray, ids: np.ndarray,
               fix: str = "re-extract those images or leave the layer out of layers (--layers)") -> np.ndarray:
    """float64 codes of ``output`` for ``rows``; refuses NaN and infinite values."""
    codes = cache.codes(output.layer, output.pooling)[rows]
    bad = ~np.isfinite(codes).all(axis=1)
    if bad.any():
        first = ", ".join(ids[bad][:3])
        raise ProbeError(
            f"layer {output.name} has {int(bad.sum())} row(s) with NaN or infinite codes (first: {first}); {fix}"
        )
    return codes.astype(np.float64)


_RECENT: dict = {}  # the layer this process read last: consecutive tasks on a worker mostly share it


@dataclass(frozen=True, eq=False)
class LayerSource:
    """Where a fitting task finds its layer: the cache file, not an array shipped with the task.

    A cluster then moves a path and row numbers, and each worker reads the one
    layer it needs, exactly as :func:`load_codes` reads it (the driver has
    already checked the values).
    """

    cache_path: str
    cache_key: str
    output: str
    rows: np.ndarray = field(repr=False)

    def load(self) -> np.ndarray:
        token = (self.cache_path, self.cache_key, self.output,
                 hashlib.sha256(np.ascontiguousarray(self.rows).tobytes()).hexdigest())
        codes = _RECENT.get(token)
        if codes is None:
            codes = self._read()
            _RECENT.clear()
            _RECENT[token] = codes
        return codes

    def _read(self) -> np.ndarray:
        from ..cache import open_cache

        with open_cache(self.cache_path) as cache:
            if cache.key != self.cache_key:
                raise ProbeError(f"{self.cache_path} changed while probing (key {cache.key[:12]}, expected "
                                 f"{self.cache_key[:12]}); run the probe command again")
            layer, pooling = self.output.rsplit("/", 1)
            return cache.codes(layer, pooling)[self.rows].astype(np.float64)


def load_probe_data(cache: ActivationCache, layers=(), groups: str | None = None,
                    keep_codes: bool = True) -> ProbeData:
    """Read and check everything a probing run needs from ``cache``.

    With ``keep_codes=False`` every layer is still read and checked, one at a
    time, but not kept: the fitting tasks read their layer from the file.
    """
    rows, y, names = labelled_rows(cache)
    outputs = resolve_outputs(cache, layers)
    group_name, group_values = resolve_groups(cache, groups)
    ids = cache.ids[rows]
    data = ProbeData(cache.path, cache.key, cache.provenance, rows, ids, y, names, group_name,
                     None if group_values is None else group_values[rows], outputs)
    if cache.dup_cluster is not None:
        data.duplicates = cache.dup_cluster[rows]
    if cache.groups is not None:
        data.patients = resolve_groups(cache, "groups")[1][rows]
    for output in outputs:
        codes = load_codes(cache, output, rows, ids)
        if keep_codes:
            data.codes[output.name] = codes
    return data
