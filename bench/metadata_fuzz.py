"""The long metadata fuzz: thousands of single-bit flips and zeroed 512-byte blocks of a small cache's
HDF5 metadata, each read whole and in slices and then verified, with a deadline per case.

Prints how many cases read back exactly, gave a one-line error, read back different numbers
silently ("wrong"), raised anything but a one-line CacheError ("traceback") or did not finish within
the deadline ("hang"), split by kind of damage, and lists every case of the last three kinds.
`--code /path/to/checkout` runs the same cases against another checkout's reader and writer (the
cache is then written by that checkout too), e.g. the code before per-array hashes.

Usage: .venv/bin/python bench/metadata_fuzz.py [--cases 3000] [--seed 2026] [--timeout 10] [--code DIR]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_harness.py"


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take before it counts as a hang")
    parser.add_argument("--code", default=None, help="another layerprobe checkout to test (default: this one)")
    args = parser.parse_args()
    if args.code:
        os.environ["FUZZ_CODE_ROOT"] = str(Path(args.code).resolve())
        sys.path.insert(0, os.environ["FUZZ_CODE_ROOT"])
    else:
        sys.path.insert(0, str(HARNESS.parent.parent))
    fuzz = _harness()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        reference = fuzz.build_cache(folder / "reference.h5")
        regions = fuzz.metadata_regions(reference)
        print(f"cache: {reference.stat().st_size} bytes, {sum(e - s for s, e in regions)} of them metadata "
              f"in {len(regions)} ranges; code: {os.environ.get('FUZZ_CODE_ROOT', HARNESS.parent.parent)}")
        cases = fuzz.make_cases(reference, args.cases, args.seed)
        started = time.perf_counter()
        results = fuzz.run_cases(reference, cases, folder, timeout=args.timeout)
        seconds = time.perf_counter() - started
    by_kind = collections.defaultdict(collections.Counter)
    for r in results:
        by_kind[r["kind"]][r["outcome"]] += 1
    print(f"{len(results)} cases (seed {args.seed}, deadline {args.timeout:g} s each) in {seconds:.0f} s")
    print(f"{'damage':<22}" + "".join(f"{name:>11}" for name in fuzz.OUTCOMES))
    names = {"flip": "single-bit flips", "zero": "zeroed 512-byte blocks"}
    for kind in ("flip", "zero"):
        total = sum(by_kind[kind].values())
        print(f"{names[kind] + f' ({total})':<22}" + "".join(f"{by_kind[kind][name]:>11}" for name in fuzz.OUTCOMES))
    table = fuzz.counts(results)
    print(f"verify: said OK where a reader failed, or itself failed, in {table['verify missed']} case(s)")
    for r in results:
        if r["outcome"] in ("wrong", "traceback", "hang") or r["verify"] not in ("ok", "problem"):
            print(f"  case {r['case']}: {r['kind']} at byte {r['offset']}: {r['outcome']}, verify {r['verify']}: "
                  f"{r['message'][:160]}")


if __name__ == "__main__":
    main()
