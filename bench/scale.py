"""A million rows without surprises: time and peak memory of each cache operation at scale (issue 16).

Writes 4 synthetic shard caches (random codes, 6 layers of modest width, rows
assigned by sha256(id) mod 4 as `extract --shard I/4` does) through the
library's own CacheWriter (bench/merge.py's forger), then measures, each step
in a fresh subprocess with its peak RSS (VmHWM of /proc/self/status: ru_maxrss would
carry the parent's peak across fork and exec):

  merge     merge_shards of the 4 shards into one cache (which the other steps then use)
  open      open_cache (open_s), then ids, labels, groups and output_info (each column hashed on first read)
  read      reading one layer's codes (the widest)
  probe     run_probes on the narrowest layer: logreg, 2 folds, the default bootstrap (1,000 resamples)
  dups      the code-view duplicate scan (all pairs: O(n^2), only up to --dup-rows rows)

Each subprocess runs under an address-space limit (--limit-gb, default 12) so
that a step that would need far more memory fails with MemoryError instead of
taking the shared machine down.

Usage: PYTHONPATH=. .venv/bin/python bench/scale.py [--rows 1000000 | --quick] [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge as merge_bench  # noqa: E402  (bench/merge.py: the shard forger)

WIDTHS = {"blocks.0": 64, "blocks.1": 64, "blocks.2": 64, "blocks.4": 128, "blocks.6": 128, "pre_logits": 256}

STEPS = {
    "merge": """
from pipeline.cache import merge_shards
result = merge_shards(shards, out)
found = {"rows": result.rows}
""",
    "open": """
from pipeline.cache import open_cache
t0 = time.perf_counter()
with open_cache(out) as cache:
    t1 = time.perf_counter()
    ids, labels, groups = cache.ids, cache.labels, cache.groups
    infos = [cache.output_info(l, p) for l, p in cache.outputs]
found = {"rows": len(ids), "open_s": round(t1 - t0, 3), "ids_labels_groups_s": round(time.perf_counter() - t1, 2)}
""",
    "read": """
from pipeline.cache import open_cache
with open_cache(out) as cache:
    t0 = time.perf_counter()
    codes = cache.codes("pre_logits/none")
found = {"shape": list(codes.shape), "read_s": round(time.perf_counter() - t0, 2)}
""",
    "probe": """
from pipeline.probes import ProbeConfig, run_probes
results = run_probes(out, ProbeConfig(probes=("logreg",), layers=("blocks.0/avg",), folds=2, repeats=1),
                     out=folder / "probes.json", progress=False)
row = results["rows"][0] if isinstance(results, dict) else results.rows[0]
found = {"roc_auc_ci": row["metrics"]["roc_auc"]["ci"]}
""",
    "dups": """
from pipeline.duplicates.scan import scan_cache
report = scan_cache(out, output="blocks.0/avg", view="code")
found = {"groups": len(report.groups())}
""",
}

CHILD = """
import json, resource, sys, time
from pathlib import Path
limit = int({limit})
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
folder = Path({folder!r}); out = folder / "merged.h5"; shards = {shards!r}
started = time.perf_counter()
try:
{body}
    error = None
except MemoryError:
    found, error = {{}}, "MemoryError (over the address-space limit)"
seconds = time.perf_counter() - started
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({{"seconds": seconds, "rss_mb": int(hwm) / 1024,
                  "found": found, "error": error}}))
"""


def run_step(name: str, folder: Path, shards: list[str], limit_gb: float) -> dict:
    body = "\n".join("    " + line for line in STEPS[name].strip().splitlines())
    code = CHILD.format(limit=limit_gb * (1 << 30), folder=str(folder), shards=shards, body=body)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"seconds": float("nan"), "rss_mb": float("nan"), "found": {},
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--dir", default=None, help="folder for the temporary caches (default: the system's)")
    parser.add_argument("--limit-gb", type=float, default=12.0, help="address-space limit of each step")
    parser.add_argument("--dup-rows", type=int, default=100_000, help="largest row count the O(n^2) scan runs at")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    parser.add_argument("--keep", action="store_true", help="keep the caches (printed folder)")
    parser.add_argument("--reuse", default=None, help="a folder kept by --keep: measure its caches again")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    merge_bench.WIDTHS = WIDTHS
    folder = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="layerprobe-scale-", dir=args.dir))
    try:
        started = time.perf_counter()
        shards = sorted(str(p) for p in folder.glob("bench.shard*")) if args.reuse else \
            [str(p) for p in merge_bench.write_shards(folder, rows, 4)]
        floats = sum(WIDTHS.values())
        print(f"{rows:,} rows, 6 outputs ({floats} float32/row, {rows * floats * 4 / 1e9:.2f} GB of codes), "
              f"4 shards written in {time.perf_counter() - started:.0f} s; each step in a fresh process, "
              f"address space limited to {args.limit_gb:g} GB")
        print(f"{'step':<8} {'seconds':>8} {'peak RSS MB':>12}  result")
        for name in args.steps.split(","):
            if name == "dups" and rows > args.dup_rows:
                print(f"{name:<8} {'-':>8} {'-':>12}  not run: all pairs at {rows:,} rows (--dup-rows {args.dup_rows:,})")
                continue
            found = run_step(name, folder, shards, args.limit_gb)
            what = found["error"] or json.dumps(found["found"])
            print(f"{name:<8} {found['seconds']:8.2f} {found['rss_mb']:12.0f}  {what}", flush=True)
    finally:
        if args.keep or args.reuse:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
