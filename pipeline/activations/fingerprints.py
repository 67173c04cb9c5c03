"""Fingerprints for every row of a cache being written: from the images decoded for the forward pass, from
the earlier cache for rows copied from it, and from a cheap decode of the files for the rest."""

from __future__ import annotations

import logging

import numpy as np

from ..cache import RowTable
from ..inputs import ImageSet
from ..inputs.fingerprint import DTYPE, WIDTH, fingerprint_files

log = logging.getLogger(__name__)


def complete_fingerprints(rows: RowTable, computed: dict[int, np.ndarray], previous, images: ImageSet) -> np.ndarray:
    """One fingerprint per stored row (NaN for hidden rows no longer in the input and not known before)."""
    found = np.full((len(rows.ids), WIDTH), np.nan, dtype=DTYPE)
    for row, values in computed.items():
        found[row] = values
    missing = [k for k in range(len(rows.ids)) if k not in computed]
    if missing and previous is not None:
        missing = _from_previous(found, missing, rows, previous)
    records = {r.id: r for r in images.records}
    decode = [k for k in missing if rows.ids[k] in records]
    if decode:
        log.info("fingerprinting %d image(s) that needed no forward pass", len(decode))
        chosen = [records[rows.ids[k]] for k in decode]
        found[decode] = fingerprint_files([r.path for r in chosen], decoder=images.decoder,
                                          frames=[r.frame for r in chosen])
    return found


def _from_previous(found: np.ndarray, missing: list[int], rows: RowTable, previous) -> list[int]:
    """Take the earlier cache's fingerprint of every missing row whose file content is the same."""
    stored = previous.stored_fingerprints()
    if stored is None or stored.shape[1] != WIDTH:
        return missing
    before = {sha: k for k, sha in enumerate(previous.stored_rows().sha256)}
    still = []
    for row in missing:
        old = before.get(rows.sha256[row])
        if old is not None and np.isfinite(stored[old]).all():
            found[row] = stored[old]
        else:
            still.append(row)
    return still
