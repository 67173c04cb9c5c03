"""Writing an activation cache: streamed, committed batch by batch, renamed into place.

The cache is built under ``<path>.partial``. Rows reused from an earlier cache
are copied first; then each computed batch is written and flushed, and only
then does the commit marker move past it (flushed too). When the plan is done
a copy of the file (``<path>.sealing``) gets its metadata digest, is marked
complete, fsynced and atomically renamed to its final name, so a file under the
final name is always whole. The partial file itself is never modified by the
seal: HDF5 cannot always reopen a file whose metadata write failed, so a full
disk while sealing would otherwise lose every committed row.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..atomic import publish
from ..errors import CacheError, CacheWriteError
from .bnstats import read_state, write_state
from .format import FORMAT, FORMAT_VERSION, PARTIAL_SUFFIX, chunk_rows, codes_path, metadata_digest

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
    active: list[bool] | None = None  # None: every row is active

    def active_mask(self) -> np.ndarray:
        return np.ones(len(self.ids), bool) if self.active is None else np.asarray(self.active, bool)


def input_fingerprint(rows: RowTable) -> str:
    """A digest of the ids, file contents, labels, groups, splits and activity of the rows."""
    digest = hashlib.sha256()
    columns = (rows.ids, rows.sha256, rows.labels, rows.groups or [], rows.split or [], rows.class_names,
               rows.active_mask().tolist())
    for column in columns:
        digest.update(repr(list(column)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class OutputSpec:
    """One (layer, pooling) dataset and the facts about its layer."""

    layer: str
    pooling: str
    channels: int
    attrs: dict


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL_SUFFIX)


SEALING_SUFFIX = ".sealing"


def sealing_path(final: Path) -> Path:
    """Where the finished copy of the partial file is sealed before it is renamed into place."""
    return final.with_name(final.name + SEALING_SUFFIX)


_FULL = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file size limit was reached",
         errno.EDQUOT: "the disk quota is exhausted"}


def write_failure(path: Path, exc: Exception) -> CacheWriteError:
    """A clear error for a failed write; h5py reports a full disk as RuntimeError with the errno in its text."""
    text = str(exc)
    found = re.search(r"errno = (\d+)", text)
    code = getattr(exc, "errno", None) or (int(found.group(1)) if found else None)
    cause = _FULL.get(code, f"the write failed ({text})")
    return CacheWriteError(
        f"writing {path} stopped: {cause}. Rows committed so far are kept; "
        "free space and run the same command again to resume"
    )


def _readable_key(handle: h5py.File) -> bool:
    try:
        return isinstance(handle.attrs["key"], str)
    except (KeyError, OSError, RuntimeError):
        return False


class CacheWriter:
    """Streams code rows into ``<final>.partial``; resumes a partial file of the same key."""

    def __init__(self, final: Path, key: str, settings_key: str, manifest: dict, rows: RowTable,
                 outputs: list[OutputSpec], bn_state: dict | None = None):
        self.final = Path(final)
        self.partial = partial_path(self.final)
        self.sealing = sealing_path(self.final)
        self.key = key
        self.outputs = outputs
        self.n_rows = len(rows.ids)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.file = self._resume() if self.partial.exists() else None
        if self.file is None:
            try:
                self.file = self._create(settings_key, manifest, rows)
                if bn_state is not None:
                    write_state(self.file, bn_state)
                    self.file.flush()
            except (OSError, RuntimeError, ValueError) as exc:  # h5py raises all three for failed writes
                self.partial.unlink(missing_ok=True)  # nothing was committed yet
                raise write_failure(self.partial, exc) from None

    @property
    def rows_committed(self) -> int:
        return int(self.file.attrs["rows_committed"])

    def bn_state(self) -> dict:
        """BatchNorm sums committed so far (empty when the cache collects none)."""
        return read_state(self.file)

    @property
    def copied(self) -> bool:
        return bool(self.file.attrs["copied"])

    def _resume(self) -> h5py.File | None:
        try:
            handle = h5py.File(self.partial, "r+")
            same = handle.attrs.get("key") == self.key and "rows_committed" in handle.attrs
        except (OSError, RuntimeError, KeyError) as exc:
            log.warning("removing unreadable leftover %s (%s)", self.partial, exc)
            self.partial.unlink()
            return None
        if not same:
            why = "made with other settings or inputs" if _readable_key(handle) else "that is damaged (no readable key)"
            handle.close()
            log.warning("removing leftover %s %s", self.partial, why)
            self.partial.unlink()
            return None
        log.info("resuming %s: %d rows already committed", self.partial, int(handle.attrs["rows_committed"]))
        handle.attrs["complete"] = False  # a run killed while sealing is sealed again at the end
        return handle

    def _create(self, settings_key: str, manifest: dict, rows: RowTable) -> h5py.File:
        handle = h5py.File(self.partial, "w", track_order=True)
        n = self.n_rows
        handle.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            settings_key=settings_key,
            key=self.key,
            manifest=json.dumps(manifest),
            rows_committed=0,
            copied=False,
            complete=False,
        )
        handle.create_dataset("ids", data=np.array(rows.ids, dtype=object), dtype=_STR)
        handle.create_dataset("active", data=rows.active_mask())
        labels = handle.create_dataset("labels", data=np.asarray(rows.labels, dtype=np.int32))
        labels.attrs["class_names"] = json.dumps(list(rows.class_names))
        for name in ("groups", "split"):
            values = getattr(rows, name)
            if values is not None:
                handle.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
        handle.create_dataset("files/size", data=np.asarray(rows.sizes, dtype=np.int64))
        handle.create_dataset("files/sha256", data=np.array(rows.sha256, dtype="S64"))
        for out in self.outputs:
            # Allocate every chunk now: a full disk then fails here, before any row is
            # committed, never half-way through (HDF5 cannot reopen a file whose last
            # extension failed, which would lose the committed rows).
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            ds = handle.create_dataset(
                codes_path(out.layer, out.pooling),
                shape=(n, out.channels),
                dtype=np.float32,
                chunks=(chunk_rows(out.channels, n), out.channels),
                fletcher32=True,
                dcpl=dcpl,
            )
            ds.attrs.update({k: ("" if v is None else v) for k, v in out.attrs.items()})
        handle.flush()
        return handle

    def copy_rows(self, read_codes, outputs: list[tuple[str, str]], new_rows: np.ndarray, old_rows: np.ndarray,
                  block: int = 4096) -> None:
        """Copy reused rows (``old_rows`` of an earlier cache -> ``new_rows`` here), then mark copied."""
        try:
            for layer, pooling in outputs:
                old = read_codes(layer, pooling)
                target = self.file[codes_path(layer, pooling)]
                for start in range(0, len(new_rows), block):
                    target[new_rows[start : start + block]] = old[old_rows[start : start + block]]
            self.file.flush()
            self.file.attrs["copied"] = True
            self.file.flush()
        except (OSError, RuntimeError) as exc:
            raise write_failure(self.partial, exc) from None

    def write(self, position: int, rows: np.ndarray, codes: dict[tuple[str, str], np.ndarray],
              bn_state: dict | None = None) -> int:
        """Write one batch at the (increasing) row indices ``rows``, flush, then commit it.

        ``position`` is how many planned rows were committed before this batch;
        returns the new count.
        """
        if position != self.rows_committed:
            raise CacheError(f"batch starts at planned row {position}, but {self.rows_committed} are committed")
        try:
            self._write_data(rows, codes, bn_state)
            self._commit(position + len(rows))
        except (OSError, RuntimeError) as exc:
            raise write_failure(self.partial, exc) from None
        return position + len(rows)

    def _write_data(self, rows: np.ndarray, codes: dict[tuple[str, str], np.ndarray], bn_state: dict | None) -> None:
        for (layer, pooling), block in codes.items():
            target = self.file[codes_path(layer, pooling)]
            if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
                target[int(rows[0]) : int(rows[-1]) + 1] = block  # contiguous: a plain slice
            else:
                target[rows] = block
        if bn_state is not None:
            write_state(self.file, bn_state)  # the sums so far travel with the rows they cover
        self.file.flush()

    def _commit(self, committed: int) -> None:
        """Move the commit marker; called only after the rows' data is flushed."""
        self.file.attrs["rows_committed"] = committed
        self.file.flush()

    def finish(self, manifest: dict, planned: int) -> Path:
        """Seal a copy (digest, complete), fsync and rename it into place; returns the final path.

        If sealing fails (full disk, file size limit) the partial file is left as it
        was, with every row committed, and the next run seals it again.
        """
        if self.rows_committed != planned or not self.copied:
            raise CacheError(f"only {self.rows_committed} of {planned} planned rows were written")
        try:
            self._seal(manifest, planned)
            self._publish()
        except (OSError, RuntimeError) as exc:
            self.sealing.unlink(missing_ok=True)
            raise write_failure(self.partial, exc) from None
        return self.final

    def _seal(self, manifest: dict, planned: int) -> None:
        self.file.flush()
        self.file.close()
        shutil.copyfile(self.partial, self.sealing)
        with h5py.File(self.sealing, "r+") as handle:
            handle.attrs["manifest"] = json.dumps(manifest)
            handle.attrs["rows_planned"] = planned
            handle.attrs["digest"] = metadata_digest(handle)
            handle.attrs["complete"] = True

    def _publish(self) -> None:
        publish(self.sealing, self.final)
        self.partial.unlink()

    def close(self) -> None:
        """Close without finishing: committed rows stay for the next run to resume."""
        if self.file is not None and self.file.id.valid:
            try:
                self.file.close()
            except (OSError, RuntimeError):
                pass
