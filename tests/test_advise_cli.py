"""advise with probe results and a learning curve, through click's CliRunner."""

import json

import numpy as np
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.probes import ProbeConfig, load_results, run_probes

from .probe_data import make_codes, write_cache


def _cache(tmp_path, n=120):
    codes, y = make_codes(n=n, widths=(4, 6, 12), informative=(0, 4, 4))
    codes[("logits", "none")] = np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
    return write_cache(tmp_path / "c.h5", codes, y, ["no", "yes"])


def test_advise_reads_the_stored_comparisons_and_fits_a_learning_curve(tmp_path):
    cache = _cache(tmp_path)
    out = tmp_path / "c.probes.json"
    run_probes(cache, ProbeConfig(probes=("logreg",), folds=4, repeats=None, n_boot=10), out=out, progress=False)
    results = load_results(out)
    assert results.folds.repeats == 7  # auto: ceil(25 / 4) repeats on 120 rows
    stored = results.comparisons["roc_auc"]["logreg"]
    assert stored["n_estimates"] == 28 and stored["verdict"] in ("similar", "uncertain", "different")
    runner = CliRunner()
    args = ["advise", str(cache), "--results", str(out), "--learning-curve", "--curve-steps", "2", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layer"] == stored["chosen"] and data["tied"] == stored["tied"]
    assert data["similarity"] == "uncertain" or data["similarity"] == stored["verdict"]
    assert data["more_data"] in ("likely", "unlikely", "uncertain")
    assert [c["output"] for c in data["curves"]][0] == data["layer"]
    assert [f["topic"] for f in data["findings"]][:3] == ["data", "layer", "similarity"]
    text = runner.invoke(main, args[:-1])
    assert text.exit_code == 0 and text.stdout.splitlines()[3].startswith("more data  ")


def test_a_learning_curve_needs_results(tmp_path):
    result = CliRunner().invoke(main, ["advise", str(_cache(tmp_path)), "--learning-curve"])
    assert result.exit_code == 1
    assert result.output == ("Error: a learning curve needs probe results: pass results_path (--results), written by "
                             "run_probes (layerprobe probe)\n")


def test_old_results_files_without_comparisons_still_advise(tmp_path):
    cache = _cache(tmp_path)
    out = tmp_path / "c.probes.json"
    run_probes(cache, ProbeConfig(probes=("logreg",), folds=3, n_boot=10), out=out, progress=False)
    doc = json.loads(out.read_text())
    del doc["comparisons"]  # as written before paired comparisons existed
    out.write_text(json.dumps(doc))
    result = CliRunner().invoke(main, ["advise", str(cache), "--results", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[0] == "imagenet"


def test_repeats_default_to_auto_and_refuse_nonsense(tmp_path):
    cache = _cache(tmp_path, n=40)
    result = CliRunner().invoke(main, ["probe", str(cache), "--repeats", "0"])
    assert result.exit_code == 2
    assert "'0' is neither a positive whole number nor 'auto'; pass e.g. --repeats 5" in result.output
    help_text = CliRunner().invoke(main, ["probe", "--help"]).output
    assert "--repeats N|AUTO" in help_text and "[default: auto]" in help_text


def test_probe_marks_the_layers_tied_with_the_best(tmp_path):
    cache = _cache(tmp_path)
    args = ["probe", str(cache), "--probes", "logreg", "--folds", "3", "--repeats", "3", "--bootstrap", "10", "-q"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    rows = {r["output"]: r for r in json.loads(result.stdout)["rows"]}
    stored = load_results(tmp_path / "c.probes.json").comparisons["roc_auc"]["logreg"]
    assert [o for o, r in rows.items() if r["tied"]] == stored["tied"]
    assert rows["blocks.0/avg"]["tied"] is False  # the uninformative layer is worse than the best
    table = CliRunner().invoke(main, args).stdout.splitlines()
    marks = {line.split()[0]: line.split()[-1] for line in table[1:]}
    assert all(marks[o] in ("*", "=") for o in stored["tied"]) and marks["blocks.0/avg"] not in ("*", "=")
