"""The extract stage end to end on tiny images and a tiny random-init model."""

import json

import h5py
import numpy as np
import pytest

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import FORMAT_VERSION, partial_path
from pipeline.errors import BadImageError, CacheError, InputError
from pipeline.inputs import from_csv, from_folder

from .conftest import read_codes



@pytest.fixture
def reference(image_folder, tiny_config, tmp_path):
    """An uninterrupted extraction with batch size 8."""
    result = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "ref.h5", progress=False)
    return result.path


def test_cache_holds_sorted_rows_labels_and_every_output(reference, image_folder):
    with open_cache(reference) as cache:
        assert cache.n_rows == 16
        assert list(cache.ids) == sorted(cache.ids)
        assert cache.class_names == ["benign", "malignant"]
        assert cache.labels.tolist() == [0] * 8 + [1] * 8
        assert cache.outputs == [(f"blocks.{i}", "avg") for i in range(5)] + [("pre_logits", "none")]
        assert cache.codes("blocks.2/avg").shape == (16, 32)
        assert cache.codes("pre_logits").dtype == np.float32
        assert np.isfinite(cache.codes("pre_logits")).all()
        assert cache.groups is None and cache.split is None


def test_manifest_records_what_produced_the_numbers(reference):
    with open_cache(reference) as cache:
        m = cache.manifest
    assert m["model"]["name"] == "test_efficientnet"
    assert m["model"]["weights"]["source"] == "random-init" and len(m["model"]["weights"]["sha256"]) == 64
    assert [l["name"] for l in m["layers"]][-1] == "pre_logits"
    assert m["layers"][0]["channels"] == 16 and m["layers"][0]["stride"] == 2
    pre = m["preprocessing"]
    assert pre["input_size"] == [3, 64, 64] and pre["interpolation"] and pre["mean"] and pre["std"]
    assert pre["colour"]["alpha"].startswith("composited")
    assert m["input"]["n_images"] == 16 and len(m["input"]["fingerprint"]) == 64
    assert m["runtime"]["device"].startswith("cpu") and m["runtime"]["packages"]["torch"]
    assert m["runtime"]["duration_s"] > 0 and m["created"]
    assert m["config"]["batch_size"] == 8


def test_file_fingerprints_are_stored_per_row(reference):
    with h5py.File(reference, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f["files/sha256"].shape == (16,) and len(f["files/sha256"][0]) == 64
        assert (f["files/size"][:] > 0).all()
        assert f["codes/blocks.0/avg"].fletcher32


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_rows_do_not_depend_on_batch_size(image_folder, tiny_config, tmp_path, reference, batch_size):
    ids_ref, ref = read_codes(reference)
    result = extract(from_folder(image_folder), tiny_config(batch_size=batch_size), out=tmp_path / "b.h5", progress=False)
    ids, codes = read_codes(result.path)
    assert ids == ids_ref
    for key in ref:
        np.testing.assert_allclose(codes[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_decoding_workers_give_the_same_codes(image_folder, tiny_config, tmp_path, reference):
    result = extract(from_folder(image_folder), tiny_config(workers=1), out=tmp_path / "w.h5", progress=False)
    _, ref = read_codes(reference)
    _, codes = read_codes(result.path)
    for key in ref:
        np.testing.assert_array_equal(codes[key], ref[key])


def test_same_settings_reuse_the_cache_without_a_forward_pass(image_folder, tiny_config, tmp_path):
    first = extract(from_folder(image_folder), tiny_config(), cache_dir=tmp_path, progress=False)
    second = extract(from_folder(image_folder), tiny_config(), cache_dir=tmp_path, progress=False)
    assert first.forward_passes == 2 and not first.reused
    assert second.reused and second.forward_passes == 0 and second.path == first.path
    assert first.path.parent == tmp_path and first.path.name.startswith("images-test_efficientnet-")


@pytest.mark.parametrize(
    "change",
    [dict(img_size=48), dict(random_init=False, weights="W"), dict(model="test_efficientnet_gn")],
    ids=["preprocessing", "weights", "model"],
)
def test_any_setting_change_gives_another_default_path(image_folder, tiny_config, tmp_path, tiny_model, change):
    import torch

    if "weights" in change:
        state = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_model.module.state_dict().items()}
        torch.save(state, tmp_path / "w.pth")
        change = {**change, "weights": str(tmp_path / "w.pth")}
    base = extract(from_folder(image_folder), tiny_config(), cache_dir=tmp_path, progress=False)
    other = extract(from_folder(image_folder), tiny_config(**change), cache_dir=tmp_path, progress=False)
    assert other.path != base.path and not other.reused and other.forward_passes == 2


def test_out_path_with_other_contents_is_refused(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    with pytest.raises(CacheError, match=r"already holds a cache made with other settings \(different preprocessing\)"):
        extract(from_folder(image_folder), tiny_config(img_size=48), out=out, progress=False)
    other = tmp_path / "notes.h5"
    other.write_text("my notes")
    with pytest.raises(CacheError, match="exists but is not a finished layerprobe cache"):
        extract(from_folder(image_folder), tiny_config(), out=other, progress=False)
    assert other.read_text() == "my notes"


def test_bad_images_stop_before_anything_is_written(image_folder, tiny_config, tmp_path):
    (image_folder / "benign" / "zz_empty.png").write_bytes(b"")
    (image_folder / "malignant" / "zz_text.jpg").write_text("not an image")
    out = tmp_path / "c.h5"
    with pytest.raises(BadImageError, match=r"2 image\(s\) cannot be decoded: .*zz_empty.png: empty file.*zz_text.jpg") as info:
        extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert "--on-bad-image skip" in str(info.value)
    assert not out.exists() and not partial_path(out).exists()


def test_skip_policy_lists_bad_images_and_keeps_rows_aligned(image_folder, tiny_config, tmp_path, reference):
    (image_folder / "benign" / "zz_empty.png").write_bytes(b"")
    result = extract(from_folder(image_folder), tiny_config(on_bad_image="skip"), out=tmp_path / "s.h5", progress=False)
    assert [s["id"] for s in result.skipped] == ["benign/zz_empty.png"]
    with open_cache(result.path) as cache:
        assert cache.manifest["input"]["skipped"][0]["reason"].startswith("empty file")
        assert "benign/zz_empty.png" not in cache.ids
        assert cache.labels.tolist() == [0] * 8 + [1] * 8
        codes = cache.codes("pre_logits")
    _, ref = read_codes(reference)
    np.testing.assert_array_equal(codes, ref["pre_logits/none"])


def test_csv_groups_and_split_are_stored(image_csv, tiny_config, tmp_path):
    result = extract(from_csv(image_csv), tiny_config(layers=("-1",)), out=tmp_path / "c.h5", progress=False)
    with open_cache(result.path) as cache:
        assert cache.groups[:3].tolist() == ["patient0", "patient0", "patient1"]
        assert set(cache.split) == {"train", "test"}
        assert cache.outputs == [("blocks.4", "avg")]


def test_limit_takes_a_stratified_subset(image_folder, tiny_config, tmp_path):
    result = extract(from_folder(image_folder), tiny_config(limit=6), out=tmp_path / "l.h5", progress=False)
    with open_cache(result.path) as cache:
        assert cache.n_rows == 6 and sorted(cache.labels.tolist()) == [0, 0, 0, 1, 1, 1]
        assert cache.manifest["input"]["limit"] == 6


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(CacheError, match="does not exist; create it with `layerprobe extract`"):
        open_cache(tmp_path / "none.h5")
    (tmp_path / "x.h5").write_text("text")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        open_cache(tmp_path / "x.h5")
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f.attrs["manifest"] = json.dumps({})
    with pytest.raises(CacheError, match="not a layerprobe activation cache"):
        open_cache(tmp_path / "y.h5")


def test_unknown_output_names_list_the_stored_ones(reference):
    with open_cache(reference) as cache:
        with pytest.raises(CacheError, match=r"layer 'blocks.9' is not in ref.h5; it holds blocks.0/avg"):
            cache.codes("blocks.9")
        with pytest.raises(CacheError, match=r"has no pooling 'gem'"):
            cache.codes("blocks.0", "gem")


def test_no_input_source_at_all_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        from_folder(tmp_path / "nothing")
