"""NIfTI input: volumes cut into slices, canonical orientation, windowing, the volume as the group."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("nibabel")

from pipeline.errors import InputError  # noqa: E402
from pipeline.inputs import check_file, load_input  # noqa: E402
from pipeline.inputs.nifti import NiftiDecoder, from_nifti  # noqa: E402
from pipeline.inputs.sources import source_for_paths  # noqa: E402
from pipeline.inputs.windows import Window  # noqa: E402
from pipeline.probes.splits import make_folds  # noqa: E402
from tests.medical_data import nibabel_file, write_nifti  # noqa: E402


def grey(image) -> np.ndarray:
    return np.asarray(image)[..., 0]


def table(path, rows):
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label")] + rows)
    return path


def test_slices_along_an_axis_every_kth_or_a_range(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", np.zeros((6, 5, 4), np.float32))
    ids = lambda images: [r.id for r in images.records]  # noqa: E731
    assert ids(from_nifti([tmp_path / "v.nii.gz"])) == [f"v.nii.gz#slice={k}" for k in range(4)]
    assert ids(from_nifti([tmp_path / "v.nii.gz"], axis=0, step=2)) == ["v.nii.gz#slice=0", "v.nii.gz#slice=2",
                                                                        "v.nii.gz#slice=4"]
    assert ids(from_nifti([tmp_path / "v.nii.gz"], slice_range="1:3")) == ["v.nii.gz#slice=1", "v.nii.gz#slice=2"]
    assert {r.group for r in from_nifti([tmp_path / "v.nii.gz"]).records} == {"volume:v.nii.gz"}
    with pytest.raises(InputError, match=r"slice range '3:1' is not START:STOP"):
        from_nifti([tmp_path / "v.nii.gz"], slice_range="3:1")
    with pytest.raises(InputError, match="slice axis 3 is out of range"):
        from_nifti([tmp_path / "v.nii.gz"], axis=3)


def test_a_slice_is_the_canonical_volume_rotated_and_scaled_by_hand(tmp_path):
    volume = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)  # 0..23
    write_nifti(tmp_path / "ras.nii", volume)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored left->right flipped (LAS): canonical is volume[::-1]
    write_nifti(tmp_path / "las.nii", volume[::-1].copy(), flipped)
    # percentiles 0..100 of 0..23: x * 255 / 23; slice 1 of axis 2 is volume[:, :, 1], rotated 90 degrees
    expected = np.rint(np.rot90(volume[:, :, 1]) * 255 / 23).astype(np.uint8)
    decoder = NiftiDecoder(2, Window("percentile", low=0, high=100))
    assert grey(decoder.decode(tmp_path / "ras.nii", 1)[0]).tolist() == expected.tolist()
    assert grey(decoder.decode(tmp_path / "las.nii", 1)[0]).tolist() == expected.tolist()
    # window 12,10 by hand: x <= 7 -> 0, x > 16 -> 255, else ((x - 11.5) / 9 + 0.5) * 255
    windowed = grey(NiftiDecoder(0, Window("explicit", 12, 10)).decode(tmp_path / "ras.nii", 1)[0])
    by_hand = [[0 if x <= 7 else 255 if x > 16 else round(((x - 11.5) / 9 + 0.5) * 255) for x in row]
               for row in np.rot90(volume[1])]
    assert windowed.tolist() == by_hand


def test_percentiles_come_from_the_whole_volume_and_are_recorded(tmp_path):
    volume = np.zeros((2, 2, 2), np.float32)
    volume[:, :, 1] = 100.0
    write_nifti(tmp_path / "v.nii", volume)
    images = from_nifti([tmp_path / "v.nii"], percentiles="0,100")
    assert grey(images.decoder.decode(tmp_path / "v.nii", 0)[0]).max() == 0  # the volume spans 0..100
    assert images.decoder.policy()["window"] == {"mode": "percentile", "low": 0.0, "high": 100.0}
    assert from_nifti([tmp_path / "v.nii"]).decoder.policy()["window"] == {"mode": "percentile", "low": 0.5,
                                                                          "high": 99.5}
    with pytest.raises(InputError, match="give a window or percentiles for NIfTI intensities, not both"):
        from_nifti([tmp_path / "v.nii"], window="brain", percentiles="1,99")


def test_labels_per_volume_from_a_csv_and_a_volume_never_spans_two_folds(tmp_path):
    rows = []
    for v in range(8):
        write_nifti(tmp_path / f"v{v}.nii.gz", np.random.default_rng(v).normal(size=(4, 4, 5)).astype(np.float32))
        rows.append((f"v{v}.nii.gz", "yes" if v % 2 else "no"))
    images = load_input("nifti", table(tmp_path / "vols.csv", rows), step=2)
    assert images.class_names == ("no", "yes") and len(images) == 8 * 3
    assert [(r.id, r.label) for r in images.records[:3]] == [("v0.nii.gz#slice=0", "no"),
                                                             ("v0.nii.gz#slice=2", "no"), ("v0.nii.gz#slice=4", "no")]
    g = np.array([r.group for r in images.records])
    folds = make_folds(np.array(images.label_indices()), g, 4, 1, 0, list(images.class_names), "groups")
    assert all(len(set(folds.test_fold[0][g == name])) == 1 for name in set(g))
    assert source_for_paths([tmp_path / "vols.csv"])[0].name == "nifti"


def test_real_volumes_from_nibabels_wheel():
    anatomical = from_nifti([nibabel_file("anatomical.nii")])  # (33, 41, 25), stored LAS
    assert len(anatomical) == 25
    first = anatomical.records[0]
    image, _ = anatomical.decoder.decode(first.path, first.frame)
    assert image.size == (33, 41) and image.mode == "RGB"
    assert len(from_nifti([nibabel_file("standard.nii.gz")], axis=0)) == 4
    check = check_file(nibabel_file("functional.nii"), decoder=NiftiDecoder(), frame=0)  # 4-D
    assert "a 4-D image (shape (17, 21, 3, 20)); layerprobe slices 3-D volumes" in check.error
