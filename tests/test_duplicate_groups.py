"""Leakage-safe probing: duplicate clusters become groups, leaks are measured, splits compared."""

import json
import logging

import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cli import main
from pipeline.duplicates import auto_groups, scan_cache, store_clusters
from pipeline.inputs import from_csv
from pipeline.probes import ProbeConfig, run_probes

from .conftest import make_folder

COPIES = [("benign", 0), ("benign", 1), ("benign", 2), ("malignant", 0), ("malignant", 1), ("malignant", 2)]


@pytest.fixture
def cache_with_duplicates(tmp_path, tiny_config):
    """24 images, 6 of them copied twice under other names, with a patient column linking two more."""
    folder = make_folder(tmp_path / "images", n_per_class=12)
    rows = []
    for label in ("benign", "malignant"):
        for path in sorted((folder / label).iterdir()):
            rows.append((f"images/{label}/{path.name}", label, ""))
    for label, k in COPIES:
        source = sorted((folder / label).iterdir())[k]
        for n in range(2):
            copy = folder / label / f"copy{n}_{source.name}"
            copy.write_bytes(source.read_bytes())
            rows.append((f"images/{label}/{copy.name}", label, ""))
    rows = [(p, l, "patientA" if p.rsplit("/", 1)[-1].split(".")[0] in ("img10", "img11") else g) for p, l, g in rows]
    table = tmp_path / "table.csv"
    table.write_text("path,label,group\n" + "".join(f"{p},{l},{g}\n" for p, l, g in rows))
    path = extract(from_csv(table), tiny_config(), out=tmp_path / "c.h5", progress=False).path
    return path


def _store(path):
    report = scan_cache(path, threshold=0.999)
    store_clusters(report)
    return report


def test_auto_groups_join_duplicates_and_user_groups(cache_with_duplicates):
    _store(cache_with_duplicates)
    with open_cache(cache_with_duplicates) as cache:
        groups = auto_groups(cache)
        ids = list(cache.ids)
    group_of = dict(zip(ids, groups))
    for label, k in COPIES:
        members = [i for i in ids if i.startswith(f"images/{label}/") and i.endswith(f"_img{k:02d}" + i[-4:])]
        original = [i for i in ids if i.startswith(f"images/{label}/img{k:02d}.")]
        assert len({group_of[i] for i in members + original}) == 1
    patient = [i for i in ids if i.rsplit("/", 1)[-1].split(".")[0] in ("img10", "img11")]
    assert len(patient) == 4 and len({group_of[i] for i in patient}) == 1
    assert len(set(groups)) == 36 - 12 - 3  # 6 triples become 6 groups, patientA's 4 rows one group


def test_probe_with_auto_groups_never_splits_a_cluster(cache_with_duplicates, tmp_path):
    report = _store(cache_with_duplicates)
    results = run_probes(cache_with_duplicates, ProbeConfig(probes=("logreg",), layers=("pre_logits",), folds=3,
                                                           n_boot=50), out=tmp_path / "r.json", progress=False)
    assert results.data["groups"] == "auto"  # the default once clusters are stored
    folds = results.folds.test_fold[0]
    for rows in report.groups():
        assert len(set(folds[rows])) == 1
    assert results.data["leakage"]["rows_with_duplicate_in_training"] == 0


def test_plain_folds_warn_how_much_they_leak(cache_with_duplicates, tmp_path, caplog):
    _store(cache_with_duplicates)
    with caplog.at_level(logging.WARNING):
        results = run_probes(cache_with_duplicates, ProbeConfig(probes=("logreg",), layers=("pre_logits",), folds=3,
                                                               groups="none", n_boot=50),
                             out=tmp_path / "r.json", progress=False)
    leak = results.data["leakage"]
    assert leak["rows_with_duplicate_in_training"] > 0
    assert f"groups 'none' leaks: {leak['rows_with_duplicate_in_training']} of 36 test rows" in caplog.text


def test_auto_without_stored_clusters_scans_at_the_defaults(cache_with_duplicates, caplog):
    with open_cache(cache_with_duplicates) as cache:
        with caplog.at_level(logging.WARNING):
            groups = auto_groups(cache)
    assert "has no stored duplicate clusters" in caplog.text and len(groups) == 36


def test_compare_splits_in_the_cli_and_the_report(cache_with_duplicates):
    _store(cache_with_duplicates)
    runner = CliRunner()
    args = ["probe", str(cache_with_duplicates), "--probes", "logreg", "--layers", "pre_logits,blocks.4",
            "--folds", "3", "--repeats", "1", "--bootstrap", "50", "-q"]
    result = runner.invoke(main, args + ["--compare-splits", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["output"] for c in data["comparison"]] == ["blocks.4/avg", "pre_logits/none"]
    assert all(c["difference"] == pytest.approx(c["plain"] - c["grouped"]) for c in data["comparison"])
    results_path = data["results"]
    assert (cache_with_duplicates.parent / "c.probes.leaky.json").exists()
    report = runner.invoke(main, ["report", results_path, "--compare-splits"])
    assert report.exit_code == 0, report.output
    page = open(report.stdout.strip()).read()
    assert "Group-aware against plain folds" in page and "plain folds</th>" in page
    refused = runner.invoke(main, args + ["--groups", "none", "--compare-splits", "--out",
                                          str(cache_with_duplicates.parent / "n.json")])
    assert refused.exit_code == 1 and "--compare-splits sets group-aware folds against plain ones" in refused.output


def test_report_compare_splits_needs_the_plain_run(cache_with_duplicates):
    runner = CliRunner()
    runner.invoke(main, ["probe", str(cache_with_duplicates), "--probes", "logreg", "--layers", "pre_logits",
                         "--folds", "3", "--bootstrap", "20", "-q"])
    result = runner.invoke(main, ["report", str(cache_with_duplicates.with_name("c.probes.json")), "--compare-splits"])
    assert result.exit_code == 1 and "groups='none' (layerprobe probe CACHE --compare-splits)" in result.output
