"""Every command through click's CliRunner: happy paths, failure paths, help."""

import json
import re

import pytest
from click.testing import CliRunner

from pipeline.cli import main

from .conftest import TINY_MODEL

TINY = ["--model", TINY_MODEL, "--random-init", "--img-size", "64", "--workers", "0", "--batch-size", "8"]


@pytest.fixture
def runner():
    return CliRunner()


def test_every_command_has_help_with_an_example(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for name, command in main.commands.items():
        assert command.help and "Example" in command.help, name
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Usage: main " + name in sub.output.replace("layerprobe", "main")


def test_layers_table_and_json(runner):
    result = runner.invoke(main, ["layers", TINY_MODEL, "--random-init", "--img-size", "64"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["index", "layer", "kind", "channels", "stride", "layout", "poolings"]
    assert lines[1].split() == ["0", "blocks.0", "stage", "16", "2", "NCHW", "32x32", "avg,max,avgmax,gem"]
    assert lines[-2].split() == ["pre_logits", "pre_logits", "256", "NC", "none"]
    assert lines[-1].split() == ["logits", "logits", "1000", "NC", "none"]
    data = json.loads(runner.invoke(main, ["layers", TINY_MODEL, "--random-init", "--json"]).stdout)
    assert data[5]["name"] == "pre_logits" and data[5]["channels"] == 256 and data[5]["poolings"] == ["none"]
    assert (data[0]["layout"], data[0]["grid"], data[0]["poolings"]) == ("NCHW", [80, 80], ["avg", "max", "avgmax", "gem"])


def test_a_pooling_the_layer_does_not_accept_is_a_one_line_error(runner, image_folder, tmp_path):
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--pool", "avg,token",
                                  "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 1
    assert [l for l in result.stderr.splitlines() if "random weights" not in l] == [
        "Error: pooling 'token' does not apply to layer 'blocks.0' (NCHW 32x32); it accepts avg, max, avgmax, gem "
        "(`layerprobe layers MODEL` lists each layer's poolings)"
    ]
    assert not (tmp_path / "c.h5").exists()


def test_extract_prints_only_the_path_then_info_describes_it(runner, image_folder, tmp_path):
    out = tmp_path / "c.h5"
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--pool", "avg,gem", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    info = runner.invoke(main, ["info", str(out)])
    assert info.exit_code == 0
    assert "model      test_efficientnet  weights random-init" in info.output
    assert "16 from images (images); classes: benign (8), malignant (8)" in info.output
    assert "blocks.4/gem" in info.output and "16 x 64" in info.output
    assert re.search(r"made .* \(float32, BatchNorm folded (\d+) of \1\) in", info.output)
    unfolded = tmp_path / "unfolded.h5"
    args = ["extract", "--images", str(image_folder), *TINY, "--no-fold-batchnorm", "--out", str(unfolded), "-q"]
    assert runner.invoke(main, args).exit_code == 0
    assert "(float32, BatchNorm not folded: fold_batchnorm=False (--no-fold-batchnorm)) in" in runner.invoke(
        main, ["info", str(unfolded)]).output
    data = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert data["rows"] == 16 and data["class_counts"] == {"benign": 8, "malignant": 8}
    assert {o["output"] for o in data["outputs"]} >= {"blocks.0/avg", "blocks.0/gem", "pre_logits/none"}


def test_extract_with_layers_and_repeated_pool_options(runner, image_csv, tmp_path):
    out = tmp_path / "c.h5"
    args = ["extract", "--csv", str(image_csv), *TINY, "--layers", "1,-1", "--layers", "logits", "--pool", "max", "--pool", "avgmax", "--out", str(out), "-q"]
    assert runner.invoke(main, args).exit_code == 0
    data = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert [o["output"] for o in data["outputs"]] == ["blocks.1/max", "blocks.1/avgmax", "blocks.4/max", "blocks.4/avgmax", "logits/none"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "pass exactly one input source: --images DIR, --csv FILE, --dataset br35h, --dicom PATH or "
             "--nifti CSV (got none)"),
        (["--images", "A", "--csv", "B"], "pass exactly one input source"),
        (["--images", "/no/such/folder"], "image folder '/no/such/folder' does not exist"),
        (["--csv", "/no/such.csv"], "CSV file '/no/such.csv' does not exist"),
    ],
)
def test_extract_input_errors_are_one_line(runner, args, message):
    result = runner.invoke(main, ["extract", *args, *TINY])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: ")


def test_unknown_model_layer_and_pooling(runner, image_folder):
    result = runner.invoke(main, ["extract", "--images", str(image_folder), "--model", "resnet5O", "--random-init"])
    assert result.exit_code == 1 and "unknown model 'resnet5O'; did you mean" in result.output
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--layers", "9"])
    assert result.exit_code == 1 and "layer index 9 is out of range (-5 to 4)" in result.output
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--pool", "median"])
    assert result.exit_code == 1 and "unknown pooling 'median'; available:" in result.output


def test_bad_image_error_and_skip(runner, image_folder, tmp_path):
    (image_folder / "benign" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--out", str(tmp_path / "a.h5")])
    assert result.exit_code == 1 and "broken.jpg" in result.output and "--on-bad-image skip" in result.output
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY, "--on-bad-image", "skip", "--out", str(tmp_path / "b.h5")])
    assert result.exit_code == 0
    info = runner.invoke(main, ["info", str(tmp_path / "b.h5")])
    assert "skipped    1 bad image(s): benign/broken.jpg" in info.output


def test_info_on_missing_cache(runner, tmp_path):
    result = runner.invoke(main, ["info", str(tmp_path / "none.h5")])
    assert result.exit_code == 1 and "does not exist; create it with `layerprobe extract`" in result.output


def test_interrupt_exits_130_and_prints_the_resume_command(runner, image_folder, tmp_path, monkeypatch):
    import pipeline.activations

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.activations, "extract", interrupted)
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *TINY])
    assert result.exit_code == 130
    assert "Interrupted; committed rows are kept. Resume with:" in result.output


def test_info_says_how_much_batchnorm_was_folded_and_why_not_all():
    from pipeline.cli import _folding

    partial = {"folded": 59, "batchnorms": 121, "why_not": "62 BatchNorm layer(s) do not read a convolution's output alone"}
    assert _folding({"batchnorm_folding": partial}) == (
        ", BatchNorm folded 59 of 121; 62 BatchNorm layer(s) do not read a convolution's output alone")
    assert _folding({"batchnorm_folding": {"folded": 49, "batchnorms": 49}}) == ", BatchNorm folded 49 of 49"
    assert _folding({"batchnorm_folding": {"folded": 0, "batchnorms": 0}}) == ""  # a model without BatchNorm
    assert _folding({}) == ""  # a cache made before folding
