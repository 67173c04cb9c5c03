"""The tasks of the advice panel (bench/advice.py) have the properties their answers rest on."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tests.panel_data import (
    PHOTOS,
    SIZE,
    TASKS,
    UPRIGHT,
    _crops_by_photo,
    _per_photo_labels,
    add_noise,
    colour_cast,
    faces,
    gaussian_blur,
    make_draws,
    make_split,
    shuffled_br35h,
    split_strata,
    write_samples,
)


def _counts(samples) -> Counter:
    return Counter((s.content, s.label) for s in samples)


@pytest.mark.parametrize("name", ["noise", "blur", "jpeg", "cast", "upside_down"])
def test_label_is_not_predictable_from_the_photo(name):
    samples = TASKS[name].make(48, 3)
    counts = _counts(samples)
    labels = sorted({s.label for s in samples})
    assert len(labels) == 2
    for content in {s.content for s in samples}:  # within every photo, the classes differ by at most one image
        assert abs(counts[(content, labels[0])] - counts[(content, labels[1])]) <= 1
    assert all(s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8 for s in samples)


def test_low_level_tasks_use_every_photo_equally():
    samples = TASKS["noise"].make(len(PHOTOS) * 4, 0)
    assert Counter(s.content for s in samples) == dict.fromkeys(PHOTOS, 4)


def test_the_changes_do_what_they_say():
    rng = np.random.default_rng(0)
    flat = np.full((SIZE, SIZE, 3), 128, np.uint8)
    noisy = add_noise(0.015)(flat, rng).astype(float)
    assert noisy.std() == pytest.approx(0.015 * 255, rel=0.05)
    edge = np.zeros((SIZE, SIZE, 3), np.uint8)
    edge[:, SIZE // 2:] = 255
    blurred = gaussian_blur(0.7)(edge, rng)
    assert 0 < blurred[0, SIZE // 2 - 1, 0] < 128 < blurred[0, SIZE // 2, 0] < 255
    warm = colour_cast(0.05)(flat, rng)
    assert warm[0, 0].tolist() == [134, 128, 122]


def test_jpeg_task_writes_its_quality(tmp_path):
    samples = TASKS["jpeg"].make(24, 0)
    table = write_samples(tmp_path, samples)
    lines = table.read_text().splitlines()
    assert lines[0] == "path,label,group" and len(lines) == 25
    for s, line in zip(samples, lines[1:]):
        path, label, _ = line.split(",")
        assert path.endswith(".jpg") and label == s.label
        with Image.open(tmp_path / path) as im:  # quantisation tables grow as quality falls
            q = np.mean(im.quantization[0])
        with Image.open(io.BytesIO(_jpeg(s.image, s.jpeg_quality))) as ref:
            assert q == np.mean(ref.quantization[0])
    assert {s.label: s.jpeg_quality for s in samples} == {"q90": 90, "q60": 60}


def _jpeg(image, quality) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_upside_down_differs_from_upright_only_by_the_flip():
    samples = TASKS["upside_down"].make(16, 1)
    rng = np.random.default_rng(1)  # the same draws: labels first, then the crops
    _per_photo_labels(UPRIGHT, 16, rng)
    crops = [crop for _, _, crop in _crops_by_photo(UPRIGHT, 16, rng, smallest=0.6)]
    assert Counter(s.label for s in samples) == {"upright": 8, "upside_down": 8}
    for s, crop in zip(samples, crops):
        assert np.array_equal(s.image, crop[::-1] if s.label == "upside_down" else crop)


def test_faces_train_and_test_never_share_a_source_image():
    train, test = faces(40, 0, "train"), faces(60, 1, "test")
    assert not {s.group for s in train} & {s.group for s in test}
    assert Counter(s.label for s in train) == {"face": 20, "not_face": 20}


def test_no_signal_labels_are_independent_of_the_tumour():
    samples = shuffled_br35h(40, 0)
    assert _counts(samples) == {(c, lab): 10 for c in ("no", "yes") for lab in ("a", "b")}
    first, second = split_strata(samples, 8)
    assert _counts(first) == {(c, lab): 2 for c in ("no", "yes") for lab in ("a", "b")}
    assert len(second) == 32 and not {s.group for s in first} & {s.group for s in second}


def test_train_and_test_crops_differ():
    train, test = make_split(TASKS["cast"], 12, 12, 0)
    assert not {s.image.tobytes() for s in train} & {s.image.tobytes() for s in test}


def test_training_draws_are_new_images_never_test_ones():
    trains, test = make_draws(TASKS["cast"], 12, 12, 0, 3)
    first, same_test = make_split(TASKS["cast"], 12, 12, 0)
    assert [s.image.tobytes() for s in trains[0]] == [s.image.tobytes() for s in first]
    assert [s.image.tobytes() for s in test] == [s.image.tobytes() for s in same_test]
    seen = [{s.image.tobytes() for s in part} for part in (*trains, test)]
    assert [len(part) for part in seen] == [12, 12, 12, 12]
    assert all(not a & b for i, a in enumerate(seen) for b in seen[i + 1:])
    assert all({s.label for s in part} == {"neutral", "warm"} for part in trains)


def test_no_signal_draws_share_no_slice_and_stay_balanced():
    trains, test = make_draws(TASKS["no_signal"], 8, 16, 0, 3)
    groups = [{s.group for s in part} for part in (*trains, test)]
    assert [len(g) for g in groups] == [8, 8, 8, 16]
    assert all(not a & b for i, a in enumerate(groups) for b in groups[i + 1:])
    assert all(_counts(part) == {(c, lab): 2 for c in ("no", "yes") for lab in ("a", "b")} for part in trains)


def test_faces_draws_come_from_training_sources_only():
    trains, test = make_draws(TASKS["faces"], 8, 8, 0, 2)
    test_sources = {s.content for s in test}
    assert all(not {s.content for s in part} & test_sources for part in trains)


@pytest.mark.slow
def test_panel_upside_down_end_to_end(tmp_path, monkeypatch):
    """Real weights: on upright vs upside-down crops the advice picks a top output, one the held-out set ties."""
    import importlib.util
    import sys
    from pathlib import Path

    from pipeline.activations import ExtractConfig

    spec = importlib.util.spec_from_file_location("bench_advice", Path(__file__).parents[1] / "bench" / "advice.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_advice", bench)  # its dataclasses look themselves up there
    spec.loader.exec_module(bench)
    config = ExtractConfig(layers=("all",), img_size=SIZE, device="cpu")
    r = bench.run_task("upside_down", tmp_path, 40, 40, 0, 2, config)
    auc = r.advice["roc_auc"]
    assert r.held_out.outputs == ["blocks.0/avg", "blocks.1/avg", "blocks.2/avg", "blocks.4/avg", "blocks.6/avg",
                                  "pre_logits/none"]
    assert r.held_out.best("roc_auc") in ("blocks.6/avg", "pre_logits/none")
    assert auc["layer"] in ("blocks.6/avg", "pre_logits/none") and auc["layer"] in r.held_out.tied["roc_auc"]
    assert "blocks.0/avg" not in auc["tied"] and auc["different"] in ("similar", "uncertain")
    assert bench.agreement(auc["different"], bench.truth_verdict(r)) != "NO"
