"""The subset --limit keeps: exactly scikit-learn's train_test_split choice, without importing scikit-learn."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from pipeline.errors import InputError
from pipeline.inputs.sampling import kept_rows


def _sklearn(labels, total, limit, seed):
    kept, _ = train_test_split(list(range(total)), train_size=limit, stratify=labels, random_state=seed)
    return kept


def _cases():
    rng = np.random.default_rng(0)
    for case in range(300):
        classes = int(rng.integers(1, 6))
        counts = rng.integers(2, 40, size=classes)
        if case % 5 == 0:
            counts[:] = counts[0]  # equal classes: ties in the remainders, broken by the seeded generator
        labels = [f"class-{c}" for c, n in enumerate(counts) for _ in range(n)]
        order = rng.permutation(len(labels))  # labels in no particular order, as a folder listing gives them
        labels = [labels[i] for i in order]
        limit = int(rng.integers(classes, len(labels) - classes + 1))
        yield labels, limit, int(rng.integers(0, 2**31))


@pytest.mark.parametrize("labelled", [True, False], ids=["stratified", "unlabelled"])
def test_the_kept_rows_are_scikit_learns_for_every_size_balance_and_seed(labelled):
    for labels, limit, seed in _cases():
        stratify = labels if labelled else None
        got = kept_rows(stratify, len(labels), limit, seed).tolist()
        assert got == _sklearn(stratify, len(labels), limit, seed), (limit, seed)


def test_integer_labels_and_the_bundled_default_seed_match_too():
    labels = [0] * 1500 + [1] * 1500
    for limit in (60, 400, 1200, 2998):
        assert kept_rows(labels, 3000, limit, 0).tolist() == _sklearn(labels, 3000, limit, 0)


def test_a_class_of_one_image_and_a_subset_leaving_out_too_few_are_refused_clearly():
    with pytest.raises(InputError, match=r"label\(s\) b have only one image"):
        kept_rows(["a", "a", "a", "b"], 4, 2, 0)
    with pytest.raises(InputError, match=r"leaves out 1 image\(s\), fewer than the 2 classes"):
        kept_rows(["a", "a", "b", "b"], 4, 3, 0)
    for labels, limit in ((["a", "a", "a", "b"], 2), (["a", "a", "b", "b"], 3)):  # scikit-learn refuses both
        with pytest.raises(ValueError):
            _sklearn(labels, 4, limit, 0)


def test_taking_a_subset_does_not_import_scikit_learn(image_folder):
    code = ("import sys; from pipeline.inputs import from_folder, stratified_subset; "
            f"s = stratified_subset(from_folder({str(image_folder)!r}), 6, 0); "
            "assert len(s) == 6; print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
