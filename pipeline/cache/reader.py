"""Reading an activation cache: only finished, undamaged files, only active rows."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, CacheInProgressError
from .bnstats import BNStat, read_state, to_stats
from .format import FORMAT, FORMAT_VERSION, codes_path, metadata_digest
from .lock import is_locked
from .writer import RowTable, partial_path

_DAMAGED = "is damaged ({}); extract it again (`layerprobe verify` checks a whole cache)"


class ActivationCache:
    """A finished cache opened read-only.

    Row accessors (``ids``, ``labels``, ``groups``, ``split``, ``codes``) return
    the rows of the latest input only, sorted by id; rows kept from earlier runs
    for reuse stay hidden. Codes are read on demand, per layer.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_exists(self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, RuntimeError) as exc:
            raise CacheError(f"{self.path} is not a readable HDF5 file ({exc}): it is truncated, damaged or not a "
                             "layerprobe cache") from None
        try:
            self._open_checks()
        except CacheError:
            self.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            self.close()
            raise CacheError(f"{self.path} " + _DAMAGED.format(exc)) from None

    def _open_checks(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            raise CacheError(f"{self.path} is an HDF5 file but not a layerprobe activation cache")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise CacheError(
                f"{self.path} has cache format version {attrs.get('format_version')}; this layerprobe reads "
                f"version {FORMAT_VERSION}: extract again"
            )
        if not bool(attrs.get("complete", False)):
            raise CacheError(f"{self.path} was never finished; run the extract command again to complete it")
        if metadata_digest(self._file) != attrs.get("digest"):
            raise CacheError(f"{self.path} " + _DAMAGED.format("its metadata digest does not match"))
        self.manifest: dict = json.loads(attrs["manifest"])
        self.key: str = str(attrs["key"])
        self.settings_key: str = str(attrs["settings_key"])
        active = self._file["active"][()]
        self._rows = None if active.all() else np.flatnonzero(active)
        self.n_rows: int = int(active.sum())
        self.n_stored: int = len(active)

    def _select(self, values: np.ndarray) -> np.ndarray:
        return values if self._rows is None else values[self._rows]

    # Row metadata -------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return self._select(self._file["ids"].asstr()[()])

    @property
    def labels(self) -> np.ndarray:
        return self._select(self._file["labels"][()])

    @property
    def class_names(self) -> list[str]:
        return json.loads(self._file["labels"].attrs["class_names"])

    @property
    def groups(self) -> np.ndarray | None:
        return self._column("groups")

    @property
    def split(self) -> np.ndarray | None:
        return self._column("split")

    @property
    def dup_cluster(self) -> np.ndarray | None:
        """Near-duplicate cluster of each row, once `layerprobe duplicates` stored them."""
        return self._select(self._file["dup_cluster"][()]) if "dup_cluster" in self._file else None

    def _column(self, name: str) -> np.ndarray | None:
        return self._select(self._file[name].asstr()[()]) if name in self._file else None

    def stored_rows(self) -> RowTable:
        """Every stored row, active or not: what a later extraction may reuse."""
        f = self._file
        column = lambda n: f[n].asstr()[()].tolist() if n in f else None  # noqa: E731
        return RowTable(
            ids=f["ids"].asstr()[()].tolist(),
            labels=f["labels"][()].tolist(),
            class_names=self.class_names,
            sizes=f["files/size"][()].tolist(),
            sha256=[s.decode() for s in f["files/sha256"][()]],
            groups=column("groups"),
            split=column("split"),
            active=f["active"][()].tolist(),
        )

    def bn_stats(self) -> list[BNStat] | None:
        """The data's statistics at every BatchNorm input, next to ImageNet's (``extract --bn-stats``)."""
        if not self.manifest.get("bn_stats"):
            return None
        try:
            return to_stats(read_state(self._file))
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise CacheError(f"{self.path}: reading bn_stats failed, the file " + _DAMAGED.format(exc)) from None

    def bn_state(self) -> dict:
        """The raw BatchNorm sums, for an incremental extraction to continue from."""
        return read_state(self._file) if self.manifest.get("bn_stats") else {}

    # Codes --------------------------------------------------------------------
    @property
    def outputs(self) -> list[tuple[str, str]]:
        """Every stored (layer, pooling), in depth order, poolings in the order asked for."""
        return [tuple(name.rsplit("/", 1)) for name in self.manifest["outputs"]]

    def output_info(self, layer: str, pooling: str | None = None) -> dict:
        ds = self._dataset(layer, pooling)
        return {**{k: _plain(v) for k, v in ds.attrs.items()}, "shape": (self.n_rows, ds.shape[1])}

    def codes(self, layer: str, pooling: str | None = None) -> np.ndarray:
        """The (rows, channels) float32 codes of one layer; ``layer`` may be ``name/pooling``."""
        return self._select(self.stored_codes(layer, pooling))

    def stored_codes(self, layer: str, pooling: str | None = None, rows: slice | None = None) -> np.ndarray:
        """Codes of every stored row, active or not; ``rows`` reads one contiguous slice of them."""
        ds = self._dataset(layer, pooling)
        try:
            return ds[()] if rows is None else ds[rows]
        except (OSError, RuntimeError, ValueError) as exc:
            raise CacheError(f"{self.path}: reading {ds.name} failed, the file " + _DAMAGED.format(exc)) from None

    def _dataset(self, layer: str, pooling: str | None) -> h5py.Dataset:
        if pooling is None and "/" in layer:
            layer, pooling = layer.rsplit("/", 1)
        stored = [f"{l}/{p}" for l, p in self.outputs]
        poolings = [p for l, p in self.outputs if l == layer]
        if not poolings:
            raise CacheError(f"layer {layer!r} is not in {self.path.name}; it holds {', '.join(stored)}")
        if pooling is None:
            if len(poolings) != 1:
                raise CacheError(f"layer {layer!r} is stored with poolings {poolings}; name one as {layer}/<pooling>")
            pooling = poolings[0]
        if pooling not in poolings:
            raise CacheError(f"layer {layer!r} has no pooling {pooling!r} in {self.path.name}; it has {poolings}")
        try:
            return self._file[codes_path(layer, pooling)]
        except (KeyError, OSError, RuntimeError, ValueError):
            raise CacheError(f"{self.path} " + _DAMAGED.format(f"{layer}/{pooling} is missing")) from None

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(value):
    """HDF5 attributes as plain Python values (a layer's grid is stored as a small array)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _check_exists(path: Path) -> None:
    if path.exists():
        return
    if partial_path(path).exists():
        if is_locked(path):
            raise CacheInProgressError(f"extraction into {path} is in progress; wait for it to finish")
        raise CacheInProgressError(
            f"extraction into {path} was interrupted; run the same extract command again to resume it"
        )
    raise CacheError(f"cache {str(path)!r} does not exist; create it with `layerprobe extract`")


def open_cache(path: str | Path) -> ActivationCache:
    """Open a finished activation cache for reading."""
    return ActivationCache(path)
