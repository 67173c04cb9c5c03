"""`info` says whether groups, splits, duplicate clusters and BatchNorm statistics are stored."""

import json

import numpy as np
from click.testing import CliRunner

from pipeline.cache.columns import add_row_column
from pipeline.cli import main

from .conftest import TINY_MODEL

TINY = ["--model", TINY_MODEL, "--random-init", "--img-size", "64", "--workers", "0", "--batch-size", "8", "-q"]


def _info(path):
    runner = CliRunner()
    text = runner.invoke(main, ["info", str(path)])
    assert text.exit_code == 0, text.output
    data = json.loads(runner.invoke(main, ["info", str(path), "--json"]).stdout)
    return text.stdout.splitlines(), data["stored"]


def test_a_plain_cache_says_what_it_lacks_and_how_to_add_it(image_folder, tmp_path):
    out = tmp_path / "c.h5"
    assert CliRunner().invoke(main, ["extract", "--images", str(image_folder), *TINY, "--out", str(out)]).exit_code == 0
    lines, stored = _info(out)
    assert stored == {"groups": None, "split": None, "dup_clusters": None, "bn_stats": None}
    assert "groups     none (a CSV's group column adds them)" in lines
    assert "split      none (a CSV's split column adds it)" in lines
    assert "duplicates not stored (layerprobe duplicates CACHE stores them)" in lines
    assert "bn stats   not stored (extract --bn-stats adds them)" in lines


def test_groups_split_clusters_and_batchnorm_statistics_are_reported(image_csv, tmp_path):
    out = tmp_path / "c.h5"
    args = ["extract", "--csv", str(image_csv), *TINY, "--layers", "1,pre_logits", "--bn-stats", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    clusters = np.arange(16)
    clusters[[1, 2]] = 0  # rows 0, 1, 2 in one cluster
    clusters[[5]] = 4  # rows 4 and 5 in another
    add_row_column(out, "dup_cluster", clusters, {"threshold": 0.9, "output": "pre_logits/none"})
    lines, stored = _info(out)
    assert stored == {
        "groups": {"distinct": 8, "rows_without": 0},
        "split": {"test": 4, "train": 12},
        "dup_clusters": {"clusters": 2, "rows_in_clusters": 5, "threshold": 0.9, "output": "pre_logits/none"},
        "bn_stats": {"layers": 13, "images": 16, "members_recorded": True},
    }
    assert "groups     8 distinct, 0 row(s) without" in lines
    assert "split      test 4, train 12" in lines
    assert "duplicates 2 cluster(s) holding 5 images (0.9 on pre_logits/none)" in lines
    assert "bn stats   13 BatchNorm layers over 16 images" in lines
