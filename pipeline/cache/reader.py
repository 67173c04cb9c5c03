"""Reading an activation cache: only committed rows, only finished files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, CacheInProgressError
from .format import FORMAT, FORMAT_VERSION, codes_path
from .lock import is_locked
from .writer import partial_path


class ActivationCache:
    """A finished cache opened read-only. Codes are read on demand, per layer."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_exists(self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise CacheError(f"{self.path} is not a readable HDF5 file ({exc}); it is not a layerprobe cache") from None
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            self.close()
            raise CacheError(f"{self.path} is an HDF5 file but not a layerprobe activation cache")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            version = attrs.get("format_version")
            self.close()
            raise CacheError(
                f"{self.path} has cache format version {version}; this layerprobe reads version "
                f"{FORMAT_VERSION}: extract again"
            )
        if not bool(attrs.get("complete", False)):
            self.close()
            raise CacheError(f"{self.path} was never finished; run the extract command again to complete it")
        self.manifest: dict = json.loads(attrs["manifest"])
        self.key: str = str(attrs["key"])
        self.n_rows: int = int(attrs["rows_committed"])

    # Row metadata -------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return self._file["ids"].asstr()[: self.n_rows]

    @property
    def labels(self) -> np.ndarray:
        return self._file["labels"][: self.n_rows]

    @property
    def class_names(self) -> list[str]:
        return json.loads(self._file["labels"].attrs["class_names"])

    @property
    def groups(self) -> np.ndarray | None:
        return self._column("groups")

    @property
    def split(self) -> np.ndarray | None:
        return self._column("split")

    def _column(self, name: str) -> np.ndarray | None:
        return self._file[name].asstr()[: self.n_rows] if name in self._file else None

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
        return self._dataset(layer, pooling)[: self.n_rows]

    def _dataset(self, layer: str, pooling: str | None) -> h5py.Dataset:
        if pooling is None and "/" in layer:
            layer, pooling = layer.rsplit("/", 1)
        group = self._file["codes"].get(layer)
        if group is None:
            valid = ", ".join(f"{l}/{p}" for l, p in self.outputs)
            raise CacheError(f"layer {layer!r} is not in {self.path.name}; it holds {valid}")
        if pooling is None:
            if len(group) != 1:
                raise CacheError(f"layer {layer!r} is stored with poolings {list(group)}; name one as {layer}/<pooling>")
            pooling = next(iter(group))
        if pooling not in group:
            raise CacheError(f"layer {layer!r} has no pooling {pooling!r} in {self.path.name}; it has {list(group)}")
        return self._file[codes_path(layer, pooling)]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(value):
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
