"""probe, report, fit and predict through click's CliRunner: output, files and exit codes."""

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli import _METRIC_NAMES, main
from pipeline.probes import METRICS

from .probe_data import make_codes, write_cache


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cache(tmp_path):
    codes, y = make_codes(n=60, widths=(4, 12), informative=(1, 4))
    return write_cache(tmp_path / "mri.h5", codes, y, ["no", "yes"])


def test_probe_prints_the_table_and_writes_results_beside_the_cache(runner, cache):
    result = runner.invoke(main, ["probe", str(cache), "--folds", "3", "--repeats", "1", "--bootstrap", "50", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "probe", "roc_auc", "95%", "CI", "best"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["blocks.0/avg", "logreg"], ["blocks.0/avg", "svm"], ["blocks.0/avg", "lgbm"],
        ["blocks.1/avg", "logreg"], ["blocks.1/avg", "svm"], ["blocks.1/avg", "lgbm"]]
    assert sum(line.endswith("*") for line in lines[1:]) == 3
    assert all(" ± " in line and "[" in line for line in lines[1:])
    assert (cache.parent / "mri.probes.json").exists()


def test_probe_json_and_options(runner, cache, tmp_path):
    out = tmp_path / "r.json"
    args = ["probe", str(cache), "--probes", "logreg", "--probes", "lgbm", "--layers", "blocks.1/avg", "--folds", "3",
            "--repeats", "2", "--seed", "3", "--jobs", "2", "--bootstrap", "20", "--metric", "log_loss",
            "--groups", "none", "--out", str(out), "--json", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["results"] == str(out) and data["metric"] == "log_loss"
    assert [(r["output"], r["probe"]) for r in data["rows"]] == [("blocks.1/avg", "logreg"), ("blocks.1/avg", "lgbm")]
    assert len(data["rows"][0]["chosen"]) == 6  # 3 folds x 2 repeats
    saved = json.loads(out.read_text())
    assert saved["folds"]["seeds"] == [3, 4] and saved["runtime"]["jobs"] == 2


def test_probe_without_bootstrap_has_no_interval(runner, cache):
    result = runner.invoke(main, ["probe", str(cache), "--probes", "lgbm", "--layers", "-1", "--folds", "3",
                                  "--bootstrap", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[-3:] == ["[nan,", "nan]", "*"]


def test_probe_logs_to_stderr_only(runner, cache):
    result = runner.invoke(main, ["probe", str(cache), "--probes", "logreg", "--folds", "3", "--repeats", "1",
                                  "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert "results: " in result.stderr and "results: " not in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--probes", "logreg,rf"], "Error: unknown probe 'rf'; available: knn, lgbm, logreg, svm"),
    (["--layers", "blocks.7"], "Error: 'blocks.7' is not a layer of mri.h5; it holds blocks.0/avg, blocks.1/avg"),
    (["--folds", "40"], "Error: class 'no' has 30 labelled image(s), fewer than folds=40 (--folds): use folds=30 "
                        "or fewer"),
    (["--groups", "groups"], "Error: groups 'groups' (--groups groups): mri.h5 has no such column"),
])
def test_probe_errors_are_one_line(runner, cache, args, message):
    result = runner.invoke(main, ["probe", str(cache), *args])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_probe_on_a_missing_cache(runner, tmp_path):
    result = runner.invoke(main, ["probe", str(tmp_path / "nope.h5")])
    assert result.exit_code == 1 and "does not exist; create it with `layerprobe extract`" in result.stderr


def test_report_prints_the_html_path(runner, cache, tmp_path):
    args = ["probe", str(cache), "--folds", "3", "--repeats", "1", "--bootstrap", "20", "-q"]
    assert runner.invoke(main, args).exit_code == 0
    result = runner.invoke(main, ["report", str(cache.parent / "mri.probes.json"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'r.html'}\n"
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text() and (tmp_path / "r.png").exists()
    missing = runner.invoke(main, ["report", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "Error: results file" in missing.stderr


def test_fit_then_predict_a_cache(runner, cache, tmp_path):
    result = runner.invoke(main, ["fit", str(cache), "--layer", "blocks.1/avg", "--probe", "svm"])
    assert result.exit_code == 0, result.output
    probe = cache.parent / "mri.blocks.1-avg.svm.probe.npz"
    assert result.stdout == f"{probe}\n" and probe.exists()
    predicted = runner.invoke(main, ["predict", str(probe), str(cache)])
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.DictReader(io.StringIO(predicted.stdout)))
    assert len(rows) == 60 and list(rows[0]) == ["id", "predicted", "p_no", "p_yes"]
    assert rows[0]["id"] == "img0000.png" and rows[0]["predicted"] in ("no", "yes")
    assert abs(float(rows[0]["p_no"]) + float(rows[0]["p_yes"]) - 1) < 1e-12
    out = tmp_path / "preds.csv"
    assert runner.invoke(main, ["predict", str(probe), str(cache), "--out", str(out)]).exit_code == 0
    assert out.read_text() == predicted.stdout


def test_fit_errors(runner, cache):
    result = runner.invoke(main, ["fit", str(cache), "--layer", "blocks.1/avg", "--probe", "forest"])
    assert result.exit_code == 1 and "Error: unknown probe 'forest'; available: knn, lgbm, logreg, svm" in result.stderr
    result = runner.invoke(main, ["fit", str(cache), "--probe", "svm"])
    assert result.exit_code == 2 and "Missing option '--layer'" in result.stderr


def test_metric_choices_match_the_registry():
    assert list(_METRIC_NAMES) == list(METRICS)


def test_the_probe_stages_never_import_torch(tmp_path, cache):
    """probe, report, fit and predict-on-a-cache run in a fresh interpreter without loading torch."""
    script = f"""
import sys
from click.testing import CliRunner
from pipeline.cli import main
r = CliRunner()
cache = {str(cache)!r}
for args in (["probe", cache, "--folds", "3", "--repeats", "1", "--bootstrap", "10", "-q"],
             ["report", cache.replace(".h5", ".probes.json")],
             ["fit", cache, "--layer", "0", "--probe", "lgbm", "--out", {str(tmp_path / "p.probe.npz")!r}],
             ["predict", {str(tmp_path / "p.probe.npz")!r}, cache]):
    result = r.invoke(main, args)
    assert result.exit_code == 0, result.output
import pipeline.probes, pipeline.report
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision", "timm")))
print("LOADED", loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
