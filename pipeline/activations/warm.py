"""A warm re-run answered without torch, without building the model and without reading the images.

Each finished extraction on the CPU leaves a small record beside its cache
(``<cache folder>/.layerprobe/warm-<request>.json``): the request it answered,
the cache it made or found up to date and that cache's key, the row table's
fingerprint, and for every input file and the weights file its ``stat``
identity (size, modification time, change time, inode, device) with the file's
sha256. A later :func:`extract` of the same request first looks there: when

* the request is the same (every option that changes the codes, the input
  folder, the target, and the versions of layerprobe, its cache format, the
  colour policy, timm and torch),
* every input file and the weights file has the ``stat`` identity recorded
  (a file rewritten in place gets a new change time, so its bytes are hashed
  again by the full stage; the same rule as make, rsync and git's index),
* the images form the same row table (ids, labels, groups, splits), and for
  a shard the whole input is the same, and
* the cache file has the ``stat`` identity recorded and still has the recorded
  key (it is opened and checked as on any open),

the cache is up to date and is returned at once. Anything else, including a
missing or unreadable record, runs the full stage, which hashes every file and
decides by content as before. A request on a GPU (or ``device auto`` where one
may be present), with weights that have no local file, or one that skipped
bad images is never recorded, so it always runs the full stage.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..atomic import atomic_write
from ..errors import CacheError
from ..cache import RowTable, open_cache
from ..cache.format import FORMAT_VERSION
from ..cache.trust import FOLDER  # one folder of records beside the caches
from ..cache.writer import input_fingerprint
from ..inputs import COLOUR_POLICY, ImageSet
from .config import DEFAULT_CACHE_DIR, ExtractConfig, ExtractResult, select_images

log = logging.getLogger(__name__)

RECORD_VERSION = 1
#: Change neither where the codes go nor more than their last bits (as the batch size, BatchNorm folding does).
_NOT_IN_REQUEST = ("batch_size", "workers", "wait", "fold_batchnorm")


def extract(
    images: ImageSet,
    config: ExtractConfig = ExtractConfig(),
    out: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> ExtractResult:
    """Cache every requested layer of ``images`` (see :func:`pipeline.activations.extract.extract`).

    A warm re-run with nothing new returns from the record beside the cache
    (module docstring) without importing torch; anything else runs the stage.
    """
    started = time.perf_counter()
    found = up_to_date(images, config, out, cache_dir)
    if found is not None:
        found.seconds = time.perf_counter() - started
        log.debug("%s is up to date (no file changed since the last run): nothing to extract", found.path)
        return found
    stage = importlib.import_module(f"{__package__}.extract")
    return stage.extract(images, config, out=out, cache_dir=cache_dir, progress=progress)


def rows_of(images: ImageSet, sizes: list[int], sha256: list[str]) -> RowTable:
    """The row table of ``images`` with their files' sizes and content hashes."""
    records = images.records
    return RowTable(
        ids=[r.id for r in records],
        labels=images.label_indices(),
        class_names=list(images.class_names),
        sizes=list(sizes),
        sha256=list(sha256),
        groups=[r.group or "" for r in records] if images.has_groups else None,
        split=[r.split or "" for r in records] if images.has_split else None,
    )


def file_identity(path: str | Path) -> list[int] | None:
    """The ``stat`` fields that change when a file is replaced or rewritten, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def cpu_only(device: str) -> bool:
    """Whether ``device`` surely means the CPU, known without importing torch."""
    if device == "cpu":
        return True
    # "auto" takes a GPU when torch sees one; without torch, trust only a Linux machine with no NVIDIA device node
    return device == "auto" and sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def request_key(images: ImageSet, config: ExtractConfig, out: str | Path | None, cache_dir: str | Path) -> str:
    """A digest of everything that decides which cache a request makes and what is in it."""
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_REQUEST}
    request = {
        "record": RECORD_VERSION,
        "layerprobe": __version__,
        "format": FORMAT_VERSION,
        "colour_policy": COLOUR_POLICY,
        "versions": {name: _version(name) for name in ("timm", "torch", "torchvision")},
        "config": settings,
        "weights_file": None if config.weights is None else str(Path(config.weights).resolve()),
        "decoder": [images.decoder.kind, images.decoder.policy()],  # DICOM windowing, NIfTI slicing, ...
        "dataset": images.name,
        "root": str(Path(images.root).resolve()),
        "target": str(Path(out).resolve()) if out is not None else ["cache_dir", str(Path(cache_dir).resolve())],
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def record_path(out: str | Path | None, cache_dir: str | Path, key: str) -> Path:
    folder = Path(out).resolve().parent if out is not None else Path(cache_dir).resolve()
    return folder / FOLDER / f"warm-{key[:32]}.json"


def up_to_date(images: ImageSet, config: ExtractConfig, out: str | Path | None = None,
               cache_dir: str | Path = DEFAULT_CACHE_DIR) -> ExtractResult | None:
    """The cache of this request if its record says nothing changed (module docstring), else None."""
    if not cpu_only(config.device):
        return None
    key = request_key(images, config, out, cache_dir)
    try:
        entry = json.loads(record_path(out, cache_dir, key).read_text())
    except (OSError, ValueError):
        return None
    try:
        return _check(images, config, entry)
    except (KeyError, TypeError, ValueError):
        return None  # a record of another shape: the full stage decides


def _check(images: ImageSet, config: ExtractConfig, entry: dict) -> ExtractResult | None:
    weights = entry["weights_file"]
    if weights is not None and file_identity(weights["path"]) != weights["identity"]:
        return None
    selected, shard = select_images(images, config)
    if (shard.as_dict() if shard is not None else None) != entry["shard"]:
        return None  # a shard is sealed again whenever the whole input changes (merge checks they match)
    files = entry["files"]
    sizes, digests = [], []
    for r in selected.records:
        known = files.get(str(r.path))
        if known is None or file_identity(r.path) != known[:-1]:
            return None
        sizes.append(known[0])
        digests.append(known[-1])
    if input_fingerprint(rows_of(selected, sizes, digests)) != entry["rows"]:
        return None
    path = Path(entry["cache"])
    if file_identity(path) != entry["cache_identity"]:
        return None  # rewritten since (another run, a merge, a repair): the full stage decides
    try:
        with open_cache(path) as cache:
            if cache.key != entry["cache_key"]:
                return None
            rows = cache.n_rows
    except CacheError:
        return None  # the full stage names the problem
    return ExtractResult(path, rows, True, 0.0)


def record(images: ImageSet, config: ExtractConfig, out: str | Path | None, cache_dir: str | Path,
           identities: list[list[int] | None], rows: RowTable, result: ExtractResult, weights_path: str | None,
           device: str, shard=None) -> Path | None:
    """Write the record a later :func:`up_to_date` reads; None where no record is kept (module docstring).

    ``identities`` are the files' ``stat`` identities taken *before* they were
    hashed, so a file changed in between is hashed again next time.
    """
    if device != "cpu" or result.skipped or (weights_path is None and not config.random_init):
        return None
    if None in identities or len(identities) != len(rows.ids):
        return None
    key = request_key(images, config, out, cache_dir)
    path_of = {r.id: str(r.path) for r in images.records}
    entry = {
        "cache": str(Path(result.path).resolve()),
        "cache_key": _cache_key(result.path),
        "cache_identity": file_identity(result.path),
        "rows": input_fingerprint(rows),
        "shard": shard.as_dict() if shard is not None else None,
        "weights_file": None if weights_path is None else {"path": weights_path,
                                                           "identity": file_identity(weights_path)},
        "files": {path_of[i]: [*identity, sha] for i, identity, sha in zip(rows.ids, identities, rows.sha256)},
    }
    if entry["cache_key"] is None:
        return None
    target = record_path(out, cache_dir, key)
    try:
        atomic_write(target, json.dumps(entry).encode())
    except OSError as exc:  # only an optimisation: the next run does the full check
        log.debug("could not write %s: %s", target, exc)
        return None
    return target


def _cache_key(path: str | Path) -> str | None:
    try:
        with open_cache(path) as cache:
            return cache.key
    except CacheError:
        return None
