"""The study report: exact diagnostics, every section on one self-contained page, the CLI, and its width."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import ProbeError
from pipeline.report.diagnostics import calibration, confusion, operating_point

from .test_study import _cache

ROOT = Path(__file__).resolve().parents[1]


def require_browser() -> None:
    """The width checks need a real browser. A machine without one fails them, unless it says so explicitly
    (``LAYERPROBE_NO_BROWSER=1``, set by ``.ci/run`` when chromium cannot be installed): then they are skipped."""
    if shutil.which("chromium"):
        return
    if os.environ.get("LAYERPROBE_NO_BROWSER") == "1":
        pytest.skip("no chromium on this machine (LAYERPROBE_NO_BROWSER=1): the 1280-px width check did not run")
    pytest.fail("chromium is not installed (apt-get install -y chromium); the width check needs a real browser")


def test_calibration_matches_sklearn(seed):
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    cal = calibration(y, np.stack([1 - p, p], axis=1))
    assert cal.brier == pytest.approx(brier_score_loss(y, p))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert [v for v in cal.observed if v is not None] == pytest.approx(observed.tolist())
    assert [v for v in cal.mean_predicted if v is not None] == pytest.approx(predicted.tolist())
    counts = np.asarray(cal.counts)
    ece = sum(n / 200 * abs(o - m) for n, o, m in zip(counts[counts > 0], observed, predicted))
    assert cal.ece == pytest.approx(ece) and sum(cal.counts) == 200


def test_calibration_of_three_classes():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    cal = calibration(y, proba)
    assert cal.brier == pytest.approx(np.mean(((np.eye(3)[y] - proba) ** 2).sum(axis=1)))
    assert cal.what == "top-class confidence against accuracy"
    assert confusion(y, proba).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_operating_point_exact():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.6, 0.3, 0.55, 0.7, 0.9])
    point = operating_point(y, p, "sensitivity", 0.75)  # 3 of 4 positives at p >= 0.55
    assert point.threshold == 0.55 and point.sensitivity == 0.75 and point.specificity == 0.75
    assert point.counts == {"tp": 3, "fp": 1, "tn": 3, "fn": 1} and point.ppv == 0.75
    full = operating_point(y, p, "sensitivity", 1.0)
    assert full.threshold == 0.3 and full.sensitivity == 1.0 and full.specificity == 0.5
    spec = operating_point(y, p, "specificity", 1.0)
    assert spec.threshold == 0.7 and spec.specificity == 1.0 and spec.sensitivity == 0.5
    with pytest.raises(ProbeError, match="an operating point is set by sensitivity or specificity, not 'recall'"):
        operating_point(y, p, "recall", 0.9)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    """Two synthetic models' caches over real image files (so thumbnails can be read), studied by the CLI."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("study_report")
    images = tmp / "images"
    ids = [f"{'ab'[i // 30]}/img{i:04d}.png" for i in range(60)]
    for i, name in enumerate(ids):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 24, 3), 4 * i, np.uint8)).save(images / name)
    groups = [f"p{i // 2}" for i in range(60)]
    caches = [_cache(tmp / f"{n}.h5", n, p, seed=s, groups=groups, ids=ids, duration=d)
              for n, p, s, d in (("net-small", 1000, 1, 3.0), ("net-large", 5000, 2, 12.0))]
    from .conftest import forge_manifest

    for c in caches:
        forge_manifest(c, lambda m: m["input"].update(root=str(images), root_resolved=str(images)))
    out = tmp / "ab.study.json"
    result = CliRunner().invoke(main, ["probe", *map(str, caches), "--probes", "logreg,knn", "--folds", "3",
                                       "--repeats", "1", "--bootstrap", "40", "--out", str(out), "-q", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.output), caches


def test_cli_study_json(study_file):
    out, doc, _ = study_file
    assert doc["results"] == str(out) and len(doc["rows"]) == 2 * 3 * 2
    assert {r["backbone"] for r in doc["rows"]} == {"net-small", "net-large"}
    assert sum(r["best"] for r in doc["rows"]) == 2  # one per probe, across models
    assert doc["costs"]["net-small"]["images_per_s"] == 20.0
    assert doc["chosen"]["backbone"] in ("net-small", "net-large")


def test_study_report_has_every_section(study_file, tmp_path):
    out, doc, _ = study_file
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "r.html"), "--specificity", "0.8",
                                       "--no-similarity"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    c = doc["chosen"]
    assert f"<b>Use {c['backbone']}, layer {c['output']}, with the {c['probe']} probe</b>" in page
    for alt in ("model x layer heat map", "confusion matrix", "ROC curve", "reliability diagram",
                "score against throughput"):
        found = re.search(f'<img alt="{alt}" src="data:image/png;base64,([^"]+)">', page)
        assert found and base64.b64decode(found.group(1)).startswith(b"\x89PNG"), alt
    assert "At a stated <b>specificity of 0.8</b> for <b>malignant</b>" in page
    assert "Expected calibration error" in page and "Brier score" in page
    assert page.count('<img class=thumb src="data:image/jpeg;base64,') == 12  # 6 per class
    assert "<h2>Duplicates and leakage</h2>" in page and "no duplicates stored" in page
    assert page.count("<tr class='") == 12  # every row
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_report_refusals(study_file, tmp_path):
    out, _, caches = study_file
    result = CliRunner().invoke(main, ["report", str(out), "--sensitivity", "0.9", "--specificity", "0.9"])
    assert result.exit_code != 0 and "give one operating point: --sensitivity or --specificity, not both" in result.output
    result = CliRunner().invoke(main, ["probe", *map(str, caches), "--compare-splits", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--compare-splits works on one cache" in result.output


@pytest.mark.slow
def test_study_report_fits_1280_px_in_chromium(study_file, tmp_path):
    require_browser()
    out, _, _ = study_file
    CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "r.html"), "--no-similarity"])
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "report_width.py"), str(tmp_path / "r.html")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "fits" in run.stdout, run.stdout + run.stderr


@pytest.mark.slow
def test_single_cache_report_with_many_chosen_c_fits_1280_px(tmp_path):
    """The results table of one cache overflowed by its "chosen C" column (1490 px with eight values)."""
    from pipeline.probes import ProbeConfig, run_probes
    from pipeline.report import write_report

    from .probe_data import make_codes, write_cache

    require_browser()
    codes, y = make_codes(n=60, widths=(4, 8, 12), informative=(1, 2, 4))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["benign", "malignant"])
    run_probes(cache, ProbeConfig(probes=("logreg",), folds=3, n_boot=20), out=tmp_path / "c.probes.json",
               progress=False)
    doc = json.loads((tmp_path / "c.probes.json").read_text())
    for r in doc["rows"]:
        r["chosen"] = [{"repeat": 0, "fold": k, "C": c} for k, c in enumerate(10.0 ** np.arange(-4, 4))]
    (tmp_path / "c.probes.json").write_text(json.dumps(doc))
    page = write_report(tmp_path / "c.probes.json", similarity=False).html
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "report_width.py"), str(page)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "fits" in run.stdout, run.stdout + run.stderr
