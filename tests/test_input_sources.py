"""Input sources as one registry: chosen by name (extract) or by the paths given (predict)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.inputs import SOURCES, from_csv, from_folder, get_source, load_input
from pipeline.inputs.sources import source_for_paths


def test_the_registry_lists_every_source_and_refuses_unknown_names():
    assert list(SOURCES) == ["dicom", "nifti", "csv", "folder", "loose_folder", "files", "dataset"]
    with pytest.raises(InputError, match=r"unknown input source 'jpegxl'; available: dicom, nifti, csv, folder, "
                                         r"loose_folder, files, dataset"):
        get_source("jpegxl")


def test_paths_are_claimed_by_the_first_source_that_reads_them(image_folder, image_csv, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    (image_folder / "benign" / "img00.png").rename(loose / "a.png")
    files = sorted((image_folder / "malignant").glob("*.png"))[:2]
    claimed = {name: source_for_paths(paths)[0].name for name, paths in
               (("table", [image_csv]), ("classes", [image_folder]), ("loose", [loose]), ("files", files))}
    assert claimed == {"table": "csv", "classes": "folder", "loose": "loose_folder", "files": "files"}
    assert [r.id for r in load_input("loose_folder", loose).records] == ["a.png"]
    assert source_for_paths(files)[1] == files


def test_named_sources_load_what_their_functions_load(image_folder, image_csv):
    assert load_input("folder", image_folder).records == from_folder(image_folder).records
    assert load_input("csv", image_csv).records == from_csv(image_csv).records
    with pytest.raises(InputError, match=r"unknown bundled data set 'nope'; available: br35h"):
        load_input("dataset", "nope")


def test_extract_maps_each_option_onto_its_source(image_folder, tmp_path):
    result = CliRunner().invoke(main, ["extract", "--images", str(image_folder), "--csv", "t.csv"])
    assert result.exit_code == 1
    assert result.output == ("Error: pass exactly one input source: --images DIR, --csv FILE, --dataset br35h, "
                             "--dicom PATH or --nifti CSV (got --images and --csv)\n")
    result = CliRunner().invoke(main, ["extract", "--images", str(image_folder), "--window", "brain",
                                       "--slice-step", "2"])
    assert result.exit_code == 1
    assert result.output == "Error: --window and --slice-step do not apply to --images; only to --dicom or --nifti\n"
