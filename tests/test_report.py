"""The HTML report: self-contained, with the plot, the table and where the numbers came from."""

import base64
import re

import pytest

from pipeline.errors import ProbeError
from pipeline.probes import ProbeConfig, run_probes
from pipeline.report import default_report_path, write_report

from .probe_data import make_codes, write_cache


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    codes, y = make_codes(n=60, widths=(4, 8, 12), informative=(1, 2, 4))
    cache = write_cache(tmp / "c.h5", codes, y, ["benign", "malignant"], groups=[f"p{i // 2}" for i in range(60)])
    run_probes(cache, ProbeConfig(folds=3, n_boot=50, seed=7), out=tmp / "c.probes.json", progress=False)
    return tmp / "c.probes.json"


def test_report_has_the_plot_the_table_and_the_facts(results, tmp_path):
    report = write_report(results, tmp_path / "out" / "report.html")
    page = report.html.read_text()
    assert report.png == tmp_path / "out" / "report.png"
    png = report.png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    embedded = re.search(r'<img alt="ROC AUC against layer depth[^"]*" src="data:image/png;base64,([^"]+)">', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert "<table>" in page and page.count("<tr class=") == 9  # 3 layers x 3 probes
    for layer in ("blocks.0/avg", "blocks.1/avg", "blocks.2/avg"):
        assert f"<td>{layer}</td>" in page
    assert page.count("★") == 3 + 1  # one best row per probe, plus the legend sentence
    for fact in ("synthetic-net", "StratifiedGroupKFold, 3 folds x 1 repeat(s), seeds [7]", "groups (30 groups)",
                 "50 resamples", "whole groups", "benign (30), malignant (30)", "sha256 abababababababab"):
        assert fact in page, fact
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_default_paths_sit_beside_the_results(results):
    report = write_report(results)
    assert report.html == default_report_path(results) == results.with_suffix(".html")
    assert report.png == results.with_suffix(".png") and report.png.exists()


def test_report_on_another_metric_and_bad_inputs(results, tmp_path):
    page = write_report(results, tmp_path / "r.html", metric="balanced_accuracy").html.read_text()
    assert 'alt="balanced accuracy against layer depth' in page
    with pytest.raises(ProbeError, match=r"unknown metric 'auc'; available: roc_auc, balanced_accuracy"):
        write_report(results, tmp_path / "r.html", metric="auc")
    with pytest.raises(ProbeError, match=r"results file '.*nothing.json' does not exist; create it with `layerprobe probe CACHE`"):
        write_report(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ProbeError, match=r"other.json is not a layerprobe probe results file"):
        write_report(tmp_path / "other.json")
