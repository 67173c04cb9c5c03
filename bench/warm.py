"""A warm re-run of `layerprobe extract` with nothing new: from the record beside the cache, and without it.

One cold extraction of N Br35H images makes the cache (at --img-size 64 by
default, only to make that one run short: a warm re-run does no forward pass,
so the image size does not change what is measured). Then, interleaved:

  warm        the command again; the record beside the cache answers (no torch, no model, no hashing)
  full stage  the same command after deleting the record: torch, timm, the model, every file hashed,
              the cache opened and found up to date (what every re-run did before)

Printed: median wall time of each whole command (interpreter start included),
their ratio, and whether the warm run imported torch.

Usage: python bench/warm.py [--images 3000] [--rounds 3] [--img-size 64] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the CLI in this process and reports afterwards whether torch was imported.
RUNNER = (
    "import runpy, sys\n"
    "sys.argv = ['layerprobe'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('pipeline.cli', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, *command], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return wall, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="300 images, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 300, 2

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"
        command = ["extract", "--dataset", "br35h", "--img-size", str(args.img_size), "--cache-dir", str(cache_dir),
                   "--quiet"]
        if args.images < 3000:
            command += ["--limit", str(args.images)]
        cold, _ = run(command)
        print(f"warm re-run of `layerprobe {' '.join(command[:-3])} ...` on {args.images} Br35H images, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; cold run {cold:.1f} s")
        times = {"warm": [], "full stage": []}
        imported = []
        for _ in range(args.rounds):
            wall, stderr = run(command)
            times["warm"].append(wall)
            imported.append("torch imported: True" in stderr)
            shutil.rmtree(cache_dir / ".layerprobe")
            times["full stage"].append(run(command)[0])  # writes the record again
        warm, full = (statistics.median(times[k]) for k in ("warm", "full stage"))
        print(f"warm (record beside the cache)  {warm:6.2f} s   target < 2 s for 3,000 images")
        print(f"full stage (record deleted)     {full:6.2f} s   warm is {full / warm:.1f}x faster")
        print(f"torch imported by a warm run: {'yes' if any(imported) else 'no'}")
        print("per round (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))


if __name__ == "__main__":
    main()
