"""How fast are DICOM and NIfTI inputs read and checked, next to the same pixels as 16-bit PNG files?

Writes N synthetic 512x512 CT slices (int16, intercept -1024, with a window) as
DICOM files, as one NIfTI volume (N slices) and as 16-bit PNGs, then times the
check every extraction runs first (hash the file, decode it) and a plain
decode of each. Prints images per second for each format, to set against the
forward pass (about 13 img/s for lite0 on 2 CPU cores, BENCHMARKS.md).

Usage: .venv/bin/python bench/medical.py [N]   (default 100; needs the dicom and nifti extras)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.medical_data

from pipeline.inputs import check_files  # noqa: E402
from pipeline.inputs.decode import PIL_DECODER  # noqa: E402
from pipeline.inputs.dicom import from_dicom  # noqa: E402
from pipeline.inputs.nifti import from_nifti  # noqa: E402
from pipeline.inputs.records import ImageRecord, ImageSet  # noqa: E402
from tests.medical_data import write_dicom, write_nifti  # noqa: E402

SIDE = 512


def slices(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.kron(rng.normal(0, 200, (16, 16)), np.ones((SIDE // 16, SIDE // 16)))
    return np.stack([base + rng.normal(0, 20, (SIDE, SIDE)) for _ in range(n)]).astype(np.int16)


def rate(label: str, images) -> None:
    records = images.records
    started = time.perf_counter()
    checks = check_files([r.path for r in records], workers=4, decoder=images.decoder,
                         frames=[r.frame for r in records])
    checked = time.perf_counter() - started
    assert not any(c.error for c in checks), [c.error for c in checks if c.error][:3]
    started = time.perf_counter()
    for r in records:
        images.decoder.decode(r.path, r.frame)
    decoded = time.perf_counter() - started
    n = len(records)
    print(f"{label:<28} {n:>5} images  check {n / checked:7.1f} img/s  decode {n / decoded:7.1f} img/s")


def main(n: int) -> None:
    hu = slices(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        for k in range(n):
            write_dicom(root / "dcm" / f"s{k:04d}.dcm", hu[k] + 1024, intercept=-1024.0, center=40, width=400)
            Image.fromarray((hu[k] + 1024).astype(np.uint16)).save(root / "png" / f"s{k:04d}.png")
        write_nifti(root / "vol.nii.gz", np.moveaxis(hu, 0, -1).astype(np.int16))
        pngs = sorted((root / "png").glob("*.png"))
        print(f"{n} slices of {SIDE}x{SIDE}, int16")
        rate("16-bit PNG (PIL)", ImageSet("png", "images", root, tuple(ImageRecord(p.name, p) for p in pngs), (),
                                          PIL_DECODER))
        rate("DICOM, file window", from_dicom(root / "dcm"))
        rate("NIfTI .nii.gz, percentiles", from_nifti([root / "vol.nii.gz"]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
