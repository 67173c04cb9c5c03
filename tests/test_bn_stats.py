"""BatchNorm input statistics: exact, resumable and kept exact by incremental runs."""

import numpy as np
import pytest
import torch

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.activations.bnstats import batchnorm_modules
from pipeline.errors import PipelineError
from pipeline.inputs import decode_rgb, from_folder
from pipeline.model import build_model

from .conftest import TINY_MODEL, TINY_SIZE, make_folder


def _direct_stats(folder):
    """Independent computation: one batch of all images, hooks keep the whole BN inputs."""
    loaded = build_model(TINY_MODEL, random_init=True, img_size=TINY_SIZE)
    images = from_folder(folder)
    transform = loaded.preprocessing.transform()
    x = torch.stack([transform(decode_rgb(r.path)) for r in images.records])
    seen = {}
    def keep(name, value):
        seen.setdefault(name, value.double())  # a pre-hook must return None, or it replaces the input

    handles = [m.register_forward_pre_hook(lambda mod, i, n=name: keep(n, i[0]))
               for name, m in batchnorm_modules(loaded.module)]
    with torch.inference_mode():
        loaded.module(x)
    for h in handles:
        h.remove()
    return {n: (v.mean(dim=(0, 2, 3)).numpy(), v.var(dim=(0, 2, 3), unbiased=False).numpy()) for n, v in seen.items()}


def _stats(path):
    with open_cache(path) as cache:
        return {s.module: s for s in cache.bn_stats()}


# float32 activations of batches of 8 and of 16 differ in the last bits
def _assert_stats_equal(got, want):
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name].mean, want[name][0], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[name].var, want[name][1], rtol=1e-4, atol=1e-7, err_msg=name)


def test_stats_equal_a_direct_computation(image_folder, tiny_config, tmp_path):
    path = extract(from_folder(image_folder), tiny_config(bn_stats=True, layers=("1",)), out=tmp_path / "c.h5",
                   progress=False).path
    stats = _stats(path)
    _assert_stats_equal(stats, _direct_stats(image_folder))
    first = min(stats.values(), key=lambda s: s.depth)
    assert first.module == "bn1" and first.stride == 2 and first.count == 16 * 32 * 32
    model = build_model(TINY_MODEL, random_init=True, img_size=TINY_SIZE).module
    np.testing.assert_array_equal(first.running_var, model.bn1.running_var.double().numpy())
    with open_cache(path) as cache:
        recorded = cache.manifest["bn_stats"]
        assert {k: recorded[k] for k in ("modules", "images")} == {"modules": len(stats), "images": 16}
        # layers=("1",): the stem and stages 0 and 1 run before blocks.1; the rest after it
        members = recorded["members"]["blocks.1"]
        assert members[0] == "bn1" and all(m == "bn1" or m.startswith(("blocks.0.", "blocks.1.")) for m in members)
        assert len(members) + len(recorded["after_last"]) == len(stats) and recorded["never_ran"] == []
        assert cache.bn_members() == {"blocks.1": members}
    # depth is the firing order: sorted by it, the layers run stem, blocks.0 ... blocks.4, head
    assert [s.module for s in sorted(stats.values(), key=lambda s: s.depth)] == members + recorded["after_last"]


def test_adding_bn_stats_to_a_cache_forwards_every_image_once(image_folder, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    with open_cache(out) as cache:
        assert cache.bn_stats() is None
        before = cache.codes("pre_logits")
    result = extract(from_folder(image_folder), tiny_config(bn_stats=True), out=out, progress=False)
    assert result.forward_passes == 2
    _assert_stats_equal(_stats(out), _direct_stats(image_folder))
    with open_cache(out) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), before)
    again = extract(from_folder(image_folder), tiny_config(), out=out, progress=False)
    assert again.reused  # the statistics are kept without asking again


def test_incremental_runs_keep_the_stats_exact(tmp_path, tiny_config):
    folder = make_folder(tmp_path / "imgs", n_per_class=6)
    out = tmp_path / "c.h5"
    extract(from_folder(folder), tiny_config(bn_stats=True), out=out, progress=False)
    extra = make_folder(tmp_path / "extra", n_per_class=8, seed=5)
    for path in sorted(extra.rglob("img0[67].*")):
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    added = extract(from_folder(folder), tiny_config(), out=out, progress=False)
    assert added.forward_passes == 1  # only the 4 new images
    _assert_stats_equal(_stats(out), _direct_stats(folder))
    (folder / "benign" / "img00.png").unlink()
    extract(from_folder(folder), tiny_config(), out=out, progress=False)  # a removal: recomputed
    _assert_stats_equal(_stats(out), _direct_stats(folder))


def test_interrupted_run_resumes_with_exact_stats(image_folder, tiny_config, tmp_path, monkeypatch):
    from pipeline.cache import CacheWriter

    out = tmp_path / "c.h5"
    original = CacheWriter.write

    def write_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(CacheWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract(from_folder(image_folder), tiny_config(bn_stats=True), out=out, progress=False)
    monkeypatch.setattr(CacheWriter, "write", original)
    resumed = extract(from_folder(image_folder), tiny_config(bn_stats=True), out=out, progress=False)
    assert resumed.forward_passes == 1
    _assert_stats_equal(_stats(out), _direct_stats(image_folder))


def test_models_without_batchnorm_are_refused(image_folder, tiny_config, tmp_path):
    with pytest.raises(PipelineError, match="test_vit has no BatchNorm layers with running statistics"):
        extract(from_folder(image_folder), tiny_config(model="test_vit", bn_stats=True), out=tmp_path / "v.h5",
                progress=False)
