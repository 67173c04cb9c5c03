"""Extraction leaves the process's thread settings as it found them (the notebook case: extract, then probe)."""

from __future__ import annotations

import importlib

import numpy as np  # noqa: F401  (loads numpy's BLAS, so threadpoolctl sees a pool)
import pytest
import torch
from threadpoolctl import ThreadpoolController, threadpool_limits

from pipeline.activations import extract
from pipeline.activations.threads import kept_threads, thread_settings
from pipeline.inputs import from_folder

stage = importlib.import_module("pipeline.activations.extract")


@pytest.fixture
def two_threads():
    """Every pool at 2 threads (whatever the machine's cores), put back as it was afterwards."""
    saved = thread_settings()
    torch.set_num_threads(2)
    limits = threadpool_limits(2)
    yield
    limits.restore_original_limits()
    torch.set_num_threads(saved["torch"])


def test_settings_changed_inside_the_block_are_set_back(two_threads):
    before = thread_settings()
    assert before["torch"] == 2 and len(before) >= 2 and set(before.values()) == {2}
    with kept_threads():
        torch.set_num_threads(1)
        ThreadpoolController().limit(limits=1)  # left in place, as a library setting its pool would
        assert set(thread_settings().values()) == {1}
    assert thread_settings() == before


def test_extract_sets_back_what_happens_to_threads_during_it(two_threads, image_folder, tiny_config, tmp_path,
                                                            monkeypatch):
    before = thread_settings()
    compute = stage._compute

    def compute_on_one_thread(*args, **kwargs):  # as a --threads option or a model's own code might
        torch.set_num_threads(1)
        ThreadpoolController().limit(limits=1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(stage, "_compute", compute_on_one_thread)
    result = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False)
    assert result.forward_passes == 2  # 16 images, batches of 8: the patched loop ran
    assert thread_settings() == before


def test_a_plain_extraction_changes_no_thread_setting(two_threads, image_folder, tiny_config, tmp_path):
    """Today the guard has nothing to undo: the extraction itself (undecorated) leaves every pool as it was."""
    before = thread_settings()
    stage.extract.__wrapped__(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False)
    after = thread_settings()
    assert {k: v for k, v in after.items() if k in before} == before  # pools first loaded meanwhile aside
