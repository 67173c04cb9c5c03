"""The packages import their stages lazily: a probe worker imports the fitting task and not the cache or inputs."""

import subprocess
import sys

import pipeline
import pipeline.probes


def _modules_after(statement: str) -> set[str]:
    script = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_a_fitting_worker_imports_neither_the_cache_nor_the_inputs():
    """What a joblib worker imports to unpickle its task (grid and learning curve hand out task.fit_fold)."""
    from pipeline.probes import curve, grid, task

    assert grid._fit_fold is task.fit_fold and curve.fit_fold is task.fit_fold
    assert task.fit_fold.__module__ == "pipeline.probes.task"
    loaded = _modules_after("import pipeline.probes.task")
    heavy = {"h5py", "PIL", "torch", "pipeline.cache", "pipeline.inputs", "pipeline.probes.grid",
             "pipeline.duplicates"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert {"pipeline.probes.registry", "pipeline.probes.estimators"} <= loaded


def test_every_exported_name_still_resolves():
    torch_stages = {name for name, module in pipeline._LAZY.items() if module in ("activations", "model")}
    for package in (pipeline, pipeline.probes):
        for name in set(package.__all__) - torch_stages:  # those would import torch into this process
            assert getattr(package, name) is not None, (package.__name__, name)
        assert set(package.__all__) <= set(dir(package))
    from pipeline import ActivationCache, ImageSet, bundled, open_cache  # noqa: F401
    from pipeline.probes import ProbeConfig, run_probes  # noqa: F401
    assert pipeline.open_cache is pipeline.cache.open_cache
    assert pipeline.probes.run_probes is pipeline.probes.grid.run_probes


def test_importing_the_package_imports_no_stage():
    loaded = _modules_after("import pipeline, pipeline.probes")
    assert not {"h5py", "PIL", "torch", "sklearn", "pipeline.cache", "pipeline.inputs"} & loaded
