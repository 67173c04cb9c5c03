"""Near-duplicates from codes: exact search, clusters, reports, storing groups, leakage."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import verify_cache
from pipeline.cli import main
from pipeline.duplicates import auto_threshold, clusters, leaked_rows, normalise, scan_cache, similar_pairs, store_clusters
from pipeline.errors import PipelineError
from pipeline.inputs import from_csv, from_folder


def _planted(seed, n=60, dim=32, copies=((3, 10), (10, 41), (20, 21))):
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(n, dim)).astype(np.float32)
    for source, target in copies:
        codes[target] = codes[source] + rng.normal(scale=0.02, size=dim)
    return codes


def _brute_force(codes, threshold):
    x = normalise(codes).astype(np.float64)
    s = x @ x.T
    i, j = np.nonzero(np.triu(s >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_blockwise_search_equals_brute_force(seed, block):
    codes = _planted(seed)
    pairs = similar_pairs(codes, 0.5, block=block)
    assert set(zip(pairs.i.tolist(), pairs.j.tolist())) == _brute_force(codes, 0.5)
    assert (pairs.i < pairs.j).all()
    x = normalise(codes).astype(np.float64)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_allclose(pairs.nearest, s.max(axis=1), atol=1e-5)


def test_the_block_shrinks_as_rows_grow_so_a_scan_holds_a_bounded_matrix(monkeypatch):
    from pipeline.duplicates import find, prints

    assert find.rows_per_block(16_384) == 1024 and find.rows_per_block(10) == 1024  # small sets: as before
    assert find.rows_per_block(1_000_000) == 16 and find.rows_per_block(10**12) == 1
    for rows in (20_000, 100_000, 1_000_000):
        assert find.rows_per_block(rows) * rows * 4 <= find.BLOCK_BYTES
    # With a tiny budget the scans walk a few rows at a time and find exactly what one block finds.
    codes = _planted(0)
    thumbs = np.random.default_rng(1).random((40, 2 * 1024)).astype(np.float32)
    thumbs[7] = thumbs[3]
    whole = similar_pairs(codes, 0.5), prints.print_pairs(thumbs)
    seen = []
    real = find.rows_per_block
    monkeypatch.setattr(find, "BLOCK_BYTES", 4 * 60 * 3)  # 3 rows of 60 at a time
    monkeypatch.setattr(prints, "rows_per_block", lambda n, block: seen.append(real(n, block)) or real(n, block))
    small = similar_pairs(codes, 0.5), prints.print_pairs(thumbs)
    assert seen and max(seen) == 4  # 40 fingerprint rows: 720 bytes // 160
    assert set(zip(small[0].i.tolist(), small[0].j.tolist())) == set(zip(whole[0].i.tolist(), whole[0].j.tolist()))
    np.testing.assert_allclose(small[0].nearest, whole[0].nearest, rtol=0, atol=3e-7)  # BLAS rounds by block shape
    assert (3, 7) in set(zip(small[1].i.tolist(), small[1].j.tolist()))
    np.testing.assert_array_equal(small[1].i, whole[1].i)
    np.testing.assert_array_equal(small[1].j, whole[1].j)


def test_planted_copies_are_found_and_chained_into_clusters(seed):
    codes = _planted(seed)
    pairs = similar_pairs(codes, 0.9)
    assert set(zip(pairs.i.tolist(), pairs.j.tolist())) == {(3, 10), (10, 41), (3, 41), (20, 21)}
    labels = clusters(len(codes), pairs.i, pairs.j)
    assert labels[3] == labels[10] == labels[41] and labels[20] == labels[21] and labels[3] != labels[20]
    assert len(np.unique(labels)) == 60 - 3
    assert labels[0] == 0  # numbered by first row: independent of scipy's internal order


def test_auto_threshold_finds_the_valley_and_respects_the_floor(seed):
    rng = np.random.default_rng(seed)
    nearest = np.concatenate([rng.normal(0.55, 0.05, 900), rng.normal(0.985, 0.005, 300)])
    assert 0.8 <= auto_threshold(nearest) < 0.97
    assert auto_threshold(rng.normal(0.3, 0.05, 500)) == 0.8


def test_bad_codes_and_thresholds_are_refused():
    with pytest.raises(PipelineError, match="NaN or infinite"):
        similar_pairs(np.array([[1.0, np.nan], [1.0, 2.0]]), 0.9)
    with pytest.raises(PipelineError, match="between -1 and 1"):
        similar_pairs(np.ones((3, 2)), 1.5)
    with pytest.raises(PipelineError, match="at least 2 rows"):
        similar_pairs(np.ones((1, 2)), 0.9)


def test_leaked_rows_are_those_with_a_duplicate_in_another_fold():
    cluster = np.array([0, 0, 1, 2, 2, 2])
    folds = np.array([0, 1, 0, 1, 1, 0])
    assert leaked_rows(cluster, folds).tolist() == [True, True, False, True, True, True]
    assert not leaked_rows(cluster, np.array([0, 0, 1, 1, 1, 1])).any()


@pytest.fixture
def cache_with_copies(tmp_path, image_folder, tiny_config):
    """The tiny image set plus exact copies: one within its class, one under the other class."""
    (image_folder / "benign" / "copy_of_00.png").write_bytes((image_folder / "benign" / "img00.png").read_bytes())
    (image_folder / "malignant" / "copy_of_01.jpg").write_bytes((image_folder / "benign" / "img01.jpg").read_bytes())
    return extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path


def test_scan_reports_copies_and_label_conflicts(cache_with_copies):
    report = scan_cache(cache_with_copies, threshold=0.999)
    found = {frozenset(report.ids[g].tolist()) for g in report.groups()}
    assert frozenset({"benign/img00.png", "benign/copy_of_00.png"}) in found
    assert frozenset({"benign/img01.jpg", "malignant/copy_of_01.jpg"}) in found
    conflicts = report.label_conflicts()
    assert len(conflicts) == 1 and sorted(conflicts[0]["labels"]) == ["benign", "malignant"]
    assert report.summary()["output"] == "pre_logits/none"


def test_split_crossings_are_reported(tmp_path, image_folder, tiny_config):
    (image_folder / "benign" / "copy.png").write_bytes((image_folder / "benign" / "img00.png").read_bytes())
    table = tmp_path / "t.csv"
    table.write_text("path,label,split\nimages/benign/img00.png,benign,train\nimages/benign/copy.png,benign,test\n"
                     "images/malignant/img00.png,malignant,train\nimages/malignant/img01.jpg,malignant,test\n"
                     "images/benign/img02.png,benign,test\n")
    path = extract(from_csv(table), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    crossings = scan_cache(path, threshold=0.999).split_crossings()
    assert crossings == [{"ids": ["images/benign/copy.png", "images/benign/img00.png"], "splits": ["test", "train"]}]


def test_storing_clusters_leaves_codes_untouched_and_the_cache_sound(cache_with_copies):
    with open_cache(cache_with_copies) as cache:
        before = {o: cache.codes(*o) for o in cache.outputs}
        key = cache.key
    report = scan_cache(cache_with_copies, threshold=0.999)
    store_clusters(report)
    with open_cache(cache_with_copies) as cache:
        assert cache.dup_cluster.tolist() == report.cluster.tolist()
        assert cache.manifest["columns"]["dup_cluster"]["threshold"] == 0.999
        assert cache.key == key
        for output, values in before.items():
            np.testing.assert_array_equal(cache.codes(*output), values)
    assert verify_cache(cache_with_copies).ok


def test_cli_reports_writes_pairs_and_stores(cache_with_copies):
    runner = CliRunner()
    result = runner.invoke(main, ["duplicates", str(cache_with_copies), "--threshold", "0.999"])
    assert result.exit_code == 0, result.output
    assert "compared   18 images by pre_logits/none, threshold 0.999 (given)" in result.stdout
    assert "same       benign/img01.jpg (benign), malignant/copy_of_01.jpg (malignant)" in result.stdout
    assert "conflicts  1 cluster(s) hold the same image under two labels" in result.stdout
    pairs_csv = cache_with_copies.with_suffix(".duplicates.csv")
    lines = pairs_csv.read_text().splitlines()
    assert lines[0] == "id_a,id_b,similarity,fingerprint_similarity,kind,label_a,label_b,cluster"
    assert len(lines) == 3 and all(",1.00000,both," in line for line in lines[1:])
    with open_cache(cache_with_copies) as cache:
        assert cache.dup_cluster is not None
    data = json.loads(runner.invoke(main, ["duplicates", str(cache_with_copies), "--json", "--no-store",
                                           "--threshold", "auto"]).stdout)
    assert data["threshold_source"] == "auto" and data["stored"] is False
    assert data["pair_kinds"]["both"] == 2 and data["label_conflicts"][0]["kind"] == "same image"
    bad = runner.invoke(main, ["duplicates", str(cache_with_copies), "--threshold", "2"])
    assert bad.exit_code == 2 and "not a cosine similarity" in bad.output


@pytest.mark.slow
def test_planted_duplicates_of_real_photos_are_found_without_false_pairs(tmp_path):
    """Real weights: a copy, a resized, a shifted, a re-compressed and a brightened photo are
    found at the default threshold, and no pair of distinct photos is."""
    import io

    from PIL import Image, ImageEnhance
    from skimage import data as photos

    from pipeline.activations import ExtractConfig

    def jpeg(image, quality):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    folder = tmp_path / "photos" / "all"
    folder.mkdir(parents=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "camera", "coins",
             "moon", "page", "brick", "grass", "gravel", "cell", "horse", "text", "clock"]
    base = {}
    for name in names:
        array = getattr(photos, name)()
        if array.dtype != np.uint8:
            array = (array.astype(float) / array.max() * 255).astype(np.uint8)
        base[name] = Image.fromarray(array).convert("RGB")
        base[name].save(folder / f"{name}.png")
    chelsea, coffee = base["chelsea"], base["coffee"]
    planted = {
        "copy": ("astronaut", base["astronaut"]),
        "resized": ("chelsea", chelsea.resize((chelsea.width * 3 // 4, chelsea.height * 3 // 4))),
        "shifted": ("coffee", coffee.crop((8, 8, coffee.width, coffee.height))),
        "recompressed": ("rocket", jpeg(jpeg(base["rocket"], 90), 80)),
        "brighter": ("camera", ImageEnhance.Brightness(base["camera"]).enhance(1.15)),
    }
    for name, (_, image) in planted.items():
        image.save(folder / f"{name}.png")
    (tmp_path / "photos" / "other").mkdir()
    Image.fromarray(photos.checkerboard()).save(tmp_path / "photos" / "other" / "checkerboard.png")
    cache = extract(from_folder(tmp_path / "photos"), ExtractConfig(), out=tmp_path / "p.h5", progress=False).path
    report = scan_cache(cache, threshold=0.9, view="code")
    assert report.threshold == 0.9 and report.output == "pre_logits/none"
    found = {tuple(sorted(report.ids[[i, j]].tolist())) for i, j in zip(report.pairs.i, report.pairs.j)}
    expected = {tuple(sorted([f"all/{name}.png", f"all/{source}.png"])) for name, (source, _) in planted.items()}
    assert found == expected, f"missed {expected - found}, false {found - expected}"
    both = scan_cache(cache)  # the defaults: fingerprints and codes, relative thresholds
    found = {tuple(sorted(both.ids[[i, j]].tolist())) for i, j in zip(both.pairs.i, both.pairs.j)}
    assert found == expected, f"missed {expected - found}, false {found - expected}"


def test_duplicates_on_a_missing_cache_leaves_nothing_behind(tmp_path):
    """A command that writes into a cache names a missing one before it locks anything (the lock would
    otherwise create the folder and a lock file)."""
    missing = tmp_path / "nowhere" / "c.h5"
    out = CliRunner().invoke(main, ["duplicates", str(missing)])
    assert out.exit_code != 0 and "does not exist; create it with `layerprobe extract`" in out.output
    assert not (tmp_path / "nowhere").exists()


def test_whole_similarity_of_pairs_is_the_whole_views_correlation():
    from pipeline.duplicates.prints import whole_similarity

    rng = np.random.default_rng(3)
    thumbs = rng.random((5, 2048)).astype(np.float32)
    thumbs[1, 1024:] = thumbs[0, 1024:] * 3 + 1  # the same whole thumbnail, another contrast
    thumbs[2, 1024:] = thumbs[0, 1024:].reshape(32, 32)[:, ::-1].ravel()  # its mirror image
    i, j = np.array([0, 0, 0]), np.array([1, 2, 3])
    plain = whole_similarity(thumbs, i, j, mirror=False)
    both = whole_similarity(thumbs, i, j, mirror=True)
    np.testing.assert_allclose(plain[0], 1.0, atol=1e-5)
    assert plain[1] < 0.2 and both[1] == pytest.approx(1.0, abs=1e-5)
    expected = np.corrcoef(thumbs[0, 1024:], thumbs[3, 1024:])[0, 1]
    assert plain[2] == pytest.approx(expected, abs=1e-5) and both[2] >= plain[2]
