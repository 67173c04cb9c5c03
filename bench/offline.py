"""Offline: how long `layers` and a weights-less `extract` take on a machine without network.

Runs each command as a fresh process (imports included, as a user sees it) with
empty hub caches under a temporary HF_HOME/TORCH_HOME, and prints its wall time,
its CPU time (user + system; less sensitive to a busy machine than the wall
time), exit code and the number of lines it wrote to stderr, and the load
average before and after. Run it on a machine that
cannot reach huggingface.co / download.pytorch.org (the network check is real).

Usage: .venv/bin/python bench/offline.py [--rounds 3] [--model resnet50]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str], env: dict) -> tuple[float, float, int, list[str]]:
    start, cpu = time.perf_counter(), _cpu()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True)
    return time.perf_counter() - start, _cpu() - cpu, done.returncode, done.stderr.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet50")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label in ("a", "b"):
            (tmp / "images" / label).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp / "images" / label / "x.png")
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_HOME=str(tmp / "hf"), TORCH_HOME=str(tmp / "torch"),
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        extract = ["extract", "--images", str(tmp / "images"), "--out", str(tmp / "c.h5")]
        cases = [
            (f"layers {opts.model}", ["layers", opts.model], env),
            (f"layers torchvision/{opts.model}", ["layers", f"torchvision/{opts.model}"], env),
            (f"extract --model {opts.model} (no weights)", [*extract, "--model", opts.model], env),
            (f"extract --model torchvision/{opts.model} (no weights)", [*extract, "--model", f"torchvision/{opts.model}"],
             env),
            (f"HF_HUB_OFFLINE=1 extract --model {opts.model} (no weights)", [*extract, "--model", opts.model],
             {**env, "HF_HUB_OFFLINE": "1"}),
        ]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {opts.rounds} rounds")
        print(f"{'command':<62}{'median s':>9}{'max s':>7}{'cpu s':>7}{'exit':>5}{'stderr lines':>13}")
        for label, args, case_env in cases:
            results = [run(args, case_env) for _ in range(opts.rounds)]
            times, cpu = [r[0] for r in results], [r[1] for r in results]
            code, stderr = results[-1][2], results[-1][3]
            print(f"{label:<62}{statistics.median(times):>9.1f}{max(times):>7.1f}{statistics.median(cpu):>7.1f}"
                  f"{code:>5}{len(stderr):>13}")
            if code:
                print(f"    {stderr[-1][:160]}")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
