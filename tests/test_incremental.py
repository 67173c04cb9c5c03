"""Re-running extraction is cheap: only new images and new outputs are computed."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.errors import CacheError
from pipeline.inputs import from_folder

from .conftest import make_folder, read_codes



def _assert_same(path_a, path_b):
    ids_a, a = read_codes(path_a)
    ids_b, b = read_codes(path_b)
    assert ids_a == ids_b and list(a) == list(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_nothing_new_means_no_forward_pass(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    again = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert again.reused and again.forward_passes == 0


def test_only_new_images_are_extracted(tmp_path, tiny_config):
    folder = make_folder(tmp_path / "imgs", n_per_class=6)
    out = tmp_path / "c.h5"
    extract(from_folder(folder), tiny_config(), out=out, progress=False)
    more = make_folder(tmp_path / "more", n_per_class=9)
    for path in sorted((more).rglob("img0[6-8].*")):
        target = folder / path.parent.name / path.name
        target.write_bytes(path.read_bytes())
    result = extract(from_folder(folder), tiny_config(batch_size=32), out=out, progress=False)
    assert result.forward_passes == 1 and not result.reused
    with open_cache(out) as cache:
        update = cache.manifest["update"]
        assert update["computed_rows"] == 6 and update["reused_rows"] == 12 and update["added"] == 6
        assert cache.n_rows == 18
    fresh = extract(from_folder(folder), tiny_config(), out=tmp_path / "fresh.h5", progress=False)
    _assert_same(out, fresh.path)


def test_more_layers_and_poolings_compute_only_what_is_missing(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(layers=("3",)), out=out, progress=False)
    ran = []
    from pipeline.activations import LayerTap

    original = LayerTap.run

    def counting(self, images):
        ran.append([s.name for s in self.layers])
        return original(self, images)

    LayerTap.run = counting
    try:
        result = extract(from_folder(image_folder), tiny_config(layers=("1",), pools=("avg", "gem")), out=out, progress=False)
    finally:
        LayerTap.run = original
    assert result.forward_passes == 2 and ran == [["blocks.1"]] * 2  # blocks.3 is not recomputed
    with open_cache(out) as cache:
        assert cache.outputs == [("blocks.1", "avg"), ("blocks.1", "gem"), ("blocks.3", "avg")]
        assert cache.manifest["update"]["new_outputs"] == ["blocks.1/avg", "blocks.1/gem"]
        assert cache.manifest["update"]["computed_rows"] == 0
        assert cache.manifest["update"]["rows_with_new_outputs"] == 16
    fresh = extract(from_folder(image_folder), tiny_config(layers=("1", "3"), pools=("avg", "gem")),
                    out=tmp_path / "fresh.h5", progress=False)
    _, got = read_codes(out)
    _, want = read_codes(fresh.path)
    for key in got:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_new_shallow_layer_stops_the_pass_early(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(layers=("-1",)), out=out, progress=False)
    ran = []
    from pipeline.activations import LayerTap

    original = LayerTap.run
    LayerTap.run = lambda self, images: ran.append([s.name for s in self.layers]) or original(self, images)
    try:
        extract(from_folder(image_folder), tiny_config(layers=("0",)), out=out, progress=False)
    finally:
        LayerTap.run = original
    assert ran == [["blocks.0"]] * 2


def test_removed_images_are_reported_hidden_and_reused_when_back(image_folder, tiny_config, tmp_path, caplog):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    gone = image_folder / "benign" / "img03.png"
    saved = gone.read_bytes()
    gone.unlink()
    with caplog.at_level(logging.WARNING):
        result = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert result.forward_passes == 0 and not result.reused
    assert "1 image(s) in c.h5 are no longer in the input and are left out, e.g. benign/img03.png" in caplog.text
    with open_cache(out) as cache:
        assert cache.n_rows == 15 and "benign/img03.png" not in cache.ids
        assert cache.codes("pre_logits").shape == (15, 256) and len(cache.labels) == 15
        assert cache.manifest["update"]["removed"] == ["benign/img03.png"]
        assert cache.n_stored == 16
    gone.write_bytes(saved)
    back = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert back.forward_passes == 0
    with open_cache(out) as cache:
        assert cache.n_rows == 16 and cache.labels.tolist() == [0] * 8 + [1] * 8


def test_changed_bytes_with_the_same_mtime_are_recomputed(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    target = image_folder / "benign" / "img00.png"
    stat = target.stat()
    Image.new("RGB", (40, 48), (1, 2, 3)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert result.forward_passes == 1
    with open_cache(out) as cache:
        assert cache.manifest["update"]["changed"] == ["benign/img00.png"]
    fresh = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "fresh.h5", progress=False)
    _assert_same(out, fresh.path)


@pytest.mark.parametrize(
    "change, named",
    [(dict(img_size=48), "preprocessing"), (dict(model="test_efficientnet_gn"), "model, weights_sha256")],
)
def test_other_settings_into_the_same_file_are_refused(image_folder, tiny_config, tmp_path, change, named):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    with pytest.raises(CacheError, match=f"made with other settings \\(different {named}"):
        extract(from_folder(image_folder), tiny_config(**change), out=out, progress=False)


def test_labels_edited_in_the_input_update_without_a_forward_pass(image_csv, tiny_config, tmp_path):
    from pipeline.inputs import from_csv

    out = tmp_path / "c.h5"
    extract(from_csv(image_csv), tiny_config(), out=out, progress=False)
    text = image_csv.read_text().replace("patient0,", "patientX,")
    image_csv.write_text(text)
    result = extract(from_csv(image_csv), tiny_config(), out=out, progress=False)
    assert result.forward_passes == 0 and not result.reused
    with open_cache(out) as cache:
        assert cache.groups[0] == "patientX"


def test_a_rerun_only_test_decodes_images_it_has_not_decoded_before(image_folder, tiny_config, tmp_path, monkeypatch):
    import functools
    import importlib

    import pipeline.inputs.decode as decode
    from pipeline.activations import checking

    stage = importlib.import_module("pipeline.activations.extract")

    # What is decoded before extraction knows the existing cache is what the check reaches while the model is built
    # (tests/test_checking.py); here nothing runs ahead, so only what it knows then is counted.
    monkeypatch.setattr(stage, "CheckAhead", functools.partial(checking.CheckAhead, ahead=False))

    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    decoded = []
    original = decode.decode_rgb
    # the test decode reads the file's bytes; extraction itself decodes from the path (not counted)
    monkeypatch.setattr(decode, "decode_rgb", lambda data, **kw: (decoded.append(1) if isinstance(data, bytes) else None)
                        or original(data, **kw))
    again = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert again.reused and decoded == []

    Image.new("RGB", (40, 48), (9, 9, 9)).save(image_folder / "benign" / "new.png")
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert len(decoded) == 1  # only the new file is test-decoded before extraction
