"""Cross-validation folds: made once, checked, stored with the results, reused by every probe.

Stratified k-fold, or stratified group k-fold whenever groups are given, so no
patient, lesion or duplicate cluster sits on both sides of a split. Repeats use
seeds ``seed, seed + 1, ...``. Inner folds (for choosing C) are made the same
way inside each outer training part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..errors import ProbeError


@dataclass(frozen=True)
class Folds:
    """Outer folds as data: the test fold of every row in every repeat."""

    test_fold: np.ndarray  # (repeats, rows) int
    n_folds: int
    seeds: tuple[int, ...]
    groups: str | None  # the group source, None for plain stratified folds

    @property
    def repeats(self) -> int:
        return int(self.test_fold.shape[0])

    @property
    def kind(self) -> str:
        return "StratifiedGroupKFold" if self.groups else "StratifiedKFold"

    def splits(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """``(repeat, fold, train_rows, test_rows)`` for every fold of every repeat."""
        out = []
        for r in range(self.repeats):
            for k in range(self.n_folds):
                test = self.test_fold[r] == k
                out.append((r, k, np.flatnonzero(~test), np.flatnonzero(test)))
        return out

    def as_dict(self) -> dict:
        return {"kind": self.kind, "n_folds": self.n_folds, "repeats": self.repeats, "seeds": list(self.seeds),
                "groups": self.groups, "test_fold": self.test_fold.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Folds":
        return cls(np.asarray(d["test_fold"], dtype=np.int64), int(d["n_folds"]), tuple(d["seeds"]), d["groups"])


def _splitter(n_folds: int, grouped: bool, seed: int):
    cls = StratifiedGroupKFold if grouped else StratifiedKFold
    return cls(n_splits=n_folds, shuffle=True, random_state=seed)


FEWER_FOLDS = "fewer folds (--folds)"
FINER_GROUPS = ", finer groups or groups='none' (--groups none)"


def check_stratifiable(y: np.ndarray, groups: np.ndarray | None, n_folds: int, class_names: list[str],
                       group_name: str | None = None) -> None:
    """Refuse, before any split is made, fold counts the labels or groups cannot fill."""
    if n_folds < 2:
        raise ProbeError(f"folds (--folds) must be at least 2, got {n_folds}")
    for c, name in enumerate(class_names):
        rows = y == c
        count = int(rows.sum())
        if count < n_folds:
            raise ProbeError(
                f"class {name!r} has {count} labelled image(s), fewer than folds={n_folds} (--folds): "
                f"use folds={max(2, count)} or fewer, or add images of that class"
            )
        if groups is not None:
            n_groups = len(np.unique(groups[rows]))
            if n_groups < n_folds:
                raise ProbeError(
                    f"groups {group_name!r} (--groups): class {name!r} spans only {n_groups} group(s), fewer than "
                    f"folds={n_folds} (--folds), so stratified group folds are impossible; use folds="
                    f"{max(2, n_groups)} or fewer, finer groups, groups='dup_cluster' (--groups dup_cluster: "
                    "near-duplicates only, ignoring the coarse group column, so folds then mix its groups), or "
                    "groups='none' (--groups none)"
                )


def make_folds(y: np.ndarray, groups: np.ndarray | None, n_folds: int, repeats: int, seed: int,
               class_names: list[str], group_name: str | None = None) -> Folds:
    """Assign every row a test fold per repeat, then check every fold holds every class."""
    if repeats < 1:
        raise ProbeError(f"repeats (--repeats) must be at least 1, got {repeats}")
    check_stratifiable(y, groups, n_folds, class_names, group_name)
    seeds = tuple(seed + r for r in range(repeats))
    test_fold = np.full((repeats, len(y)), -1, dtype=np.int64)
    for r, s in enumerate(seeds):
        for k, (_, test) in enumerate(_splitter(n_folds, groups is not None, s).split(np.zeros(len(y)), y, groups)):
            test_fold[r, test] = k
    folds = Folds(test_fold, n_folds, seeds, group_name if groups is not None else None)
    check_folds(folds, y, groups, class_names)
    return folds


def check_folds(folds: Folds, y: np.ndarray, groups: np.ndarray | None, class_names: list[str]) -> None:
    """Every test and training part holds every class; no group is on both sides."""
    for r, k, train, test in folds.splits():
        where = f"fold {k} of repeat {r}" if folds.repeats > 1 else f"fold {k}"
        for part, rows in (("test", test), ("training", train)):
            missing = [class_names[c] for c in range(len(class_names)) if not np.any(y[rows] == c)]
            if missing:
                advice = FEWER_FOLDS + (FINER_GROUPS if groups is not None else "")
                raise ProbeError(
                    f"the {part} part of {where} has no image of class {missing[0]!r} "
                    f"({'groups too large or too few' if groups is not None else 'too few images'}); use {advice}"
                )
        if groups is not None:
            shared = np.intersect1d(groups[train], groups[test])
            if shared.size:
                raise ProbeError(f"group {shared[0]!r} is on both sides of {where}; the stored folds are corrupt")


def inner_splits(y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int,
                 class_names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for choosing hyperparameters inside one training part, with the same group rule."""
    for c, name in enumerate(class_names):
        rows = y == c
        have = len(np.unique(groups[rows])) if groups is not None else int(rows.sum())
        if have < n_folds:
            unit, advice = (("group(s)", f"use {FEWER_FOLDS}{FINER_GROUPS}") if groups is not None
                            else ("image(s)", f"use {FEWER_FOLDS} or add images of that class"))
            raise ProbeError(
                f"class {name!r} has only {have} {unit} in a training part, fewer than the {n_folds} inner "
                f"folds that choose C; {advice}"
            )
    splits = list(_splitter(n_folds, groups is not None, seed).split(np.zeros(len(y)), y, groups))
    for train, test in splits:
        for rows in (train, test):
            missing = [class_names[c] for c in range(len(class_names)) if not np.any(y[rows] == c)]
            if missing:
                raise ProbeError(
                    f"an inner fold that chooses C has no image of class {missing[0]!r} (groups too large "
                    f"or too few); use {FEWER_FOLDS}{FINER_GROUPS}"
                )
    return splits
