"""similarity and advise through click's CliRunner: output, files and exit codes."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main

from .conftest import TINY_MODEL, TINY_SIZE, make_folder
from .probe_data import MODEL, make_codes, write_cache


@pytest.fixture
def runner():
    return CliRunner()


def _codes(seed, shift=0.0, n=60):
    codes, y = make_codes(n=n, widths=(4, 12), informative=(1, 4), seed=seed)
    codes = {k: v + np.float32(shift) for k, v in codes.items()}
    logits = np.random.default_rng(seed).normal(size=(n, 10)).astype(np.float32)
    logits[:, 0] += 2 * y  # the first ImageNet class fires for the second label
    codes[("logits", "none")] = logits
    return codes, y


@pytest.fixture
def pair(tmp_path):
    """Two synthetic caches of one model and outputs, the second shifted."""
    a = write_cache(tmp_path / "a.h5", *_codes(0), ["no", "yes"])
    b = write_cache(tmp_path / "b.h5", *_codes(1, shift=1.5), ["no", "yes"])
    return a, b


@pytest.fixture(scope="module")
def bn_cache(tmp_path_factory, tiny_weights):
    """A cache of the tiny model, from a weights file, with BatchNorm statistics and logits."""
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import from_folder

    root = tmp_path_factory.mktemp("bn")
    config = ExtractConfig(model=TINY_MODEL, weights=tiny_weights, img_size=TINY_SIZE, batch_size=8, workers=0,
                           layers=("all", "logits"), bn_stats=True)
    return extract(from_folder(make_folder(root / "images")), config, out=root / "bn.h5", progress=False).path


def test_similarity_against_another_cache_prints_a_row_per_layer(runner, pair):
    a, b = pair
    result = runner.invoke(main, ["similarity", str(a), "--reference", str(b)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"60 images (60 labelled, 2 classes) of synthetic-net against {b} (60 images)"
    assert lines[1].split() == ["layer", "channels", "w2", "sym_kl", "mean_shift", "frechet", "frechet_rel", "mmd",
                                "domain_auc", "logme", "hscore"]
    assert [line.split()[:2] for line in lines[2:4]] == [["blocks.0/avg", "4"], ["blocks.1/avg", "12"]]
    assert lines[4].startswith("LEEP (ImageNet logits): -0.")
    assert len(lines) == 5


def test_similarity_json_and_plot(runner, pair, tmp_path):
    a, b = pair
    png = tmp_path / "sim.png"
    result = runner.invoke(main, ["similarity", str(a), "--reference", str(b), "--json", "--plot", str(png),
                                  "--max-rows", "40", "--seed", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"] == {"seed": 3, "max_rows": 40} and data["bn_rows"] == []
    assert [r["name"] for r in data["rows"]] == ["blocks.0/avg", "blocks.1/avg"]
    assert data["rows"][1]["values"]["domain_auc"] > 0.95  # a shift of 1.5 in every channel
    assert data["leep"] < 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_similarity_refuses_caches_that_differ_naming_what_differs(runner, pair, tmp_path):
    a, _ = pair
    codes, y = _codes(2)
    other = write_cache(tmp_path / "other.h5", codes, y, ["no", "yes"], model={**MODEL, "name": "other-net"})
    result = runner.invoke(main, ["similarity", str(a), "--reference", str(other)])
    assert result.exit_code == 1
    assert result.output == ("Error: a.h5 and other.h5 cannot be compared: model synthetic-net vs other-net. "
                             "Extract both with the same model, weights, img_size, layers and pools (--model, "
                             "--weights, --img-size, --layers, --pool)\n")
    fewer = write_cache(tmp_path / "fewer.h5", {k: v for k, v in codes.items() if k[0] != "blocks.1"}, y, ["no", "yes"])
    result = runner.invoke(main, ["similarity", str(a), "--reference", str(fewer)])
    assert result.exit_code == 1 and "outputs only in a.h5: blocks.1/avg; only in fewer.h5: none" in result.output


def test_similarity_against_imagenet_needs_batchnorm_statistics(runner, pair):
    result = runner.invoke(main, ["similarity", str(pair[0])])
    assert result.exit_code == 1
    assert result.output.startswith("Error: a.h5 holds no BatchNorm statistics") and "--bn-stats" in result.output
    assert len(result.output.splitlines()) == 1


def test_similarity_against_imagenet_from_batchnorm_statistics(runner, bn_cache, tmp_path):
    png = tmp_path / "imagenet.png"
    result = runner.invoke(main, ["similarity", str(bn_cache), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("16 images (16 labelled, 2 classes) of test_efficientnet against ImageNet, from ")
    assert lines[1].split() == ["layer", "channels", "w2", "sym_kl", "mean_shift", "logme", "hscore", "bn", "layers"]
    assert [line.split()[0] for line in lines[2:8]] == [f"blocks.{i}/avg" for i in range(5)] + ["pre_logits/none"]
    # every output summarises some BatchNorm layers: count, first..last
    assert lines[2].split()[-2:] == ["2", "bn1..blocks.0.0.bn1"]
    assert lines[7].split()[-2:] == ["1", "bn2"]
    assert all(int(line.split()[-2]) >= 1 for line in lines[2:8])
    assert png.stat().st_size > 1000
    data = json.loads(runner.invoke(main, ["similarity", str(bn_cache), "--json"]).stdout)
    assert len(data["bn_rows"]) == sum(len(r["members"]) for r in data["rows"])
    assert data["bn_rows"][0]["name"] == "bn1" and data["rows"][0]["members"][0] == "bn1"
    assert sorted(r["name"] for r in data["bn_rows"]) == sorted(m for r in data["rows"] for m in r["members"])
    assert data["bn_outside"] == [] and data["rows"][-1]["members"] == ["bn2"]


def test_advise_from_logme_and_the_imagenet_distance(runner, bn_cache):
    result = runner.invoke(main, ["advise", str(bn_cache)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("layer      ") and lines[0].endswith("(by LogME)")
    # LogME has no interval: the verdict is never more than a lean, and 8 images per class are too few to fine-tune
    assert lines[1] == "imagenet   uncertain" and lines[2] == "fine-tune  unlikely"
    assert lines[4] == "- 16 images in 2 classes, about 8 per class: few images for training a network."
    assert any(line.startswith("- Against ImageNet's BatchNorm statistics (w2), the data are closest at ")
               for line in lines)
    data = json.loads(runner.invoke(main, ["advise", str(bn_cache), "--json"]).stdout)
    assert [f["topic"] for f in data["findings"]] == ["data", "layer", "similarity", "fine_tune", "imagenet"]


def test_advise_with_probe_results(runner, pair, tmp_path):
    from pipeline.probes import ProbeConfig, run_probes

    a, b = pair
    results = tmp_path / "a.probes.json"
    run_probes(a, ProbeConfig(probes=("logreg",), folds=3, n_boot=20), out=results, progress=False)
    result = runner.invoke(main, ["advise", str(a), "--results", str(results)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "layer      blocks.1/avg (by probe logreg, roc_auc)"
    missing = "- No distance to ImageNet: the cache holds no BatchNorm statistics (extract with bn_stats=True (--bn-stats) to add it)."
    assert missing in lines
    assert any(line.startswith("- LogME and the logreg probe ") for line in lines)
    other = runner.invoke(main, ["advise", str(b), "--results", str(results)])
    assert other.exit_code == 1
    assert other.output.startswith("Error: the probe results were made from another cache than b.h5 (input fingerprint")


def test_advise_needs_two_labelled_classes(runner, tmp_path):
    codes, y = make_codes(n=30, widths=(4,), informative=(1,))
    cache = write_cache(tmp_path / "one.h5", codes, np.zeros_like(y), ["only"])
    result = runner.invoke(main, ["advise", str(cache)])
    assert result.exit_code == 1
    assert result.output == ("Error: no advice: transferability needs labelled images of at least 2 classes; "
                             "one.h5 has 1\n")


@pytest.mark.parametrize("command", ["similarity", "advise"])
def test_commands_have_help_with_an_example(runner, command):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output
