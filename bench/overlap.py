"""The whole extract stage with decoding overlapped or not: `--workers 0`, `thread` and `auto` (issue 16).

Each run is a fresh child process that extracts N Br35H JPEGs (every stage +
pre_logits, avg pooling, batch 32 unless told) into a new cache, so the figures
include interpreter start, imports, model build, the check pass and HDF5 writing.
Variants are interleaved (off, on, auto, off, on, auto, ...) so that load from
other work on a shared machine hits all of them alike:

  off    --workers 0: decode each batch in the main thread between forward passes (today's choice on <= 4 cores)
  on     --workers thread: one decode-ahead thread, queue of 2 batches
  auto   --workers auto (the default): times the first batches in line and with the thread, keeps the faster
  today  with --today DIR: the code in DIR (a checkout from before this change: `git archive <commit> | tar -x`)
         with its default on this machine (0 decoding processes on <= 4 cores, decoding through a DataLoader)
  unfolded  --workers auto --no-fold-batchnorm: the default without BatchNorm folded into the convolutions

Printed per variant: median wall time of the child, img/s, its ratio to `today` (to `off` without --today),
the stage alone (`extract()` returning), CPU seconds (user + system), peak RSS of
the child, and for `auto` what it chose each round and the ms per image it
measured; the load average before and after.

Usage: python bench/overlap.py [--images 600] [--batch-size 32] [--rounds 3] [--today DIR] [--variants off,auto,...]
                              [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path

from children import run_json_child

VARIANTS = {"off": "0", "on": "thread", "auto": "auto", "today": "0", "unfolded": "auto"}


def child(workers: str, images: int, batch_size: int, out: str, fold: bool = True) -> None:
    """Run one extraction in this process; print a JSON line of its timings and the decoding record."""
    from pipeline import open_cache
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import bundled, stratified_subset

    subset = stratified_subset(bundled("br35h"), images, seed=0)
    workers = int(workers) if workers.isdigit() else workers
    options = {} if fold else {"fold_batchnorm": False}  # the option did not exist before folding (and --today)
    result = extract(subset, ExtractConfig(batch_size=batch_size, workers=workers, **options), out=out, progress=False)
    with open_cache(result.path) as cache:
        extra = getattr(cache.provenance.runtime, "extra", {})
        decoding = extra.get("decoding")  # not recorded before issue 16
        folding = extra.get("batchnorm_folding")  # nor this before folding
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process, all threads; ru_maxrss in KiB
    print(json.dumps({"seconds": result.seconds, "rows": result.rows, "cpu": usage.ru_utime + usage.ru_stime,
                      "maxrss_gb": usage.ru_maxrss / 2**20, "decoding": decoding, "folding": folding}))


def run_child(variant: str, args, out: Path) -> dict:
    env = {"PYTHONPATH": str(Path(args.today).resolve())} if variant == "today" else None
    return run_json_child(__file__, ["--child", VARIANTS[variant], "--images", str(args.images), "--batch-size",
                                     str(args.batch_size), "--out", str(out)]
                          + (["--no-fold"] if variant == "unfolded" else []), variant, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--today", help="a checkout of the code before this change, run as the variant 'today'")
    parser.add_argument("--quick", action="store_true", help="160 images, 1 round")
    parser.add_argument("--variants", default="off,on,auto,unfolded",
                        help="comma-separated, of " + ", ".join(v for v in VARIANTS if v != "today")
                        + " (today is added with --today)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-fold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.images, args.batch_size, args.out, fold=not args.no_fold)
    if args.quick:
        args.images, args.rounds = 160, 1

    load = os.getloadavg()
    print(f"whole extract stage: {args.images} Br35H JPEGs, tf_efficientnet_lite0, all stages + pre_logits, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs, {args.rounds} interleaved round(s); load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    chosen = ["today"] * bool(args.today) + [v for v in args.variants.split(",") if v != "today"]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    results = {v: [] for v in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for variant in results:
                out = Path(tmp) / f"{variant}{round_no}.h5"
                results[variant].append(run_child(variant, args, out))
                out.unlink(missing_ok=True)
    against = next(v for v in ("today", "off", *results) if v in results)
    base = statistics.median(r["wall"] for r in results[against])
    print(f"{'variant':<8} {'wall s':>7} {'img/s':>7} {'x ' + against:>8} {'stage s':>8} {'CPU s':>6} {'peak RSS GB':>11}")
    for variant, rows in results.items():
        med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
        print(f"{variant:<8} {med('wall'):7.1f} {args.images / med('wall'):7.1f} {base / med('wall'):8.3f} "
              f"{med('seconds'):8.1f} {med('cpu'):6.1f} {max(r['maxrss_gb'] for r in rows):11.2f}")
    print("per round (wall s): " + "; ".join(f"{v} " + ", ".join(f"{r['wall']:.1f}" for r in rows)
                                             for v, rows in results.items()))
    for r in results.get("auto", []):
        d = r["decoding"] or {}
        print(f"auto chose {d.get('mode')!r} ({d.get('how')}): ms per image measured {d.get('ms_per_image')}")
    for variant, rows in results.items():
        print(f"{variant}: BatchNorm folding {rows[0].get('folding')}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
