"""End to end on a synthetic DICOM study: extract -> duplicates -> probe with patient-level results -> report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("pydicom")

from pipeline.cli import main  # noqa: E402
from tests.conftest import TINY_MODEL, TINY_SIZE  # noqa: E402
from tests.medical_data import dicom_study  # noqa: E402


@pytest.mark.slow
def test_a_dicom_study_end_to_end_with_patient_level_results(tmp_path):
    study = dicom_study(tmp_path / "study", patients=6, slices=3)
    cache = tmp_path / "study.h5"
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    run("extract", "--dicom", study, "--window", "soft-tissue", "--model", TINY_MODEL, "--random-init",
        "--img-size", TINY_SIZE, "--workers", 0, "--out", cache, "--quiet")
    info = json.loads(run("info", cache, "--json"))
    assert info["rows"] == 36 and info["class_counts"] == {"lesion": 18, "normal": 18}
    assert info["manifest"]["preprocessing"]["colour"]["window"] == {"mode": "preset", "center": 50.0,
                                                                     "width": 400.0, "name": "soft-tissue"}
    assert info["stored"]["groups"]["distinct"] == 12  # one group per patient
    run("duplicates", cache)
    results = tmp_path / "study.probes.json"
    table = run("probe", cache, "--probes", "logreg", "--layers", "-1", "--folds", 3, "--repeats", 1,
                "--bootstrap", 200, "--out", results, "--quiet")
    assert "patient mean" in table.splitlines()[0] and "patient max" in table.splitlines()[0]
    doc = json.loads(results.read_text())
    assert doc["data"]["patients"] == {"column": "groups", "n": 12, "aggregations": ["mean", "max"]}
    row = doc["rows"][0]
    assert set(row["patient_metrics"]) == {"mean", "max"}
    assert len(row["patient_metrics"]["mean"]["roc_auc"]["folds"]) == 3
    report = run("report", results, "--no-similarity").strip()
    page = open(report, encoding="utf-8").read()
    assert "Patient-level results" in page and "12 patients" in page
    assert "Doe^Jane" not in page and "St Example Hospital" not in page
    probe = run("fit", cache, "--layer", "pre_logits", "--probe", "logreg").strip()
    rows = run("predict", probe, cache, "--per-patient").splitlines()
    assert rows[0].startswith("group,n_images,predicted,p_lesion,p_normal,max_p_normal") and len(rows) == 13
    # new files are decoded with the probe's window (soft-tissue), not their own: same codes, same numbers
    fresh = run("predict", probe, study / "lesion", "--per-patient", "--device", "cpu", "--quiet").splitlines()
    cached = [r.split(",") for r in rows[1:] if r.startswith("lesion-")]
    assert fresh[0] == rows[0] and [r.split(",")[:3] for r in fresh[1:]] == [r[:3] for r in cached]
    assert [float(v) for r in fresh[1:] for v in r.split(",")[3:]] == pytest.approx(
        [float(v) for r in cached for v in r[3:]], abs=1e-5)
