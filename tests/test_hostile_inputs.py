"""Hostile or unlucky inputs give one-line errors naming the file, never wrong numbers or tracebacks."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.activations import extract
from pipeline.errors import BadImageError, InputError
from pipeline.inputs import UndecodableImage, check_file, decode_rgb, from_csv, from_folder

from .conftest import make_folder


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


def test_a_latin1_csv_is_one_line_naming_the_file_and_the_fix(image_folder, tmp_path):
    table = tmp_path / "table.csv"
    first = sorted(p for p in image_folder.rglob("*.png"))[0]
    table.write_bytes(f"path,label\n{first.relative_to(tmp_path).as_posix()},b\u00e9nin\n".encode("latin-1"))
    with pytest.raises(InputError) as error:
        from_csv(table)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{table} is not UTF-8 text (byte 0xe9 on line 2 cannot be decoded); "
                              "save the table as UTF-8")


def test_a_csv_alias_of_another_row_is_refused_naming_both(image_folder, tmp_path):
    table = tmp_path / "table.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerow(["images/benign/img00.png", "benign"])
        writer.writerow(["images/malignant/img00.png", "malignant"])
        writer.writerow(["images/benign/../benign/img00.png", "malignant"])
    with pytest.raises(InputError, match=r"rows 'images/benign/img00\.png' and 'images/benign/\.\./benign/img00\.png' "
                                         r"are the same file \('.*/images/benign/img00\.png'\); list each image once"):
        from_csv(table)


def test_a_symlink_to_another_image_of_the_folder_is_an_alias(image_folder):
    (image_folder / "malignant" / "copy.png").symlink_to(image_folder / "benign" / "img00.png")
    with pytest.raises(InputError, match=r"rows 'benign/img00\.png' and 'malignant/copy\.png' are the same file"):
        from_folder(image_folder)


def test_dangling_and_looping_symlinks_among_the_images_are_named(image_folder):
    (image_folder / "benign" / "gone.png").symlink_to(image_folder / "benign" / "nothere.png")
    (image_folder / "benign" / "self.png").symlink_to(image_folder / "benign" / "self.png")
    (image_folder / "malignant" / "again").symlink_to(image_folder / "malignant")
    with pytest.raises(InputError) as error:
        from_folder(image_folder)
    message = str(error.value)
    assert message.startswith("3 problem(s) in the input table of 'images':")
    assert f"{str(image_folder / 'benign' / 'gone.png')!r} is a dangling symlink (its target " in message
    assert f"{str(image_folder / 'benign' / 'self.png')!r} is a symlink loop; remove it" in message
    assert f"{str(image_folder / 'malignant' / 'again')!r} is a folder symlink leading to " in message


def test_a_followed_folder_symlink_adds_its_images(image_folder, tmp_path):
    extra = make_folder(tmp_path / "extra", n_per_class=2, seed=5)
    (image_folder / "benign" / "more").symlink_to(extra / "benign")
    ids = [r.id for r in from_folder(image_folder).records]
    assert ids.count("benign/more/img00.png") == 1 and len(ids) == 16 + 2


def test_a_dangling_symlink_in_a_csv_is_named(image_folder, tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothere.png")
    table = tmp_path / "table.csv"
    table.write_text("path,label\ngone.png,a\nimages/benign/img00.png,b\n")
    with pytest.raises(InputError, match=r"'gone\.png': file '.*gone\.png' is a dangling symlink \(its target "):
        from_csv(table)


def test_predict_names_a_dangling_symlink_among_loose_images(tmp_path):
    from pipeline.predict import images_from_paths

    folder = tmp_path / "new"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "b.png").symlink_to(folder / "gone.png")
    with pytest.raises(InputError, match=r"1 problem\(s\) in '.*new': '.*b\.png' is a dangling symlink"):
        images_from_paths([folder])
    (folder / "b.png").unlink()
    assert [r.id for r in images_from_paths([folder]).records] == ["a.png"]
