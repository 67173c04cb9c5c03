"""Lazy package names (pipeline.lazy): imported on first use, then plain attributes; unknown names refused."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package, name, module", [("pipeline", "open_cache", "pipeline.cache"),
                                                   ("pipeline.probes", "run_probes", "pipeline.probes.grid"),
                                                   ("pipeline.activations", "get_pooling", "pipeline.activations.pooling")])
def test_a_name_is_imported_on_first_use_and_then_kept(package, name, module):
    code = (f"import sys, importlib; p = importlib.import_module({package!r}); before = {module!r} in sys.modules; "
            f"v = getattr(p, {name!r}); print(before, {module!r} in sys.modules, {name!r} in vars(p), "
            f"v is getattr(sys.modules[{module!r}], {name!r}), {name!r} in dir(p))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert found == ["False", "True", "True", "True", "True"]


def test_an_unknown_name_is_an_attribute_error_naming_the_package():
    import pipeline.probes

    with pytest.raises(AttributeError, match="module 'pipeline.probes' has no attribute 'no_such_name'"):
        pipeline.probes.no_such_name  # noqa: B018
