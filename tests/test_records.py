"""Image sets from folders, CSV tables and the bundled data; table problems reported at once."""

import pytest

from pipeline.errors import InputError
from pipeline.inputs import from_csv, from_folder, stratified_subset


def test_folder_gives_sorted_ids_relative_to_root(image_folder):
    images = from_folder(image_folder)
    ids = [r.id for r in images.records]
    assert ids == sorted(ids)
    assert ids[0] == "benign/img00.png"
    assert images.class_names == ("benign", "malignant")
    assert images.label_indices()[:1] == [0] and images.label_indices()[-1] == 1


def test_csv_reads_groups_and_split_relative_to_the_table(image_csv):
    images = from_csv(image_csv)
    assert len(images) == 16
    assert images.has_groups and images.has_split
    first = images.records[0]
    assert first.id == "images/benign/img00.png" and first.group == "patient0" and first.split == "test"
    assert first.path.is_file()


def test_csv_without_label_column_is_unlabelled(tmp_path, image_folder):
    table = tmp_path / "t.csv"
    table.write_text("path\n" + "\n".join(str(p) for p in sorted(image_folder.rglob("*.png"))) + "\n")
    images = from_csv(table)
    assert not images.has_labels and set(images.label_indices()) == {-1}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no images found in class sub-folders"),
    ],
    ids=["missing", "empty"],
)
def test_folder_errors(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        from_folder(make(tmp_path))


def test_loose_images_are_explained(tmp_path, image_folder):
    loose = tmp_path / "loose"
    loose.mkdir()
    (image_folder / "benign" / "img00.png").rename(loose / "a.png")
    with pytest.raises(InputError, match=r"found 1 image\(s\) directly in it"):
        from_folder(loose)


def test_one_class_only_is_refused(image_folder):
    import shutil

    shutil.rmtree(image_folder / "malignant")
    with pytest.raises(InputError, match=r"only one class \('benign'\).*at least two"):
        from_folder(image_folder)


def test_every_table_problem_is_reported_at_once(tmp_path, image_folder):
    table = tmp_path / "t.csv"
    table.write_text(
        "path,label\n"
        "images/benign/img00.png,benign\n"
        "images/benign/img00.png,benign\n"  # duplicate id
        "images/benign/nothere.png,benign\n"  # missing file
        "images/benign/img01.jpg,\n"  # empty label
        "images/malignant/img00.png,Malignant\n"
        "images/malignant/img01.jpg,malignant \n"  # spaces are stripped, so same as next
        "images/malignant/img02.png,MALIGNANT\n"
    )
    with pytest.raises(InputError) as info:
        from_csv(table)
    text = str(info.value)
    assert "4 problem(s)" in text
    assert "duplicate id 'images/benign/img00.png'" in text
    assert "nothere.png' does not exist" in text
    assert "line 5: empty label" in text
    assert "differ only by case or spaces" in text and "'MALIGNANT'" in text


def test_csv_needs_a_path_column(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("file,label\na.png,x\n")
    with pytest.raises(InputError, match=r"found columns \['file', 'label'\], but a 'path' column is required"):
        from_csv(table)


def test_missing_csv(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        from_csv(tmp_path / "nope.csv")


def test_stratified_subset_is_seeded_balanced_and_sorted(image_folder, seed):
    images = from_folder(image_folder)
    a = stratified_subset(images, 8, seed)
    b = stratified_subset(images, 8, seed)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert [r.id for r in a.records] == sorted(r.id for r in a.records)
    assert sorted(a.label_indices()) == [0] * 4 + [1] * 4


def test_subset_smaller_than_classes_is_refused(image_folder):
    with pytest.raises(InputError, match="smaller than the number of classes"):
        stratified_subset(from_folder(image_folder), 1)
