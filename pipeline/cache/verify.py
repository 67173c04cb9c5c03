"""``layerprobe verify``: check a whole cache and say what is wrong with it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..inputs.records import file_id
from .reader import open_cache


@dataclass
class VerifyReport:
    """Problems found (empty when the cache is sound) and what was checked."""

    path: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path: str | Path, check_inputs: bool = True) -> VerifyReport:
    """Check structure, row counts, commit marker, checksums, finite values and, optionally,
    that the image files still have the bytes the codes were computed from."""
    report = VerifyReport(Path(path))
    try:
        cache = open_cache(path, recheck=True)  # whatever was recorded beside it (trust.py)
    except CacheError as exc:
        report.problems.append(str(exc))
        return report
    checks = [_check_structure, _check_codes] + ([_check_inputs] if check_inputs else [])
    with cache:
        report.checked.append("format, version, completeness and metadata digest")
        report.checked.append(
            "datatype, shape, chunks and content hash of every array" if cache.has_hashes else
            "no per-array content hashes: this cache was written before they existed (its chunks are still "
            "checked); extract it again into a new file to add them")
        for check in checks:
            try:
                check(cache, report)
            except CacheError as exc:
                report.problems.append(str(exc))
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                report.problems.append(f"{report.path} is damaged ({type(exc).__name__}: {exc})")
    return report


def _check_structure(cache, report: VerifyReport) -> None:
    handle = cache._file
    hashed = cache.check_columns()  # open checks only their layout; their content hashes here
    if hashed:
        report.checked.append(f"content hashes of the row columns ({', '.join(hashed)})")
    planned, committed = handle.attrs.get("rows_planned"), handle.attrs.get("rows_committed")
    if planned is None or int(planned) != int(committed):
        report.problems.append(f"commit marker: {committed} rows committed but {planned} planned")
    columns = ["ids", "active", "labels", "files/size", "files/sha256"] + [c for c in ("groups", "split") if c in handle]
    for name in columns:
        if name not in handle or len(handle[name]) != cache.n_stored:
            found = len(handle[name]) if name in handle else "missing"
            report.problems.append(f"row column {name!r} has {found} rows, expected {cache.n_stored}")
    ids = handle["ids"].asstr()[()].tolist()
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        report.problems.append("ids are not unique and sorted")
    labels = cache.labels
    if len(labels) and (labels.max() >= len(cache.class_names) or labels.min() < -1):
        report.problems.append(f"labels outside 0..{len(cache.class_names) - 1}")
    channels = {s["name"]: s["channels"] for s in cache.provenance.get("layers", [])}
    for layer, pooling in cache.outputs:
        info = cache.output_info(layer, pooling)
        if info["shape"][1] != channels.get(layer):
            report.problems.append(f"{layer}/{pooling} has {info['shape'][1]} channels, the manifest says {channels.get(layer)}")
    report.checked.append(f"structure of {cache.n_stored} stored rows and {len(cache.outputs)} outputs")


def _check_codes(cache, report: VerifyReport) -> None:
    for layer, pooling in cache.outputs:
        try:
            values = cache.stored_codes(layer, pooling)
        except CacheError as exc:
            report.problems.append(str(exc))
            continue
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        if bad:
            report.problems.append(f"{layer}/{pooling}: {bad} row(s) hold NaN or infinite values")
    if cache.provenance.bn_stats is not None:
        cache.bn_state()  # checked against the recorded hashes and counts
    report.checked.append("chunk index, chunk checksums (fletcher32), content hashes and finite values of every output"
                          + (" and the BatchNorm sums" if cache.provenance.bn_stats is not None else ""))


def _check_inputs(cache, report: VerifyReport) -> None:
    root = Path(cache.provenance.input.settings_root)
    stored = cache.stored_rows()
    active = np.asarray(stored.active, bool)
    missing, changed = [], []
    for row_id, sha, is_active in zip(stored.ids, stored.sha256, active):
        if not is_active:
            continue
        file = root / file_id(row_id)  # a frame's or slice's row names its file
        if not file.is_file():
            missing.append(row_id)
        elif hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            changed.append(row_id)
    for what, ids in (("missing", missing), ("changed since extraction", changed)):
        if ids:
            report.problems.append(
                f"{len(ids)} input image(s) {what}, e.g. {', '.join(ids[:3])}: run the extract command again"
            )
    report.checked.append(f"{int(active.sum())} input files against their stored sha256 under {root}")
