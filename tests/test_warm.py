"""A warm re-run with nothing new answers from the record beside the cache: no torch, no model, no hashing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.activations import extract
from pipeline.activations import warm
from pipeline.inputs import from_folder

from .conftest import make_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def made(tmp_path, tiny_config):
    """A folder, the config, and a first (cold) extraction of it on the CPU."""
    folder = make_folder(tmp_path / "imgs", n_per_class=4)
    config = tiny_config(device="cpu")
    out = tmp_path / "c.h5"
    first = extract(from_folder(folder), config, out=out, progress=False)
    return folder, config, out, first


def test_the_first_run_leaves_a_record_and_the_second_is_answered_from_it(made):
    folder, config, out, first = made
    assert not first.reused
    records = list((out.parent / warm.FOLDER).glob("warm-*.json"))
    assert len(records) == 1
    entry = json.loads(records[0].read_text())
    assert entry["cache"] == str(out.resolve()) and len(entry["files"]) == 8
    found = warm.up_to_date(from_folder(folder), config, out=out)
    assert found is not None and found.reused and found.rows == 8 and found.path == out.resolve()


def test_a_warm_run_imports_no_torch(made):
    folder, config, out, _ = made
    script = (
        "import sys\n"
        "from pipeline.activations import ExtractConfig, extract\n"
        "from pipeline.inputs import from_folder\n"
        f"config = ExtractConfig(**{_options(config)!r})\n"
        f"result = extract(from_folder({str(folder)!r}), config, out={str(out)!r}, progress=False)\n"
        "print(result.reused, result.rows, 'torch' in sys.modules, 'timm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "8", "False", "False"]


def _options(config) -> dict:
    from dataclasses import asdict

    return asdict(config)


def test_a_file_rewritten_in_place_goes_to_the_full_stage(made):
    folder, config, out, _ = made
    path = sorted(folder.rglob("*.*"))[0]
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    assert warm.up_to_date(from_folder(folder), config, out=out) is None
    result = extract(from_folder(folder), config, out=out, progress=False)
    assert not result.reused and result.forward_passes == 1


def test_a_touched_file_is_hashed_again_and_then_trusted(made):
    folder, config, out, _ = made
    path = sorted(folder.rglob("*.*"))[0]
    os.utime(path, ns=(1, 1))
    assert warm.up_to_date(from_folder(folder), config, out=out) is None
    again = extract(from_folder(folder), config, out=out, progress=False)
    assert again.reused and again.forward_passes == 0  # same bytes: the full stage finds it up to date
    assert warm.up_to_date(from_folder(folder), config, out=out) is not None  # and records the new stat


def test_another_request_or_a_rewritten_cache_is_not_answered(made):
    folder, config, out, _ = made
    images = from_folder(folder)
    assert warm.up_to_date(images, config.__class__(**{**_options(config), "pools": ("max",)}), out=out) is None
    assert warm.up_to_date(images, config, out=out.parent / "other.h5") is None
    more = extract(images, config.__class__(**{**_options(config), "pools": ("gem",)}), out=out, progress=False)
    assert not more.reused  # the same cache, now with gem codes too: its file changed
    assert warm.up_to_date(images, config, out=out) is None


def test_only_cpu_runs_without_skipped_images_are_recorded(tmp_path, tiny_config):
    folder = make_folder(tmp_path / "imgs", n_per_class=3)
    (folder / "benign" / "broken.png").write_bytes(b"not a png")
    config = tiny_config(device="cpu", on_bad_image="skip")
    result = extract(from_folder(folder), config, out=tmp_path / "c.h5", progress=False)
    assert len(result.skipped) == 1
    assert not (tmp_path / warm.FOLDER).exists()
    assert warm.up_to_date(from_folder(folder), tiny_config(device="cuda"), out=tmp_path / "c.h5") is None


def test_cpu_only_is_known_without_torch(monkeypatch):
    assert warm.cpu_only("cpu") and not warm.cpu_only("cuda") and not warm.cpu_only("cuda:1")
    monkeypatch.setattr(warm.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert not warm.cpu_only("auto")
    monkeypatch.setattr(warm.glob, "glob", lambda pattern: [])
    assert warm.cpu_only("auto") == sys.platform.startswith("linux")


def test_a_shard_is_not_answered_once_the_whole_input_changed(tmp_path, tiny_config):
    folder = make_folder(tmp_path / "imgs", n_per_class=4)
    config = tiny_config(device="cpu", shard=(0, 2))
    extract(from_folder(folder), config, out=tmp_path / "c.h5", progress=False)
    assert warm.up_to_date(from_folder(folder), config, out=tmp_path / "c.h5") is not None
    extra = make_folder(tmp_path / "extra", n_per_class=6)
    for path in sorted(extra.rglob("img0[4-5].*")):
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    assert warm.up_to_date(from_folder(folder), config, out=tmp_path / "c.h5") is None  # even if none is its own
