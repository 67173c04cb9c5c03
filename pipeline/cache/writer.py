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
from . import integrity
from .bnstats import GROUP as BN_GROUP
from .bnstats import read_state, write_state
from .format import FORMAT, FORMAT_VERSION, PARTIAL_SUFFIX, chunk_rows, codes_path, metadata_digest
from .manifest import CacheManifest, manifest_json

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


def row_arrays(rows: RowTable) -> dict[str, np.ndarray]:
    """The row columns exactly as they are stored (and hashed)."""
    arrays = {"ids": np.array(rows.ids, dtype=object), "active": rows.active_mask(),
              "labels": np.asarray(rows.labels, dtype=np.int32)}
    for name in ("groups", "split"):
        if getattr(rows, name) is not None:
            arrays[name] = np.array(getattr(rows, name), dtype=object)
    arrays["files/size"] = np.asarray(rows.sizes, dtype=np.int64)
    arrays["files/sha256"] = np.array(rows.sha256, dtype="S64")
    return arrays


def column_entry(values: np.ndarray) -> dict:
    """The ``arrays`` manifest entry of a row column written whole."""
    return integrity.entry(integrity.dtype_name(values), values.shape, None, integrity.whole_hash(values))


FINGERPRINTS = "fingerprints"


def write_fingerprints(handle: h5py.File, values: np.ndarray, arrays: str) -> str:
    """Store ``values`` (rows x width, float16, NaN = unknown) as the fingerprints dataset; returns the
    ``arrays`` manifest with their entry (the caller seals the file's digest afterwards)."""
    values = np.asarray(values, dtype=np.float16)
    if values.ndim != 2 or len(values) != len(handle["ids"]):
        raise CacheError(f"fingerprints of shape {values.shape} do not fit {len(handle['ids'])} rows")
    if FINGERPRINTS in handle:
        del handle[FINGERPRINTS]
    handle.create_dataset(FINGERPRINTS, data=values)
    found = json.loads(arrays)
    found["arrays"][FINGERPRINTS] = column_entry(values)
    return integrity.dumps(found["arrays"], found["attrs"])


def _fingerprints_entry(handle: h5py.File, values: np.ndarray, arrays: str) -> str:
    """The ``arrays`` manifest with the fingerprints' entry; written into the file only when the partial
    file had no room for them (one begun by an earlier layerprobe)."""
    values = np.asarray(values, dtype=np.float16)
    if FINGERPRINTS not in handle or handle[FINGERPRINTS].shape != values.shape:  # none, or an older width
        return write_fingerprints(handle, values, arrays)
    found = json.loads(arrays)
    found["arrays"][FINGERPRINTS] = column_entry(values)
    return integrity.dumps(found["arrays"], found["attrs"])


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


def _manifest_text(manifest: CacheManifest | dict) -> str:
    """A typed manifest as stored; a dict (tests and benchmarks forge them) is stored as given."""
    return manifest_json(manifest) if isinstance(manifest, CacheManifest) else json.dumps(manifest)


class CacheWriter:
    """Streams code rows into ``<final>.partial``; resumes a partial file of the same key."""

    def __init__(self, final: Path, key: str, settings_key: str, manifest: CacheManifest | dict, rows: RowTable,
                 outputs: list[OutputSpec], bn_state: dict | None = None, fingerprint_width: int | None = None):
        self.final = Path(final)
        self.partial = partial_path(self.final)
        self.sealing = sealing_path(self.final)
        self.key = key
        self.outputs = outputs
        self.n_rows = len(rows.ids)
        self.columns = row_arrays(rows)
        self.hashes = _RunningHashes(outputs)
        self.fingerprint_width = fingerprint_width
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.file = self._resume() if self.partial.exists() else None
        if self.file is None:
            try:
                if bn_state is not None:
                    self.hashes.add_bn(bn_state)  # first, so that their slots are sized for them
                self.file = self._create(settings_key, manifest, rows)
                if bn_state is not None:
                    write_state(self.file, bn_state)
                self.hashes.save(self.file, [False, 0])
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
        self.hashes.load(handle, [bool(handle.attrs["copied"]), int(handle.attrs["rows_committed"])])
        handle.attrs["complete"] = False  # a run killed while sealing is sealed again at the end
        return handle

    def _create(self, settings_key: str, manifest: CacheManifest | dict, rows: RowTable) -> h5py.File:
        handle = h5py.File(self.partial, "w", track_order=True)
        n = self.n_rows
        handle.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            settings_key=settings_key,
            key=self.key,
            manifest=_manifest_text(manifest),
            rows_committed=0,
            copied=False,
            complete=False,
        )
        for name, values in self.columns.items():
            handle.create_dataset(name, data=values, **({"dtype": _STR} if values.dtype == object else {}))
        handle["labels"].attrs["class_names"] = json.dumps(list(rows.class_names))
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
                fillvalue=np.nan,  # a lost chunk reads as NaN, never as plausible zeros
                dcpl=dcpl,
            )
            ds.attrs.update({k: ("" if v is None else v) for k, v in out.attrs.items()})
        if self.fingerprint_width:
            # room for the fingerprints now (filled at the end), so the seal never has to grow the file for them
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            handle.create_dataset(FINGERPRINTS, shape=(n, self.fingerprint_width), dtype=np.float16,
                                  fillvalue=np.nan, dcpl=dcpl)
        self.hashes.create(handle, n)
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
                    values = old[old_rows[start : start + block]]
                    target[new_rows[start : start + block]] = values
                    self.hashes.add_rows(codes_path(layer, pooling), values, new_rows[start : start + block])
            self.file.flush()
            self.hashes.save(self.file, [True, 0])
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
            self.hashes.save(self.file, [self.copied, position + len(rows)])
            self._commit(position + len(rows))
        except (OSError, RuntimeError) as exc:
            raise write_failure(self.partial, exc) from None
        return position + len(rows)

    def _write_data(self, rows: np.ndarray, codes: dict[tuple[str, str], np.ndarray], bn_state: dict | None) -> None:
        for (layer, pooling), block in codes.items():
            target = self.file[codes_path(layer, pooling)]
            self.hashes.add_rows(codes_path(layer, pooling), block, rows)
            if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
                target[int(rows[0]) : int(rows[-1]) + 1] = block  # contiguous: a plain slice
            else:
                target[rows] = block
        if bn_state is not None:
            write_state(self.file, bn_state)  # the sums so far travel with the rows they cover
            self.hashes.add_bn(bn_state)
        self.file.flush()

    def _commit(self, committed: int) -> None:
        """Move the commit marker; called only after the rows' data is flushed."""
        self.file.attrs["rows_committed"] = committed
        self.file.flush()

    def finish(self, manifest: CacheManifest | dict, planned: int, fingerprints: np.ndarray | None = None) -> Path:
        """Seal a copy (digest, complete), fsync and rename it into place; returns the final path.

        ``fingerprints`` (one row per stored row, NaN where unknown) are stored as the
        ``fingerprints`` dataset of the sealed copy, with their content hash.

        If sealing fails (full disk, file size limit) the partial file is left as it
        was, with every row committed, and the next run seals it again.
        """
        if self.rows_committed != planned or not self.copied:
            raise CacheError(f"only {self.rows_committed} of {planned} planned rows were written")
        text = _manifest_text(manifest)
        try:  # never seal a cache that open_cache would refuse
            CacheManifest.from_dict(json.loads(text))
        except CacheError as exc:
            raise CacheError(f"{self.final} was not sealed: {exc}") from None
        try:
            if fingerprints is not None and FINGERPRINTS in self.file \
                    and self.file[FINGERPRINTS].shape == np.shape(fingerprints):  # else _seal writes them anew
                self.file[FINGERPRINTS][...] = np.asarray(fingerprints, dtype=np.float16)  # allocated: no growth
                self.file.flush()
            self._seal(text, planned, fingerprints)
            self._publish()
        except (OSError, RuntimeError) as exc:
            self.sealing.unlink(missing_ok=True)
            raise write_failure(self.partial, exc) from None
        return self.final

    def _seal(self, manifest: str, planned: int, fingerprints: np.ndarray | None = None) -> None:
        arrays = self.array_manifest()  # hashes read from the partial file before it closes
        self.file.flush()
        self.file.close()
        shutil.copyfile(self.partial, self.sealing)
        with h5py.File(self.sealing, "r+") as handle:
            if fingerprints is not None:
                arrays = _fingerprints_entry(handle, fingerprints, arrays)
            handle.attrs["manifest"] = manifest
            handle.attrs["rows_planned"] = planned
            handle.attrs[integrity.ATTR] = arrays
            handle.attrs["digest"] = metadata_digest(handle)
            handle.attrs["complete"] = True

    def array_manifest(self) -> str:
        """Layout and content hash of every array written, for the root ``arrays`` attribute."""
        arrays = {name: column_entry(values) for name, values in self.columns.items()}
        attrs = {}
        for out in self.outputs:
            path = codes_path(out.layer, out.pooling)
            arrays[path] = integrity.entry("<f4", (self.n_rows, out.channels), (chunk_rows(out.channels, self.n_rows),
                                           out.channels), self.hashes.codes_hash(self.file, path), fill="nan")
            attrs[path] = integrity.plain_attrs({k: ("" if v is None else v) for k, v in out.attrs.items()})
        arrays.update(self.hashes.bn_entries(self.file))
        attrs.update(self.hashes.bn_attrs(self.file))
        return integrity.dumps(arrays, attrs)

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


class _RunningHashes:
    """The content hashes of the codes and BatchNorm sums, kept up to date while they are written.

    They are saved with every commit into ``integrity/running`` (two fixed-size
    slots, written in place so the file never grows), each stamped with the
    (copied, rows_committed) it belongs to; a resumed run continues from the slot
    that matches the commit marker. A partial file without them (written by an
    earlier layerprobe) gets its hashes from the data on disk when it is sealed.
    """

    NAME = "integrity/running"

    def __init__(self, outputs: list[OutputSpec]):
        self.sums: dict[str, int] | None = {codes_path(o.layer, o.pooling): 0 for o in outputs}
        self.bn: dict[str, dict] | None = {}
        self.slot = 0

    def add_rows(self, path: str, block: np.ndarray, rows: np.ndarray) -> None:
        if self.sums is not None:
            self.sums[path] = (self.sums[path] + integrity.rows_sum(np.asarray(block, np.float32), rows)) % (1 << 256)

    def add_bn(self, state: dict[str, dict]) -> None:
        if self.bn is None:
            return
        for name, entry in state.items():
            self.bn[name] = {"hash": {key: integrity.whole_hash(np.asarray(entry[key], np.float64))
                                      for key in ("sum", "sumsq", "running_mean", "running_var")},
                             "channels": int(np.asarray(entry["sum"]).shape[0]),
                             "attrs": {"count": int(entry["count"]), "depth": int(entry["depth"]),
                                       "stride": int(entry.get("stride") or 0)}}

    def _payload(self, stamp) -> bytes:
        return json.dumps({"at": stamp, "sums": {k: f"{v:064x}" for k, v in self.sums.items()},
                           "bn": self.bn}, sort_keys=True).encode()

    def create(self, handle: h5py.File, n_rows: int) -> None:
        # room for the largest stamp and BatchNorm counts of up to 20 digits per module
        size = len(self._payload([True, n_rows])) + 64 * (len(self.bn) + 1) + 256 + 4096
        handle.create_dataset(self.NAME, shape=(2,), dtype=f"S{size}")

    def save(self, handle: h5py.File, stamp: list) -> None:
        if self.sums is None or self.NAME not in handle:
            return
        ds = handle[self.NAME]
        payload = self._payload(stamp)
        if len(payload) > ds.dtype.itemsize:
            raise CacheError(f"the running hashes outgrew their {ds.dtype.itemsize} bytes in {handle.filename}")
        self.slot = 1 - self.slot
        ds[self.slot] = np.bytes_(payload)
        handle.flush()

    def load(self, handle: h5py.File, stamp: list) -> None:
        for slot in (0, 1):
            try:
                found = json.loads(bytes(handle[self.NAME][slot]).decode())
            except (KeyError, OSError, RuntimeError, ValueError):
                continue
            if found.get("at") == stamp and set(found["sums"]) == set(self.sums):
                self.sums = {k: int(v, 16) for k, v in found["sums"].items()}
                self.bn, self.slot = found["bn"], slot
                return
        log.warning("%s has no running content hashes for its committed rows; they are computed from the file "
                    "when it is sealed", handle.filename)
        self.sums = self.bn = None

    def codes_hash(self, handle: h5py.File, path: str) -> str:
        if self.sums is None:
            return integrity.array_hash(handle[path][()], "rows")
        return integrity.rows_hash(self.sums[path])

    def _bn_state(self, handle: h5py.File) -> dict:
        if self.bn is not None:
            return self.bn
        from_file = _RunningHashes([])
        from_file.add_bn(read_state(handle))
        return from_file.bn

    def bn_entries(self, handle: h5py.File) -> dict:
        return {f"{BN_GROUP}/{name}/{key}": integrity.entry("<f8", (e["channels"],), None, digest)
                for name, e in self._bn_state(handle).items() for key, digest in e["hash"].items()}

    def bn_attrs(self, handle: h5py.File) -> dict:
        return {f"{BN_GROUP}/{name}": e["attrs"] for name, e in self._bn_state(handle).items()}
