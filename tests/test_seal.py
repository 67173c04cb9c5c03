"""Sealing never loses committed rows: a full disk at the seal leaves the partial file resumable."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.activations import extract
from pipeline.cache import partial_path
from pipeline.inputs import from_folder

from .conftest import TINY_MODEL, make_folder, read_codes

HARNESS = Path(__file__).with_name("crash_harness.py")


def sealing_path(out: Path) -> Path:
    return out.with_name(out.name + ".sealing")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 images and an uninterrupted reference cache, batch size 4."""
    from pipeline.activations import ExtractConfig

    root = tmp_path_factory.mktemp("seal")
    folder = make_folder(root / "images", n_per_class=8)
    config = ExtractConfig(model=TINY_MODEL, random_init=True, img_size=64, batch_size=4, workers=0)
    return folder, config, extract(from_folder(folder), config, out=root / "ref.h5", progress=False).path


# -1000: the copy that is sealed cannot be written; 1000: the seal's metadata does not fit
@pytest.mark.parametrize("room", [-1000, 1000], ids=["copy-fails", "1kB"])
def test_a_full_disk_at_the_seal_keeps_every_row_and_the_next_run_resumes(tmp_path, corpus, room):
    folder, config, reference = corpus
    out = tmp_path / "c.h5"
    args = ["extract", "--images", str(folder), "--model", TINY_MODEL, "--random-init", "--img-size", "64",
            "--workers", "0", "--batch-size", "4", "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(HARNESS.parent.parent), "FSIZE_AT_SEAL": str(room)}
    child = subprocess.run([sys.executable, str(HARNESS), *args], env=env, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 1, child.stderr
    assert f"writing {partial_path(out)} stopped: the file size limit was reached. Rows committed so far are kept" \
        in child.stderr
    assert "Traceback" not in child.stderr
    assert partial_path(out).exists() and not out.exists() and not sealing_path(out).exists()

    resumed = extract(from_folder(folder), config, out=out, progress=False)
    assert resumed.forward_passes == 0  # every row was committed before the seal failed
    assert not partial_path(out).exists() and not sealing_path(out).exists()
    ids, got = read_codes(out)
    ref_ids, want = read_codes(reference)
    assert ids == ref_ids and len(ids) == 16
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
