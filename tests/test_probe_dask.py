"""The probe grid on a Dask cluster gives the local results; tasks read their layer from the cache file."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.cli import main
from pipeline.errors import ProbeError
from pipeline.probes import LayerSource, ProbeConfig, get_backend, load_probe_data, run_probes
from pipeline.probes import backends
from pipeline.probes.data import load_codes, resolve_outputs

from .probe_data import make_codes, write_cache

distributed = pytest.importorskip("distributed")

TIMINGS = ("fit_seconds", "fit_cpu_seconds")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    codes, y = make_codes(n=120, widths=(8, 24))
    groups = [f"patient{i // 3}" for i in range(len(y))]
    return write_cache(tmp_path_factory.mktemp("dask") / "c.h5", codes, y, ["benign", "malignant"], groups=groups)


@pytest.fixture(scope="module")
def cluster():
    saved = dict(os.environ)  # the workers' nanny sets OMP_NUM_THREADS=1 here: keep it from later tests
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local:
        yield local
    os.environ.clear()
    os.environ.update(saved)


def _rows(results):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in results.rows]


def test_dask_cluster_gives_the_local_results(cache, cluster, tmp_path):
    config = ProbeConfig(probes=("logreg", "svm", "lgbm"), folds=3, n_boot=100)
    local = run_probes(cache, config, out=tmp_path / "local.json", jobs=1, progress=False)
    remote = run_probes(cache, config, out=tmp_path / "dask.json", progress=False, backend="dask",
                        scheduler=cluster.scheduler_address)
    assert _rows(remote) == _rows(local)
    assert remote.folds.as_dict() == local.folds.as_dict()
    assert remote.runtime["backend"] == "dask" and remote.runtime["workers"] == 2
    assert remote.runtime["scheduler"] == cluster.scheduler_address
    assert local.runtime["backend"] == "local" and local.runtime["scheduler"] is None


def test_tasks_read_their_layer_from_the_file(cache):
    with open_cache(cache) as opened:
        kept = load_probe_data(opened, keep_codes=True)
        lean = load_probe_data(opened, keep_codes=False)
        output = resolve_outputs(opened, ("blocks.1/avg",))[0]
        want = load_codes(opened, output, kept.rows, kept.ids)
    assert lean.codes == {} and set(kept.codes) == {"blocks.0/avg", "blocks.1/avg"}
    source = LayerSource(str(cache), lean.cache_key, "blocks.1/avg", lean.rows)
    got = source.load()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    assert source.load() is got  # the next task on this worker needs no second read
    stale = LayerSource(str(cache), "0" * 64, "blocks.0/avg", lean.rows)
    with pytest.raises(ProbeError, match=r"c.h5 changed while probing \(key [0-9a-f]{12}, expected 000000000000\)"):
        stale.load()


def test_cli_backend_dask_starts_a_local_cluster(cache, tmp_path):
    environ = dict(os.environ)
    runner = CliRunner()
    args = ["probe", str(cache), "--probes", "logreg", "--folds", "3", "--repeats", "1", "--bootstrap", "50", "--json",
            "-q"]
    local = runner.invoke(main, [*args, "--out", str(tmp_path / "local.json")])
    remote = runner.invoke(main, [*args, "--out", str(tmp_path / "dask.json"), "--backend", "dask", "--jobs", "2"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert json.loads(remote.stdout)["rows"] == json.loads(local.stdout)["rows"]
    saved = json.loads((tmp_path / "dask.json").read_text())
    assert saved["runtime"]["backend"] == "dask" and saved["runtime"]["workers"] == 2
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # the workers' settings are undone
        assert os.environ.get(name) == environ.get(name), name


def test_backend_errors_are_clear(cache, tmp_path, monkeypatch):
    runner = CliRunner()
    args = ["probe", str(cache), "--probes", "logreg", "--folds", "3", "--bootstrap", "10", "-q",
            "--out", str(tmp_path / "r.json")]
    result = runner.invoke(main, [*args, "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: scheduler='tcp://127.0.0.1:1' (--scheduler) needs backend='dask' "
                                    "(--backend dask)")
    monkeypatch.setattr(backends, "CONNECT_TIMEOUT_S", 1)
    result = runner.invoke(main, [*args, "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1
    # the folds were made first (with the warning that the cache was never scanned for near-duplicates)
    assert result.output.splitlines()[-1].startswith("Error: cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'")
    result = runner.invoke(main, [*args, "--backend", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of 'local', 'dask'" in result.output
    with pytest.raises(ProbeError, match="unknown backend 'spark'; available: local, dask"):
        get_backend("spark")
