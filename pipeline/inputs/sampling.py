"""The seeded subset ``--limit`` keeps, without scikit-learn.

The images kept are exactly those of scikit-learn's
``train_test_split(records, train_size=limit, stratify=labels, random_state=seed)``
(a ``StratifiedShuffleSplit`` with labels, a ``ShuffleSplit`` without), the
rule layerprobe has always used, written out here in numpy so that

- the extract stage does not import scikit-learn (0.8 s of a 22 s command on
  1,200 images, BENCHMARKS.md), and
- the subset a seed names does not change with the installed scikit-learn.

``tests/test_sampling.py`` checks the choice against scikit-learn's over many
sizes, class balances and seeds.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def kept_rows(labels: list | None, total: int, limit: int, seed: int) -> np.ndarray:
    """Positions of the ``limit`` rows kept out of ``total`` (``labels[i]`` the label of row i, or None
    for unlabelled rows), in the order scikit-learn returns them."""
    rng = np.random.RandomState(seed)
    left_out = total - limit
    if labels is None:
        return rng.permutation(total)[left_out:left_out + limit]
    classes, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise InputError(f"label(s) {', '.join(map(str, classes[counts < 2]))} have only one image, too few for a "
                         "stratified subset (--limit); add images or leave out --limit")
    if left_out < len(classes):
        raise InputError(f"limit={limit} (--limit) leaves out {left_out} image(s), fewer than the {len(classes)} "
                         "classes a stratified subset leaves one of each; use all images (no --limit) or a "
                         "smaller limit")
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    kept_per_class = _approximate_mode(counts, limit, rng)
    _approximate_mode(counts - kept_per_class, left_out, rng)  # the left-out rows' share: it draws from rng too
    kept = []
    for members, count, keep in zip(by_class, counts, kept_per_class):
        kept.extend(members.take(rng.permutation(count), mode="clip")[:keep])
    return rng.permutation(kept)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``n_draws`` fall to each class: the floor of each class's share, then one more for the
    classes with the largest remainders, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
