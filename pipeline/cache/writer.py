"""Writing an activation cache: streamed, committed row by row, renamed into place.

The cache is built under ``<path>.partial``. Each batch's rows are written and
flushed, then the commit marker moves past them and is flushed too. When every
row is committed the file is marked complete, fsynced and atomically renamed to
its final name, so a file under the final name is always whole.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError
from .format import FORMAT, FORMAT_VERSION, PARTIAL_SUFFIX, chunk_rows, codes_path

log = logging.getLogger(__name__)
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class RowTable:
    """Per-row metadata of a cache, in row (sorted id) order."""

    ids: list[str]
    labels: list[int]
    class_names: list[str]
    sizes: list[int]
    sha256: list[str]
    groups: list[str] | None = None
    split: list[str] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """One (layer, pooling) dataset and the facts about its layer."""

    layer: str
    pooling: str
    channels: int
    attrs: dict


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL_SUFFIX)


class CacheWriter:
    """Streams code rows into ``<final>.partial``; resumes a partial file of the same key."""

    def __init__(self, final: Path, key: str, manifest: dict, rows: RowTable, outputs: list[OutputSpec]):
        self.final = Path(final)
        self.partial = partial_path(self.final)
        self.key = key
        self.outputs = outputs
        self.n_rows = len(rows.ids)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.file = self._resume() if self.partial.exists() else None
        if self.file is None:
            self.file = self._create(manifest, rows)

    @property
    def rows_committed(self) -> int:
        return int(self.file.attrs["rows_committed"])

    def _resume(self) -> h5py.File | None:
        try:
            handle = h5py.File(self.partial, "r+")
        except OSError as exc:
            log.warning("discarding unreadable partial cache %s (%s)", self.partial, exc)
            self.partial.unlink()
            return None
        expected = {codes_path(o.layer, o.pooling) for o in self.outputs}
        ok = handle.attrs.get("key") == self.key and all(p in handle for p in expected)
        if not ok:
            handle.close()
            log.warning("discarding partial cache %s made with other settings", self.partial)
            self.partial.unlink()
            return None
        log.info("resuming %s at row %d of %d", self.partial, int(handle.attrs["rows_committed"]), self.n_rows)
        return handle

    def _create(self, manifest: dict, rows: RowTable) -> h5py.File:
        handle = h5py.File(self.partial, "w", track_order=True)
        n = self.n_rows
        handle.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            key=self.key,
            manifest=json.dumps(manifest),
            rows_committed=0,
            complete=False,
        )
        handle.create_dataset("ids", data=np.array(rows.ids, dtype=object), dtype=_STR)
        labels = handle.create_dataset("labels", data=np.asarray(rows.labels, dtype=np.int32))
        labels.attrs["class_names"] = json.dumps(list(rows.class_names))
        for name in ("groups", "split"):
            values = getattr(rows, name)
            if values is not None:
                handle.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
        handle.create_dataset("files/size", data=np.asarray(rows.sizes, dtype=np.int64))
        handle.create_dataset("files/sha256", data=np.array(rows.sha256, dtype="S64"))
        for out in self.outputs:
            ds = handle.create_dataset(
                codes_path(out.layer, out.pooling),
                shape=(n, out.channels),
                dtype=np.float32,
                chunks=(chunk_rows(out.channels, n), out.channels),
                fletcher32=True,
            )
            ds.attrs.update({k: ("" if v is None else v) for k, v in out.attrs.items()})
        handle.flush()
        return handle

    def write(self, start: int, codes: dict[tuple[str, str], np.ndarray]) -> int:
        """Write one batch's rows from ``start``, flush, then commit them. Returns the new end."""
        end = None
        for out in self.outputs:
            block = codes[(out.layer, out.pooling)]
            end = start + len(block)
            if end > self.n_rows:
                raise CacheError(f"rows {start}..{end} run past the cache's {self.n_rows} rows")
            self.file[codes_path(out.layer, out.pooling)][start:end] = block
        self.file.flush()
        self.file.attrs["rows_committed"] = end
        self.file.flush()
        return end

    def finish(self, manifest: dict) -> Path:
        """Mark complete, fsync and rename into place; returns the final path."""
        if self.rows_committed != self.n_rows:
            raise CacheError(f"only {self.rows_committed} of {self.n_rows} rows were written")
        self.file.attrs["manifest"] = json.dumps(manifest)
        self.file.attrs["complete"] = True
        self.file.flush()
        self.file.close()
        with open(self.partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.final)
        dir_fd = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.final

    def close(self) -> None:
        """Close without finishing: committed rows stay for the next run to resume."""
        if self.file is not None and self.file.id.valid:
            self.file.close()
