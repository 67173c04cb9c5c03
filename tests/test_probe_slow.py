"""End to end on the bundled EfficientNet-Lite0 weights and 200 real Br35H MRI images (marked slow)."""

import pytest

pytestmark = pytest.mark.slow


def test_late_layers_of_lite0_find_tumours_in_br35h(tmp_path):
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import bundled
    from pipeline.predict import predict_images
    from pipeline.probes import ProbeConfig, fit_probe, run_probes, summary_rows
    from pipeline.report import write_report

    images = bundled("br35h")
    cache = extract(images, ExtractConfig(limit=200, seed=0), out=tmp_path / "br35h.h5", progress=False).path
    results = run_probes(cache, ProbeConfig(folds=5, n_boot=200), jobs=2, progress=False)
    auc = {(r["output"], r["probe"]): r for r in summary_rows(results, "roc_auc")}
    assert len(auc) == 6 * 3  # five stages and pre_logits, three probes each
    late = auc[("pre_logits/none", "logreg")]
    assert late["mean"] > 0.85 and late["ci"][0] > 0.75  # chance is 0.5
    assert late["mean"] > auc[("blocks.0/avg", "logreg")]["mean"]
    assert write_report(cache.with_suffix(".probes.json")).html.stat().st_size > 10_000

    probe = fit_probe(cache, "pre_logits", "logreg")
    some = images.subset([*images.records[:2], *images.records[-2:]])  # two 'no' and two 'yes' scans
    predicted = predict_images(probe, some, progress=False)
    assert len(predicted.ids) == len(some.records)
