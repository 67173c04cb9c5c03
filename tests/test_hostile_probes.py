"""Hostile probe files are refused in one line before anything is materialised or parsed by LightGBM."""

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import fit_probe, load_probe, save_probe
from pipeline.probes import archive

from .probe_data import make_codes, write_cache

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 6-channel cache, and LightGBM and logistic probes fitted on it."""
    root = tmp_path_factory.mktemp("hostile")
    codes, y = make_codes(n=80, widths=(6,), n_classes=2, informative=(3,))
    cache = write_cache(root / "c.h5", codes, y, ["a", "b"])
    probes = {kind: save_probe(fit_probe(cache, "blocks.0/avg", kind), root / f"{kind}.probe.npz")
              for kind in ("lgbm", "logreg")}
    return cache, probes


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def _save(path, arrays):
    np.savez(path, **arrays)
    return path


def _edit_tree0(text, key, edit):
    """Apply ``edit`` to the tokens of ``key`` in the first tree of LightGBM model text.

    ``tree_sizes`` is corrected too, so LightGBM itself would read the edited tree as it is.
    """
    head, tree0 = text.split("Tree=0\n", 1)
    lines = tree0.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(key + "="):
            lines[i] = f"{key}=" + " ".join(edit(line[len(key) + 1:].split()))
            grown = len(lines[i]) - len(line)
            break
    sizes = re.search(r"tree_sizes=(\d+)", head)
    head = head[: sizes.start(1)] + str(int(sizes.group(1)) + grown) + head[sizes.end(1):]
    return head + "Tree=0\n" + "\n".join(lines)


EDITS = {
    "feature-out-of-range": ("split_feature", lambda t: ["5000"] + t[1:],
                             r"tree 0 splits on feature 5000, outside 0 to 5 \(the probe's channels\)"),
    "negative-feature": ("split_feature", lambda t: ["-3"] + t[1:], r"tree 0 splits on feature -3, outside 0 to 5"),
    "short-array": ("left_child", lambda t: t[:-1], r"tree 0 has \d+ left_child value\(s\) for \d+"),
    "cycle": ("left_child", lambda t: ["0"] + t[1:], r"tree 0: node 0 has child node 0 \(allowed 1 to \d+\)"),
    "nan-threshold": ("threshold", lambda t: ["nan"] + t[1:], r"threshold of tree 0 is 'nan'; every threshold"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_hostile_lightgbm_model_text_is_one_line_in_predict(fitted, tmp_path, name):
    cache, probes = fitted
    key, edit, message = EDITS[name]
    arrays = _arrays(probes["lgbm"])
    text = arrays["model/model_text"].tobytes().decode()
    hostile = _edit_tree0(text, key, edit)
    assert hostile != text
    arrays["model/model_text"] = np.frombuffer(hostile.encode(), dtype=np.uint8)
    path = _save(tmp_path / "hostile.probe.npz", arrays)
    # in a child process: on a LightGBM that parsed this text, a crash must fail the test, not end the session
    child = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", str(path), str(cache)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert child.returncode == 1, (child.returncode, child.stderr[-2000:])
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: step 'model': its LightGBM model text is refused: ")
    assert re.search(message, lines[0]), lines[0]
    assert child.stdout == ""


def test_the_checked_lightgbm_text_predicts_exactly_as_the_original(fitted):
    cache, probes = fitted
    X = np.random.default_rng(3).normal(size=(50, 6))
    loaded = load_probe(probes["lgbm"])
    original = lightgbm.Booster(model_str=_arrays(probes["lgbm"])["model/model_text"].tobytes().decode())
    scaled = loaded.pipeline[:-1].transform(X)
    assert np.array_equal(loaded.pipeline.named_steps["model"].booster_.predict(scaled), original.predict(scaled))


def _forbid_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an array was materialised")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)


def test_a_huge_declared_member_is_refused_before_it_is_read(fitted, tmp_path, monkeypatch):
    """6 GB of zeros declared by a member whose .npy header claims it, in a file of a few kB."""
    _, probes = fitted
    path = tmp_path / "huge.probe.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (750_000_000,)})
    with zipfile.ZipFile(probes["logreg"]) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, header.getvalue() if info.filename == "model/coef_.npy" else data)
    assert path.stat().st_size < 100_000
    _forbid_reading(monkeypatch)
    with pytest.raises(ProbeError, match=r"member 'model/coef_' declares shape \(750000000,\) of float64 \(6\.0 GB\); "
                                         r"at most 4\.3 GB per array"):
        load_probe(path)


def test_compressed_zeros_that_would_inflate_past_the_cap_are_refused(fitted, tmp_path, monkeypatch):
    _, probes = fitted
    arrays = _arrays(probes["logreg"])
    arrays["model/coef_"] = np.zeros((1, 8_000_000))  # 64 MB of zeros, compressed to about 60 kB
    path = tmp_path / "zeros.probe.npz"
    np.savez_compressed(path, **arrays)
    monkeypatch.setitem(archive.LIMITS, "inflated_bytes", 1 << 20)
    _forbid_reading(monkeypatch)
    with pytest.raises(ProbeError, match=r"its arrays would take 0\.1 GB in memory from a 0\.\d MB file; refused"):
        load_probe(path)


def test_a_member_whose_header_disagrees_with_the_archive_is_refused(fitted, tmp_path, monkeypatch):
    _, probes = fitted
    path = tmp_path / "short.probe.npz"
    with zipfile.ZipFile(probes["logreg"]) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, data[:-8] if info.filename == "model/coef_.npy" else data)
    _forbid_reading(monkeypatch)
    with pytest.raises(ProbeError, match=r"member 'model/coef_' declares shape \(1, 6\) of float64 \(48 bytes\), but "
                                         r"the archive holds 40 bytes for it"):
        load_probe(path)


def test_a_member_shape_that_contradicts_the_manifest_is_refused(fitted, tmp_path):
    _, probes = fitted
    arrays = _arrays(probes["logreg"])
    arrays["model/coef_"] = np.zeros((1, 7))
    with pytest.raises(ProbeError, match=r"array model/coef_ has shape \(1, 7\); the manifest requires \(1, 6\)"):
        load_probe(_save(tmp_path / "wide.probe.npz", arrays))


def _with_manifest(path, out, change):
    arrays = _arrays(path)
    manifest = json.loads(arrays["manifest.json"].tobytes().decode())
    change(manifest)
    arrays["manifest.json"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    return _save(out, arrays)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["extract_config"].update(img_size=6000), r"its manifest gives img_size 6000; allowed 1 to 4096"),
    (lambda m: m["preprocessing"].update(input_size=[3, 6000, 6000]),
     r"its manifest gives an input side 6000; allowed 1 to 4096"),
    (lambda m: m["extract_config"].update(batch_size=10**9), r"its manifest gives batch_size 1000000000; allowed"),
    (lambda m: m.update(channels=10**7), r"its manifest gives channels 10000000; allowed 1 to 65536"),
    (lambda m: m.update(class_names=[str(i) for i in range(20000)]),
     r"its manifest gives the number of classes 20000; allowed 2 to 10000"),
], ids=["img_size", "input_size", "batch_size", "channels", "classes"])
def test_manifest_numbers_are_bounded(fitted, tmp_path, change, message):
    _, probes = fitted
    path = _with_manifest(probes["logreg"], tmp_path / "m.probe.npz", change)
    with pytest.raises(ProbeError, match=message) as error:
        load_probe(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("num_cat=0\n", "", 1), r"tree 0 has no num_cat"),
    (lambda t: t.replace("objective=binary sigmoid:1", "objective=binary", 1),
     r"objective 'binary'; 'binary sigmoid:<positive>' expected"),
    (lambda t: re.sub(r"label_index=\d+\n", "", t), r"the header has no label_index"),
    (lambda t: re.sub(r"max_feature_idx=\d+", "max_feature_idx=6", t), r"max_feature_idx says 7 features, the probe "
                                                                        r"takes 6 channels"),
    (lambda t: t.replace("Tree=1\n", "Tree=7\n", 1), r"tree 1 is labelled 'Tree=7'"),
], ids=["no-num_cat", "no-sigmoid", "no-label_index", "more-features", "tree-number"])
def test_what_lightgbm_would_refuse_or_misread_is_refused_first(fitted, edit, message):
    from pipeline.probes.lgbm_text import checked_model_text

    text = _arrays(fitted[1]["lgbm"])["model/model_text"].tobytes().decode()
    assert checked_model_text(text, 6, 2)
    with pytest.raises(ProbeError, match=message):
        checked_model_text(edit(text), 6, 2)
