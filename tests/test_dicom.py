"""DICOM input: windowing by hand, MONOCHROME1, frames, groups, real files from pydicom's wheel, privacy."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("pydicom")

from pipeline.errors import InputError  # noqa: E402
from pipeline.inputs import UndecodableImage, check_file, load_input  # noqa: E402
from pipeline.inputs.dicom import DicomDecoder, from_dicom  # noqa: E402
from pipeline.inputs.sources import source_for_paths  # noqa: E402
from pipeline.inputs.windows import PRESETS, Window, apply_window, parse_window  # noqa: E402
from pipeline.probes.splits import make_folds  # noqa: E402
from tests.medical_data import pydicom_file, write_dicom  # noqa: E402

# stored values -> HU with slope 2, intercept -100: -200, -100, 0, 20, 40, 60, 100, 1900
RAW = np.array([[-50, 0, 50, 60], [70, 80, 100, 1000]])
# Window 40/80 by hand: x <= 0 -> 0, x > 79 -> 255, else ((x - 39.5) / 79 + 0.5) * 255 rounded:
# 20 -> 64.56 -> 65, 40 -> 129.11 -> 129, 60 -> 193.67 -> 194
BRAIN = np.array([[0, 0, 0, 65], [129, 194, 255, 255]], dtype=np.uint8)


def grey(image) -> np.ndarray:
    pixels = np.asarray(image)
    assert image.mode == "RGB" and (pixels[..., 0] == pixels[..., 2]).all()
    return pixels[..., 0]


def test_modality_lut_then_the_files_first_window_equals_a_hand_computation(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW, slope=2.0, intercept=-100.0, center=[40, 400], width=[80, 2000])
    image, note = DicomDecoder().decode(path)
    assert note is None
    assert grey(image).tolist() == BRAIN.tolist()


def test_presets_and_explicit_windows_override_the_file(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW, slope=2.0, intercept=-100.0, center=400, width=2000)
    assert PRESETS["brain"] == (40.0, 80.0) and PRESETS["lung"] == (-600.0, 1500.0)
    assert grey(DicomDecoder(parse_window("brain")).decode(path)[0]).tolist() == BRAIN.tolist()
    assert grey(DicomDecoder(parse_window("40,80")).decode(path)[0]).tolist() == BRAIN.tolist()
    # lung -600/1500: low -1349.5..high 149.5; HU 100 -> ((100 + 600.5) / 1499 + 0.5) * 255 = 246.67 -> 247
    assert grey(DicomDecoder(parse_window("lung")).decode(path)[0])[1, 2] == 247
    with pytest.raises(InputError, match=r"window 'chest' is neither a preset \(brain, lung, bone, soft-tissue\)"):
        parse_window("chest")
    with pytest.raises(InputError, match="window width must be at least 1, got 0"):
        parse_window("40,0")


def test_the_window_function_at_its_edges():
    # 1 -> ((1 - 39.5) / 79 + 0.5) * 255 = 3.23 -> 3; 78 -> 251.8 -> 252; above 79 -> 255
    assert apply_window(np.array([0.0, 1.0, 78.0, 79.01]), 40, 80).tolist() == [0, 3, 252, 255]
    assert apply_window(np.array([-1.0, 0.0, 1.0]), 0.5, 1).tolist() == [0, 0, 255]  # width 1: a threshold


def test_without_a_window_the_frame_min_max_is_used_and_noted(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.array([[10, 20], [30, 110]]), intercept=-10.0)
    image, note = DicomDecoder().decode(path)
    assert grey(image).tolist() == [[0, 26], [51, 255]]  # (x - 0) * 255 / 100, rounded
    assert note == "no window in the file: scaled from the frame's min..max (0..100)"


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    two = write_dicom(tmp_path / "m2.dcm", RAW, slope=2.0, intercept=-100.0, center=40, width=80)
    one = write_dicom(tmp_path / "m1.dcm", RAW, slope=2.0, intercept=-100.0, center=40, width=80,
                      photometric="MONOCHROME1")
    assert grey(DicomDecoder().decode(one)[0]).tolist() == (255 - BRAIN).tolist()
    assert grey(DicomDecoder().decode(two)[0]).tolist() == BRAIN.tolist()


def test_unsigned_8_bit_data(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.array([[0, 128], [200, 255]]), bits=8, signed=False)
    assert grey(DicomDecoder().decode(path)[0]).tolist() == [[0, 128], [200, 255]]


def test_a_multi_frame_file_gives_one_row_per_frame(tmp_path):
    frames = np.stack([np.full((4, 4), v) for v in (0, 50, 100)])
    write_dicom(tmp_path / "in" / "cine.dcm", frames, center=50, width=101)
    images = from_dicom(tmp_path / "in")
    assert [(r.id, r.frame) for r in images.records] == [("cine.dcm#frame=0", 0), ("cine.dcm#frame=1", 1),
                                                         ("cine.dcm#frame=2", 2)]
    decoded = [grey(images.decoder.decode(r.path, r.frame)[0])[2, 2] for r in images.records]
    # window 50/101: 0 -> ((0 - 49.5) / 100 + 0.5) * 255 = 1.3 -> 1; 50 -> 128.8 -> 129; 100 > 99.5 -> 255
    assert decoded == [1, 129, 255]
    assert len(from_dicom([pydicom_file("SC_rgb_rle_2frame.dcm")]).records) == 2  # a real two-frame file


def test_real_files_from_pydicoms_wheel_decode_as_computed_by_hand():
    import pydicom

    ct = pydicom_file("CT_small.dcm")  # MONOCHROME2, 128x128, slope 1, intercept -1024, no window
    image, note = DicomDecoder().decode(ct)
    hu = pydicom.dcmread(ct).pixel_array.astype(np.float64) - 1024.0
    expected = np.clip(np.rint((hu - hu.min()) * 255.0 / (hu.max() - hu.min())), 0, 255)
    assert image.size == (128, 128) and grey(image).tolist() == expected.astype(np.uint8).tolist()
    assert note == f"no window in the file: scaled from the frame's min..max ({hu.min():g}..{hu.max():g})"
    mr, _ = DicomDecoder().decode(pydicom_file("MR_small.dcm"))
    rle, _ = DicomDecoder().decode(pydicom_file("MR_small_RLE.dcm"))  # RLE: compressed, decoded by pydicom
    assert mr.size == (64, 64) and np.array_equal(np.asarray(mr), np.asarray(rle))


def test_a_compressed_syntax_without_its_decoder_names_the_extra():
    path = pydicom_file("MR_small_jpeg_ls_lossless.dcm")
    if importlib.util.find_spec("pylibjpeg") is None:
        with pytest.raises(UndecodableImage, match=r"compressed \(JPEG-LS Lossless Image Compression\).*"
                                                    r"pip install 'layerprobe\[dicom-compressed\]'"):
            DicomDecoder().decode(path)
    else:  # with the extra installed it decodes like the uncompressed original
        original = DicomDecoder().decode(pydicom_file("MR_small.dcm"))[0]
        assert np.array_equal(np.asarray(DicomDecoder().decode(path)[0]), np.asarray(original))
    check = check_file(pydicom_file("rtplan.dcm"), decoder=DicomDecoder())
    assert check.error == "a DICOM file without pixel data (a report, plan or structure set?)"


def test_patients_become_groups_and_never_span_two_folds(tmp_path):
    for label in ("no", "yes"):
        for p in range(3):
            for k in range(3):
                write_dicom(tmp_path / label / f"{label}{p}" / f"{k}.dcm", RAW, patient=f"{label}-{p}")
    write_dicom(tmp_path / "no" / "anon.dcm", RAW, patient=None, study="1.2.3")
    images = load_input("dicom", tmp_path)
    assert images.class_names == ("no", "yes") and len(images) == 19
    groups = {r.id: r.group for r in images.records}
    assert groups["no/no0/1.dcm"] == "no-0" and groups["yes/yes2/0.dcm"] == "yes-2"
    assert groups["no/anon.dcm"] == "study:1.2.3"  # no PatientID: the study
    y = np.array(images.label_indices())
    g = np.array([r.group for r in images.records])
    folds = make_folds(y, g, 3, 2, 0, list(images.class_names), "groups")
    for test_fold in folds.test_fold:
        assert all(len(set(test_fold[g == name])) == 1 for name in set(g))


def test_a_csv_of_dicom_paths_keeps_its_labels_and_groups(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_dicom(tmp_path / f"{name}.dcm", RAW, patient="same")
    table = tmp_path / "scans.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "group"), ("a.dcm", "x", "g1"), ("b.dcm", "y", "g2"),
                                      ("c.dcm", "x", ""), ("d.dcm", "y", "")])
    images = load_input("dicom", table, window="bone")
    assert [(r.id, r.label, r.group) for r in images.records] == [
        ("a.dcm", "x", "g1"), ("b.dcm", "y", "g2"), ("c.dcm", "x", "same"), ("d.dcm", "y", "same")]
    assert images.decoder == DicomDecoder(Window("preset", 400.0, 1800.0, name="bone"))
    assert source_for_paths([table])[0].name == "dicom"
    assert source_for_paths([tmp_path])[0].name == "dicom"
    with pytest.raises(InputError, match="option 'window' does not apply to csv input; it applies to dicom and "
                                         "nifti input"):
        load_input("csv", table, window="bone")


def test_extract_records_the_window_copies_no_header_field_and_refuses_another_window(tmp_path, tiny_config):
    from pipeline.activations import extract
    from pipeline.cache import open_cache, verify_cache
    from pipeline.errors import CacheError

    write_dicom(tmp_path / "in" / "a" / "cine.dcm", np.stack([RAW, RAW + 5]), patient="PX", center=40, width=80,
                PatientName="Doe^Jane", InstitutionName="St Example Hospital", PatientBirthDate="19700101")
    write_dicom(tmp_path / "in" / "b" / "one.dcm", RAW, patient="PY", PatientName="Roe^Richard")
    out = tmp_path / "c.h5"
    extract(from_dicom(tmp_path / "in"), tiny_config(), out=out, progress=False)
    with open_cache(out) as cache:
        manifest = cache.manifest
        assert list(cache.ids) == ["a/cine.dcm#frame=0", "a/cine.dcm#frame=1", "b/one.dcm"]
        assert list(cache.groups) == ["PX", "PX", "PY"]
    colour = manifest["preprocessing"]["colour"]
    assert colour["decoder"] == "dicom" and colour["window"] == {"mode": "file"}
    assert manifest["input"]["notes"] == [
        {"id": "b/one.dcm", "note": "no window in the file: scaled from the frame's min..max (-50..1000)"}]
    data = out.read_bytes()
    for secret in (b"Doe^Jane", b"Roe^Richard", b"St Example Hospital", b"19700101"):
        assert secret not in data
    assert verify_cache(out).ok
    with pytest.raises(CacheError, match=r"other settings \(different preprocessing\)"):
        extract(from_dicom(tmp_path / "in", window="brain"), tiny_config(), out=out, progress=False)
    assert json.dumps(manifest).count("PX") == 0  # groups live in the group column only
