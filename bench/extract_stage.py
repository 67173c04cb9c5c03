"""The whole extract stage from JPEG files, with and without each of issue 16's changes.

Each run is a fresh child process that extracts N Br35H images (every stage +
pre_logits, avg pooling) into a new cache, so the figures include model build,
the check pass and HDF5 writing. Variants are interleaved (A, B, C, A, B, C, ...)
so that load from other work on a shared machine hits all of them alike:

  before      the code of the issue's day: the check pass decodes every image fully; glibc's default
              allocator settings; torch's ToTensor + Normalize at the end of preprocessing; each batch
              decoded in line, one image after another (its ``--workers 0`` on up to 4 cores); and
              scikit-learn imported to take the subset (its ``train_test_split``)
  allocator   only the allocator change (pipeline/activations/allocator.py)
  now         the current code: allocator change, the cheap JPEG check (decode once) started while the
              model is built (pipeline/activations/checking.py), each batch decoded in line on one
              thread per core, the subset taken without scikit-learn, and, where
              a decoding thread preprocesses, the table lookup that ends preprocessing
              (pipeline/model/to_tensor.py)

A variant may carry its own batch size and ``--workers``, ``NAME[@BATCH][:WORKERS]`` (``now@16``,
``now:thread``, ``now:0``, and ``now:serial``: in line, one image after another, as before the batch was
spread over one thread per core); the others use ``--batch-size`` and ``auto``. The children inherit the
environment, so e.g. ``OMP_WAIT_POLICY=PASSIVE python bench/extract_stage.py ...`` runs every variant so.

Printed per variant: median wall time of the child process, img/s, its ratio
to `before`, the same for the stage alone (`extract()` returning, without
interpreter start and imports), minor page
faults, system CPU seconds, CPU seconds (user + system: less sensitive than
wall time to other work on the machine) and peak RSS of the child, and how long
extraction waited for the check pass (all of it when nothing runs beside it; all as
reported by the child for itself).

Usage: python bench/extract_stage.py [--images 600] [--batch-size 32] [--rounds 2] [--quick]
                                     [--variants before,allocator,now,now@16]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from children import run_json_child

VARIANTS = ("before", "allocator", "now")


def child(variant: str, images: int, batch_size: int, out: str, workers: str = "auto") -> None:
    """Run one extraction in this process, patched to ``variant``; print a JSON line of timings."""
    import importlib

    from pipeline.activations import ExtractConfig, extract

    stage = importlib.import_module("pipeline.activations.extract")
    import pipeline.inputs.decode as decode
    from pipeline.inputs import bundled, stratified_subset

    if workers == "serial":
        importlib.import_module("pipeline.activations.feed").decode_threads = lambda: 1
        workers = "0"
    if variant in ("before", "allocator"):
        import sklearn.model_selection  # noqa: F401 - the issue's day took the subset with train_test_split

        feed = importlib.import_module("pipeline.activations.feed")
        feed.decode_threads = lambda: 1  # in line, one image after another
        workers = "0" if workers == "auto" else workers
        full = decode.decode_rgb
        decode.decode_rgb = lambda data, draft=False: full(data)  # the check decodes fully, as before
        importlib.import_module("pipeline.model.to_tensor").without_torch_threads = lambda compose: compose
    if variant == "before":
        stage.steady_allocator = contextlib.nullcontext
    checking = []
    ahead = importlib.import_module("pipeline.activations.checking").CheckAhead
    take = ahead.take

    def timed_take(self, *args, **kwargs):  # how long extraction waited for the check
        start = time.perf_counter()
        try:
            return take(self, *args, **kwargs)
        finally:
            checking.append(time.perf_counter() - start)

    ahead.take = timed_take
    if variant in ("before", "allocator"):  # the check came after the model build, with nothing beside it
        stage.CheckAhead = functools.partial(ahead, ahead=False)
    subset = stratified_subset(bundled("br35h"), images, seed=0)
    config = ExtractConfig(batch_size=batch_size, workers=workers)
    result = extract(subset, config, out=out, progress=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process, all threads; ru_maxrss in KiB
    print(json.dumps({"seconds": result.seconds, "rows": result.rows, "check_s": sum(checking),
                      "minflt": usage.ru_minflt, "stime": usage.ru_stime, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_gb": usage.ru_maxrss / 2**20}))


def run_child(variant: str, args, out: Path) -> dict:
    rest, _, workers = variant.partition(":")
    name, _, batch = rest.partition("@")
    return run_json_child(__file__, ["--child", name, "--workers", workers or "auto", "--images", str(args.images),
                                     "--batch-size",
                                     batch or str(args.batch_size), "--out", str(out)], variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="120 images, 1 round")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, each NAME or NAME@BATCH")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.images, args.batch_size, args.out, args.workers)
    if args.quick:
        args.images, args.rounds = 120, 1

    print(f"whole extract stage: {args.images} Br35H JPEGs, tf_efficientnet_lite0, all stages + pre_logits, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs, {args.rounds} interleaved round(s), load "
          f"{os.getloadavg()[0]:.2f}")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v.partition(":")[0].partition("@")[0] not in VARIANTS]
    if unknown or "before" not in variants:
        parser.error(f"variants must include 'before' and be among {VARIANTS} (NAME or NAME@BATCH); got {unknown}")
    results = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for variant in variants:
                out = Path(tmp) / f"{variant.replace('@', '-').replace(':', '-')}{round_no}.h5"
                results[variant].append(run_child(variant, args, out))
                out.unlink(missing_ok=True)
    base = statistics.median(r["wall"] for r in results["before"])
    stage_base = statistics.median(r["seconds"] for r in results["before"])
    print(f"{'variant':<12} {'wall s':>7} {'img/s':>7} {'x before':>8} {'stage s':>7} {'x before':>8} "
          f"{'minor faults':>13} {'sys s':>6} {'CPU s':>6} {'peak RSS GB':>11} {'check s':>8}")
    for variant, rows in results.items():
        med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
        print(f"{variant:<12} {med('wall'):7.1f} {args.images / med('wall'):7.1f} {base / med('wall'):8.2f} "
              f"{med('seconds'):7.1f} {stage_base / med('seconds'):8.2f} "
              f"{med('minflt') / 1e6:12.2f}M {med('stime'):6.1f} {med('cpu'):6.1f} {max(r['maxrss_gb'] for r in rows):11.2f} "
              f"{med('check_s'):8.2f}")
    print("per round (wall s): " + "; ".join(f"{v} " + ", ".join(f"{r['wall']:.1f}" for r in rows)
                                             for v, rows in results.items()))


if __name__ == "__main__":
    main()
