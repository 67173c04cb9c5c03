"""The whole probe grid on the Br35H cache, and what it would cost without the cache.

Prints:
  * the wall time of the grid (every layer x logreg, svm, lgbm x 5 folds, bootstrap
    intervals included) for each --jobs value, and its speed-up over --jobs 1,
  * that the results do not depend on --jobs,
  * the time a user without the cache would pay for the same table: one
    extraction per layer (images / measured images/s, per layer), plus the grid.

The extraction rate comes from the cache's own manifest (the measured duration
of the extraction that made it), or is measured now on --measure N images.

Usage: .venv/bin/python bench/probe.py [CACHE] [--jobs 1 2] [--measure N]
Without CACHE, all 3000 Br35H images are extracted into cache/ with the default
settings (or that cache is reused if it exists).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.cache import open_cache
from pipeline.probes import ProbeConfig, run_probes


def default_cache() -> Path:
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import bundled

    return extract(bundled("br35h"), ExtractConfig(), cache_dir="cache", progress=True).path


def measured_rate(cache: Path, n: int) -> tuple[float, str]:
    """Images/s of one full multi-layer extraction pass."""
    with open_cache(cache) as c:
        m = c.manifest
    if n:
        from pipeline.activations import ExtractConfig, extract
        from pipeline.inputs import bundled

        saved = m["config"]
        config = ExtractConfig(model=saved["model"], layers=tuple(saved["layers"]), pools=tuple(saved["pools"]),
                               limit=n, seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            result = extract(bundled("br35h"), config, out=Path(tmp) / "c.h5", progress=False)
        return result.rows / result.seconds, f"measured now on {result.rows} images"
    seconds = m["runtime"].get("duration_s")
    return m["input"]["n_images"] / seconds, f"from the cache's extraction ({m['input']['n_images']} images in {seconds} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", nargs="?", type=Path)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--measure", type=int, default=0, help="Measure extraction on N images now (0: use the manifest).")
    args = parser.parse_args()

    cache = args.cache or default_cache()
    with open_cache(cache) as c:
        n_images, outputs = c.n_rows, c.outputs
    config = ProbeConfig()
    print(f"{cache}: {n_images} images, {len(outputs)} outputs ({', '.join(f'{l}/{p}' for l, p in outputs)}); "
          f"probes {', '.join(config.probes)}, {config.folds} folds, {config.n_boot} bootstrap resamples, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

    timings, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in args.jobs:
            start = time.perf_counter()
            results = run_probes(cache, config, out=Path(tmp) / f"grid-{jobs}.json", jobs=jobs, progress=False)
            timings[jobs] = time.perf_counter() - start
            rows[jobs] = [{k: v for k, v in r.items() if not k.startswith("fit_")} for r in results.rows]
            fits = len(results.rows) * config.folds
            cpu = sum(r["fit_cpu_seconds"] for r in results.rows)
            print(f"grid, --jobs {jobs}: {timings[jobs]:.1f} s ({fits} fits, "
                  f"{timings[args.jobs[0]] / timings[jobs]:.2f}x the --jobs {args.jobs[0]} speed; fits used "
                  f"{cpu:.1f} CPU-s, {cpu / timings[jobs]:.2f} cores on average; load average "
                  f"{os.getloadavg()[0]:.1f} after)", flush=True)
    same = all(r == rows[args.jobs[0]] for r in rows.values())
    print(f"results identical across --jobs: {same}")

    rate, source = measured_rate(cache, args.measure)
    extraction = len({l for l, _ in outputs}) * n_images / rate
    best = min(timings.values())
    print(f"extraction: {rate:.1f} images/s for every layer in one pass ({source})")
    print(f"without the cache (one extraction per layer): {len({l for l, _ in outputs})} x {n_images} images / "
          f"{rate:.1f} images/s = {extraction:.0f} s, plus the grid = {extraction + best:.0f} s "
          f"(an upper bound: passes for early layers stop early); with the cache: {best:.1f} s")


if __name__ == "__main__":
    main()
