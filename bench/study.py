"""EfficientNet-Lite0 against Lite2 on Br35H: one study, its time, and what it concludes.

Usage:
    python bench/study.py [--jobs 2] [--cache-dir cache] [--lite2-layers all]

Extracts both bundled backbones (reused when their caches are up to date; the
extraction time printed is the one each cache's manifest recorded), stores
near-duplicate clusters in both, probes both on one set of group-aware folds,
writes the study report and checks it fits a 1280-px window in headless
Chromium. Prints each stage's wall time and the study's conclusion.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import ExtractConfig, bundled, extract, open_cache  # noqa: E402
from pipeline.duplicates import scan_cache, store_clusters  # noqa: E402
from pipeline.probes import ProbeConfig, run_study  # noqa: E402
from pipeline.report import write_study_report  # noqa: E402

MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")


def _timed(what: str, call):
    started = time.perf_counter()
    value = call()
    print(f"{what:<44} {time.perf_counter() - started:8.1f} s")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--lite2-layers", default="all", help="comma-separated --layers for Lite2 (default all)")
    args = parser.parse_args()
    started = time.perf_counter()
    caches = []
    for model in MODELS:
        layers = tuple(args.lite2_layers.split(",")) if model.endswith("lite2") else ("all",)
        result = _timed(f"extract {model}", lambda: extract(bundled("br35h"), ExtractConfig(
            model=model, layers=layers, bn_stats=True), cache_dir=args.cache_dir, progress=False))
        with open_cache(result.path) as cache:
            stored = cache.dup_cluster is not None
            recorded = cache.provenance.runtime.duration_s
        print(f"  {result.path.name}: {'reused' if result.reused else 'extracted'}; the extraction that wrote "
              f"it took {recorded} s")
        if not stored:
            _timed(f"duplicates {model}", lambda: store_clusters(scan_cache(result.path)))
        caches.append(result.path)
    out = args.cache_dir / "br35h-lite0-lite2.study.json"
    study = _timed("study (probe both on shared folds)", lambda: run_study(
        caches, ProbeConfig(groups="auto"), out=out, jobs=args.jobs, progress=False))
    report = _timed("study report", lambda: write_study_report(out))
    print(f"whole study after extraction: {time.perf_counter() - started:.1f} s (extraction reused or included above)")
    width = subprocess.run([sys.executable, str(Path(__file__).with_name("report_width.py")), str(report.html)],
                           capture_output=True, text=True)
    print(width.stdout.strip())
    _conclusion(study)
    return 0


def _conclusion(study) -> None:
    c = study.chosen
    print(f"\nfolds: {study.folds.kind} {study.folds.n_folds} x {study.folds.repeats}, groups {study.data['groups']} "
          f"({study.data['n_groups']} groups of {study.data['n_rows']} images)")
    for m in study.models:
        cost = m["cost"]
        leak = m.get("leakage") or {}
        print(f"{m['label']:<24} {cost['n_params'] / 1e6:5.2f} M params, input {cost['input_size'][1]} px, "
              f"{cost['images_per_s']} img/s when extracted, {len(m['outputs'])} outputs; plain split would leak "
              f"{leak.get('plain_folds')} test images, these folds {leak.get('study_folds')}")
    for probe, comparison in study.comparisons[c["metric"]].items():
        best = comparison["best"]
        top = {}
        for x in comparison["candidates"]:
            if x["backbone"] not in top or x["mean"] > top[x["backbone"]]["mean"]:
                top[x["backbone"]] = x
        per_model = "; ".join(f"{k} best {v['output']} {v['mean']:.4f} [{v['interval'][0]:.4f}, {v['interval'][1]:.4f}]"
                              for k, v in top.items())
        print(f"{probe:<7} best {best[0]} {best[1]}; {len(comparison['tied'])} of {len(comparison['candidates'])} "
              f"tied (models {sorted({t[0] for t in comparison['tied']})}); cheapest tied {comparison['cheapest']}; "
              f"{per_model}")
    print(f"chosen: {c['backbone']} {c['output']} {c['probe']} by {c['metric']} (best {c['best']}, {c['tied']} tied)")


if __name__ == "__main__":
    sys.exit(main())
