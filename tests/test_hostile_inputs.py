"""Hostile or unlucky inputs give one-line errors naming the file, never wrong numbers or tracebacks."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.activations import extract
from pipeline.cache import partial_path
from pipeline.errors import BadImageError, InputError
from pipeline.inputs import UndecodableImage, check_file, decode_rgb, from_csv, from_folder

from .conftest import TINY_MODEL, make_folder, read_codes


def _float_tiff(path: Path, bad=None) -> Path:
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    if bad is not None:
        values[3, 4] = bad
    Image.fromarray(values, mode="F").save(path, format="TIFF")
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_a_float_tiff_with_a_non_finite_pixel_is_refused_not_black(tmp_path, bad):
    path = _float_tiff(tmp_path / "scan.tif", bad)
    with pytest.raises(UndecodableImage, match=r"(1 NaN and 0|0 NaN and 1) infinite pixel\(s\) of 64 in a float image"):
        decode_rgb(path)
    assert "float image" in check_file(path).error


def test_a_finite_float_tiff_still_scales_min_to_max(tmp_path):
    grey = np.asarray(decode_rgb(_float_tiff(tmp_path / "scan.tif")))[..., 0]
    assert grey[0, 0] == 0 and grey[7, 7] == 255 and grey[4, 0] == round(32 / 63 * 255)


def test_extract_names_the_float_image_with_nan(tmp_path, tiny_config):
    folder = make_folder(tmp_path / "images", n_per_class=3)
    _float_tiff(folder / "benign" / "scan.tif", np.nan)
    with pytest.raises(BadImageError, match=r"benign/scan.tif: 1 NaN and 0 infinite pixel"):
        extract(from_folder(folder), tiny_config(), out=tmp_path / "c.h5", progress=False)
