"""Incremental extraction: what to copy from an earlier cache and what to compute.

Given the rows of the current input and, when one exists, the rows and outputs
of the earlier cache with the same settings, a :class:`Plan` says which rows are
reused (same id, same file bytes), which need every output computed (new or
changed images), and which need only the outputs the earlier cache lacks (more
layers or poolings). Rows of images no longer in the input are kept hidden for
later reuse while they have every output, and dropped otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .writer import RowTable


@dataclass(frozen=True)
class Plan:
    rows: RowTable
    outputs: list[tuple[str, str]]
    copy_outputs: list[tuple[str, str]] = field(default_factory=list)
    copy_new: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    copy_old: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    compute_all: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    compute_missing: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    missing_outputs: list[tuple[str, str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def planned(self) -> int:
        """Rows that need a forward pass."""
        return len(self.compute_all) + len(self.compute_missing)


def make_plan(
    current: RowTable,
    outputs: list[tuple[str, str]],
    previous: RowTable | None = None,
    previous_outputs: list[tuple[str, str]] | None = None,
) -> Plan:
    """Merge ``current`` with an earlier cache's rows; ``outputs`` is the new cache's full list."""
    if previous is None:
        return Plan(current, list(outputs), compute_all=np.arange(len(current.ids)), added=list(current.ids))
    kept_outputs = [o for o in outputs if o in set(previous_outputs or [])]
    missing = [o for o in outputs if o not in set(kept_outputs)]
    old_index = {row_id: j for j, row_id in enumerate(previous.ids)}
    current_ids = set(current.ids)

    entries = []  # (id, source row in current or None, source row in previous or None)
    added, changed = [], []
    for i, row_id in enumerate(current.ids):
        j = old_index.get(row_id)
        if j is not None and previous.sha256[j] == current.sha256[i]:
            entries.append((row_id, i, j))
        else:
            (changed if j is not None else added).append(row_id)
            entries.append((row_id, i, None))
    removed = [row_id for row_id in previous.ids if row_id not in current_ids]
    if not missing:  # hidden rows stay reusable only while they have every output
        entries += [(row_id, None, old_index[row_id]) for row_id in removed]
    entries.sort(key=lambda e: e[0])

    rows = _merged_rows(current, previous, entries)
    copy_new = np.array([k for k, (_, _, j) in enumerate(entries) if j is not None], dtype=int)
    copy_old = np.array([j for _, _, j in entries if j is not None], dtype=int)
    compute_all = np.array([k for k, (_, i, j) in enumerate(entries) if j is None], dtype=int)
    compute_missing = (
        np.array([k for k, (_, i, j) in enumerate(entries) if j is not None and i is not None], dtype=int)
        if missing
        else np.zeros(0, int)
    )
    return Plan(rows, list(outputs), kept_outputs, copy_new, copy_old, compute_all, compute_missing, missing,
                added, changed, removed)


def _merged_rows(current: RowTable, previous: RowTable, entries) -> RowTable:
    def pick(column_now, column_before, blank):
        return [column_now[i] if i is not None else (column_before[j] if blank is None else blank)
                for _, i, j in entries]

    return RowTable(
        ids=[e[0] for e in entries],
        labels=pick(current.labels, previous.labels, -1),  # hidden rows get the label of their next input
        class_names=list(current.class_names),
        sizes=pick(current.sizes, previous.sizes, None),
        sha256=pick(current.sha256, previous.sha256, None),
        groups=pick(current.groups, None, "") if current.groups is not None else None,
        split=pick(current.split, None, "") if current.split is not None else None,
        active=[i is not None for _, i, _ in entries],
    )
