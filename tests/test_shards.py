"""Sharded extraction and merge: shards in separate processes (and under torchrun) merge into the single run."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.activations import ExtractConfig, extract, rank_config, torchrun_rank
from pipeline.activations.loader import resolve_device
from pipeline.cache import merge_shards, merged_path, shard_path, verify_cache
from pipeline.cache.shards import shard_indices
from pipeline.cli import main
from pipeline.errors import CacheError, InputError, PipelineError
from pipeline.inputs import from_csv, from_folder

from .conftest import TINY_MODEL, TINY_SIZE, forge_manifest, make_folder, read_codes

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model=TINY_MODEL, random_init=True, img_size=TINY_SIZE, workers=0)
TINY_ARGS = ["--model", TINY_MODEL, "--random-init", "--img-size", str(TINY_SIZE), "--workers", "0"]


def _table(folder: Path, path: Path, extra: int = 0) -> Path:
    """A CSV over ``folder`` with groups (some empty) and splits; ``extra`` more rows reuse the first files."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rows = [(f.relative_to(path.parent).as_posix(), f.parent.name) for f in files]
    rows += [(rows[i][0], rows[i][1]) for i in range(extra)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        for i, (file, label) in enumerate(rows):
            if i >= len(files):  # the same bytes under a new id
                copy = Path(file).with_name(f"copy{i}{Path(file).suffix}")
                shutil.copy(path.parent / file, path.parent / copy)
                file = copy.as_posix()
            writer.writerow([file, label, "" if i % 5 == 0 else f"patient{i // 2}", "test" if i % 4 == 0 else "train"])
    return path


def _run_cli(*args, env=None):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(list(args), env=environment, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 images in a CSV with groups and splits, a single-process reference and 3 shards from 3 processes.

    Batch size 1 everywhere: an image's codes then never depend on which batch it was in.
    """
    root = tmp_path_factory.mktemp("shards")
    make_folder(root / "images", n_per_class=8)
    table = _table(root / "images", root / "table.csv")
    reference = extract(from_csv(table), ExtractConfig(**TINY, batch_size=1), out=root / "single.h5",
                        progress=False).path
    shards = []
    for i in range(3):
        shards += _run_cli(sys.executable, "-m", "pipeline.cli", "extract", "--csv", str(table), *TINY_ARGS,
                           "--batch-size", "1", "--shard", f"{i}/3", "--out", str(root / "c.h5"), "-q")
    return root, table, reference, [Path(p) for p in shards]


def _content(path):
    with open_cache(path) as cache:
        rows = {"ids": cache.ids.tolist(), "labels": cache.labels.tolist(), "class_names": cache.class_names,
                "groups": None if cache.groups is None else cache.groups.tolist(),
                "split": None if cache.split is None else cache.split.tolist()}
        infos = {f"{l}/{p}": cache.output_info(l, p) for l, p in cache.outputs}
        key, manifest = cache.key, cache.manifest
    return rows, read_codes(path)[1], infos, key, manifest


def _assert_same_rows_and_codes(path, reference, exact=True):
    rows, codes, infos, _, _ = _content(path)
    want_rows, want_codes, want_infos, _, _ = _content(reference)
    assert rows == want_rows
    assert infos == want_infos and list(codes) == list(want_codes)
    for name in want_codes:
        if exact:
            np.testing.assert_array_equal(codes[name], want_codes[name], err_msg=name)
        else:  # batches of other sizes: the CPU kernels may round the last bits differently
            np.testing.assert_allclose(codes[name], want_codes[name], rtol=1e-5, atol=1e-6, err_msg=name)


# The happy paths ---------------------------------------------------------------------------------
def test_three_shard_processes_merge_into_the_single_run(corpus, tmp_path):
    root, _, reference, shards = corpus
    assert [p.name for p in shards] == [f"c.shard{i}-of-3.h5" for i in range(3)]
    sizes = []
    for i, path in enumerate(shards):
        with open_cache(path) as cache:
            assert cache.manifest["shard"]["index"] == i and cache.manifest["shard"]["count"] == 3
            assert cache.manifest["config"]["shard"] == [i, 3]
            sizes.append(cache.n_rows)
    assert sum(sizes) == 16 and min(sizes) > 0

    result = merge_shards(list(reversed(shards)), tmp_path / "merged.h5")
    assert not result.reused and result.rows == 16 and result.shards == 3
    _assert_same_rows_and_codes(result.path, reference, exact=True)
    _, _, _, key, manifest = _content(result.path)
    _, _, _, want_key, want = _content(reference)
    assert key == want_key  # the key a single run computes: a later plain extract finds it up to date
    assert manifest["input"]["fingerprint"] == want["input"]["fingerprint"]
    assert manifest["input"]["n_images"] == 16 and "shard" not in manifest and manifest["config"]["shard"] is None
    assert [s["index"] for s in manifest["shards"]] == [0, 1, 2]
    assert verify_cache(result.path).ok
    assert merge_shards(shards, tmp_path / "merged.h5").reused


def test_torchrun_with_two_cpu_processes_then_merge(corpus, tmp_path):
    root, table, reference, _ = corpus
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    # No --shard: under torchrun with WORLD_SIZE > 1 each rank takes its own shard.
    printed = _run_cli(str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipeline.cli", "extract",
                       "--csv", str(table), *TINY_ARGS, "--batch-size", "1", "--out", str(tmp_path / "t.h5"), "-q")
    assert sorted(Path(p).name for p in printed) == ["t.shard0-of-2.h5", "t.shard1-of-2.h5"]
    result = merge_shards(printed)
    assert result.path == tmp_path / "t.h5"
    # torchrun runs each rank with one OpenMP thread; the reference used two.
    _assert_same_rows_and_codes(result.path, reference, exact=False)


def test_batches_and_batchnorm_sums_merge_like_a_single_run(tmp_path):
    folder = make_folder(tmp_path / "images", n_per_class=8)
    config = dict(**TINY, batch_size=4, bn_stats=True, layers=("1", "pre_logits"))
    single = extract(from_folder(folder), ExtractConfig(**config), out=tmp_path / "single.h5", progress=False).path
    shards = [extract(from_folder(folder), ExtractConfig(**config, shard=(i, 3)), out=tmp_path / "c.h5",
                      progress=False).path for i in range(3)]
    merged = merge_shards(shards).path
    _assert_same_rows_and_codes(merged, single, exact=False)
    with open_cache(merged) as got, open_cache(single) as want:
        assert got.key == want.key and got.manifest["bn_stats"] == want.manifest["bn_stats"]
        stats = {s.module: s for s in want.bn_stats()}
        for s in got.bn_stats():
            assert s.count == stats[s.module].count
            np.testing.assert_allclose(s.mean, stats[s.module].mean, rtol=1e-6, atol=1e-9, err_msg=s.module)
            np.testing.assert_allclose(s.var, stats[s.module].var, rtol=1e-5, atol=1e-9, err_msg=s.module)


def test_a_column_only_some_shards_have_is_merged_as_a_single_run_stores_it(tmp_path):
    folder = make_folder(tmp_path / "images", n_per_class=4)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    ids = [f.relative_to(tmp_path).as_posix() for f in files]
    table = tmp_path / "table.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group"])
        for i, f in zip(ids, files):  # only the images of shard 0 have a group
            writer.writerow([i, f.parent.name, f"p{i[-6:-4]}" if shard_indices([i], 3)[0] == 0 else ""])
    config = dict(**TINY, batch_size=8, layers=("1",))
    shards = [extract(from_csv(table), ExtractConfig(**config, shard=(i, 3)), out=tmp_path / "c.h5",
                      progress=False).path for i in range(3)]
    with open_cache(shards[0]) as first, open_cache(shards[1]) as second:
        assert first.groups is not None and second.groups is None
    single = extract(from_csv(table), ExtractConfig(**config), out=tmp_path / "single.h5", progress=False).path
    merged = merge_shards(shards).path
    _assert_same_rows_and_codes(merged, single, exact=False)
    assert _content(merged)[3] == _content(single)[3]


def test_shard_assignment_is_balanced_and_stable_when_images_are_added():
    ids = [f"class{i % 3}/slide{i:06d}.png" for i in range(30000)]
    shards = shard_indices(ids, 4)
    assert np.all(np.abs(np.bincount(shards, minlength=4) - 7500) < 0.03 * 7500)
    more = ids + [f"class{i % 3}/new{i:06d}.png" for i in range(5000)]
    np.testing.assert_array_equal(shard_indices(sorted(more), 4)[np.searchsorted(sorted(more), ids)], shards)
    assert not shard_indices(ids[:100], 1).any()


def test_added_images_only_touch_their_shards(tmp_path):
    folder = make_folder(tmp_path / "images", n_per_class=6)
    config = dict(**TINY, batch_size=8)
    first = [extract(from_folder(folder), ExtractConfig(**config, shard=(i, 3)), out=tmp_path / "c.h5",
                     progress=False) for i in range(3)]
    merge_shards([r.path for r in first])
    extra = make_folder(tmp_path / "extra", n_per_class=8)
    added = sorted(extra.rglob("img0[6-7].*"))
    for path in added:
        shutil.copy(path, folder / path.parent.name / path.name)
    again = [extract(from_folder(folder), ExtractConfig(**config, shard=(i, 3)), out=tmp_path / "c.h5",
                     progress=False) for i in range(3)]
    touched = set(shard_indices([f"{p.parent.name}/{p.name}" for p in added], 3).tolist())
    assert {i for i, r in enumerate(again) if r.forward_passes} == touched
    computed = []
    for result in again:  # the others are sealed again for the new input, without a forward pass
        with open_cache(result.path) as cache:
            computed.append(cache.manifest["update"]["computed_rows"])
            assert cache.manifest["shard"]["input_images"] == 12 + len(added)
    assert sum(computed) == len(added) and {i for i, c in enumerate(computed) if c} == touched
    merged = merge_shards([r.path for r in again])  # replaces the earlier merge of the same settings
    assert not merged.reused and merged.rows == 12 + len(added)
    single = extract(from_folder(folder), ExtractConfig(**config), out=tmp_path / "single.h5", progress=False)
    _assert_same_rows_and_codes(merged.path, single.path, exact=False)


# Refusals ----------------------------------------------------------------------------------------
def _foreign(corpus, tmp_path, name, index=1, count=3, table=None, **overrides):
    root, default_table, _, _ = corpus
    config = ExtractConfig(**{**TINY, "batch_size": 8, **overrides}, shard=(index, count))
    return extract(from_csv(table or default_table), config, out=tmp_path / f"{name}.h5", progress=False).path


def _forge(source: Path, target: Path, change) -> Path:
    """A copy of a shard whose manifest was edited, with a valid digest (what no extract writes)."""
    shutil.copy(source, target)
    return forge_manifest(target, change)


def test_missing_duplicated_and_unfinished_shards_are_refused(corpus, tmp_path):
    _, _, _, (s0, s1, s2) = corpus
    with pytest.raises(CacheError, match="none were given"):
        merge_shards([])
    with pytest.raises(CacheError, match=r"cannot merge: shard 2 of 3 is missing \(got 0, 1\); extract it with "
                                         r"shard=\(2, 3\) \(--shard 2/3\)"):
        merge_shards([s0, s1], tmp_path / "m.h5")
    with pytest.raises(CacheError, match=r"c.shard0-of-3.h5 is given twice"):
        merge_shards([s0, s1, s2, s0], tmp_path / "m.h5")
    copy = shutil.copy(s1, tmp_path / "copy.h5")
    with pytest.raises(CacheError, match=r"c.shard1-of-3.h5 and copy.h5 are both shard 1 of 3"):
        merge_shards([s0, s1, copy, s2], tmp_path / "m.h5")
    with pytest.raises(CacheError, match=r"cannot merge shard .*nope.h5: cache .* does not exist"):
        merge_shards([s0, s1, tmp_path / "nope.h5"], tmp_path / "m.h5")
    shutil.copy(s2, tmp_path / "cut.h5.partial")
    with pytest.raises(CacheError, match=r"cannot merge shard .*cut.h5: extraction into .* was interrupted"):
        merge_shards([s0, s1, tmp_path / "cut.h5"], tmp_path / "m.h5")
    truncated = shutil.copy(s2, tmp_path / "short.h5")
    os.truncate(truncated, os.path.getsize(truncated) // 2)
    with pytest.raises(CacheError, match=r"cannot merge shard .*short.h5: .*truncated file"):
        merge_shards([s0, s1, truncated], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_foreign_shards_are_refused(corpus, tmp_path):
    root, _, reference, (s0, s1, s2) = corpus
    with pytest.raises(CacheError, match=r"single.h5 is not a shard \(it was extracted without shard, --shard\)"):
        merge_shards([s0, reference, s2], tmp_path / "m.h5")
    other = _foreign(corpus, tmp_path, "size", img_size=48)
    with pytest.raises(CacheError, match=r"other settings \(different preprocessing\)"):
        merge_shards([s0, other, s2], tmp_path / "m.h5")
    other = _foreign(corpus, tmp_path, "count", index=1, count=2)
    with pytest.raises(CacheError, match=r"shards of different counts \(1 of 2 and 0 of 3\)"):
        merge_shards([s0, other, s2], tmp_path / "m.h5")
    other = _foreign(corpus, tmp_path, "pool", pools=("max",))
    with pytest.raises(CacheError, match=r"hold other outputs \(blocks.0/max, .* against blocks.0/avg"):
        merge_shards([s0, other, s2], tmp_path / "m.h5")
    other = _foreign(corpus, tmp_path, "bn", bn_stats=True)
    with pytest.raises(CacheError, match=r"only one of them has BatchNorm statistics"):
        merge_shards([s0, other, s2], tmp_path / "m.h5")
    grown = _table(root / "images", root / "grown.csv", extra=3)  # same root folder, three more images
    other = _foreign(corpus, tmp_path, "grown", table=grown)
    with pytest.raises(CacheError, match=r"were cut from different inputs \(19 and 16 images"):
        merge_shards([s0, other, s2], tmp_path / "m.h5")


def test_forged_shards_never_fill_a_value(corpus, tmp_path):
    _, _, _, (s0, s1, s2) = corpus
    moved = _forge(s1, tmp_path / "c.shard2-of-3.h5", lambda m: m["shard"].update(index=2))
    with pytest.raises(CacheError, match=r"c.shard2-of-3.h5 holds \d+ row\(s\) of other shards \(first: .*, which "
                                         r"belongs to shard 1\)"):
        merge_shards([s0, s1, moved], tmp_path / "m.h5")

    def bigger(manifest):
        manifest["shard"]["input_images"] += 1

    forged = [_forge(s, tmp_path / f"big.shard{i}-of-3.h5", bigger) for i, s in enumerate((s0, s1, s2))]
    with pytest.raises(CacheError, match=r"hold 16 image\(s\) and skipped 0, but do not cover the 17 images"):
        merge_shards(forged)
    assert not (tmp_path / "big.h5").exists()


def test_a_shard_whose_codes_no_longer_match_their_hash_is_refused(corpus, tmp_path):
    """Codes rewritten with a valid chunk checksum: only the content hash, summed as merge reads, sees it."""
    _, _, _, (s0, s1, s2) = corpus
    changed = shutil.copy(s1, tmp_path / "c.shard1-of-3.h5")
    with h5py.File(changed, "r+") as handle:
        handle["codes/pre_logits/none"][0, 0] += 1.0
    with pytest.raises(CacheError, match=r"cannot merge: the codes of pre_logits/none read from .*c.shard1-of-3.h5 "
                                         r"do not match their recorded hash"):
        merge_shards([s0, changed, s2], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_the_output_must_be_a_new_or_earlier_merge(corpus, tmp_path):
    root, _, _, shards = corpus
    with pytest.raises(CacheError, match=r"out \(--out\) .*c.shard1-of-3.h5 is one of the shards"):
        merge_shards(shards, shards[1])
    foreign = _foreign(corpus, tmp_path, "size", img_size=48)
    with pytest.raises(CacheError, match=r"already holds a cache made with other settings \(different preprocessing\); "
                                         r"choose another out \(--out\)"):
        merge_shards(shards, foreign)
    (tmp_path / "text.h5").write_text("not a cache")
    with pytest.raises(CacheError, match=r"text.h5 exists but is not a finished layerprobe cache"):
        merge_shards(shards, tmp_path / "text.h5")
    renamed = [shutil.copy(p, tmp_path / f"part{i}.h5") for i, p in enumerate(shards)]
    with pytest.raises(CacheError, match=r"part0.h5 is not named like a shard .* pass out \(--out\)"):
        merge_shards(renamed)


def test_shard_options_are_checked(tmp_path):
    with pytest.raises(PipelineError, match=r"shard index 3 is out of range \(0 to 2\) for 3 shards"):
        ExtractConfig(shard=(3, 3))
    with pytest.raises(PipelineError, match="the shard count must be at least 1, got 0"):
        ExtractConfig(shard=(0, 0))
    folder = make_folder(tmp_path / "images", n_per_class=1)
    ids = [r.id for r in from_folder(folder).records]
    empty = next(i for i in range(50) if i not in set(shard_indices(ids, 50).tolist()))
    with pytest.raises(PipelineError, match=rf"shard {empty}/50 holds none of the 2 images"):
        extract(from_folder(folder), ExtractConfig(**TINY, shard=(empty, 50)), out=tmp_path / "c.h5", progress=False)
    assert shard_path("cache/a-b-0123.h5", 2, 8) == Path("cache/a-b-0123.shard2-of-8.h5")
    assert merged_path("cache/a-b-0123.shard2-of-8.h5") == Path("cache/a-b-0123.h5")
    assert merged_path("cache/a.h5") is None


def test_torchrun_environment_gives_the_rank_its_shard_and_gpu():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert torchrun_rank(env).rank == 3 and torchrun_rank({}) is None
    on_gpu = rank_config(ExtractConfig(), env, cuda_available=True)
    assert on_gpu.shard == (3, 4) and on_gpu.device == "cuda:1"
    on_cpu = rank_config(ExtractConfig(device="cpu"), env, cuda_available=True)
    assert on_cpu.shard == (3, 4) and on_cpu.device == "cpu"
    assert rank_config(ExtractConfig(), env, cuda_available=False).device == "auto"
    with pytest.raises(PipelineError, match=r"rank_config \(--shard auto\) takes its shard from torchrun's RANK and WORLD_SIZE"):
        rank_config(ExtractConfig(), {})
    with pytest.raises(PipelineError, match=r"RANK 4 is out of range \(0 to 3\) for WORLD_SIZE 4"):
        torchrun_rank({"RANK": "4", "WORLD_SIZE": "4"})
    if not __import__("torch").cuda.is_available():
        with pytest.raises(InputError, match=r"device='cuda:0' \(--device cuda:0\) was asked for but no CUDA GPU is visible"):
            resolve_device("cuda:0")


# The CLI -----------------------------------------------------------------------------------------
def test_cli_merge_prints_the_merged_path(corpus, tmp_path):
    _, _, reference, shards = corpus
    runner = CliRunner()
    out = tmp_path / "m.h5"
    result = runner.invoke(main, ["merge", *map(str, shards), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"
    _assert_same_rows_and_codes(out, reference, exact=True)
    copies = [shutil.copy(p, tmp_path / p.name) for p in shards]
    result = runner.invoke(main, ["merge", *map(str, copies), "-q"])
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'c.h5'}\n"


def test_cli_merge_failures_are_one_line_errors(corpus, tmp_path):
    _, _, _, (s0, s1, _) = corpus
    runner = CliRunner()
    result = runner.invoke(main, ["merge", str(s0), str(s1), "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot merge: shard 2 of 3 is missing (got 0, 1)")
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["merge"])
    assert result.exit_code == 2 and "Missing argument 'SHARDS...'" in result.output


def test_cli_extract_shard_option(image_folder, tmp_path, monkeypatch):
    runner = CliRunner()
    base = ["extract", "--images", str(image_folder), *TINY_ARGS, "--out", str(tmp_path / "c.h5"), "-q"]
    result = runner.invoke(main, [*base, "--shard", "1-3"])
    assert result.exit_code == 2 and "'1-3' is neither I/N (such as 0/4) nor 'auto'" in result.output
    result = runner.invoke(main, [*base, "--shard", "5/3"])
    assert result.exit_code == 2 and "shard index 5 is out of range (0 to 2) for 3 shards" in result.output
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(main, [*base, "--shard", "auto"])
    assert result.exit_code == 1 and "Error: rank_config (--shard auto) takes its shard from torchrun" in result.output
    result = runner.invoke(main, [*base, "--shard", "0/2"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'c.shard0-of-2.h5'}\n"
    # Under torchrun (WORLD_SIZE > 1) sharding is the default.
    result = runner.invoke(main, base, env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'c.shard1-of-2.h5'}\n"
    merged = runner.invoke(main, ["merge", str(tmp_path / "c.shard0-of-2.h5"), str(tmp_path / "c.shard1-of-2.h5")])
    assert merged.exit_code == 0 and merged.stdout == f"{tmp_path / 'c.h5'}\n"
