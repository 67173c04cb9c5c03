"""The notebook case: extract, then probe in one Python process, against the two CLI stages.

The issue's notes saw numpy linear algebra 10-50x slower after torch ran in the
same process. Per round, interleaved, two fresh processes each time:

  * two CLI stages: `python -m pipeline.cli extract ...`, then a second process
    that runs the probe workload on the cache;
  * one process (a notebook): `pipeline.activations.extract(...)` and then the
    same probe workload.

The probe workload, timed inside the process (imports excluded): `run_probes`
(logistic regression and LightGBM, 5 folds, bootstrap intervals) on every layer,
then linear algebra with numpy's default threads (per layer: SVD, X^T X and its
eigendecomposition; a 400 x 400 matmul + SVD + eigh loop). Wall and CPU seconds
(user + system of all threads: busy-waiting threads show up there), and the
thread settings the workload found (before --blas-threads), are printed; ratio = one process / CLI
(<= 1 means the notebook is not slower).

--hog keeps one core busy all along (a shared machine), --blas-threads N limits the linear algebra's BLAS
pools (the remedy for a shared machine).

Usage: .venv/bin/python bench/notebook.py [--images 96] [--model test_efficientnet] [--img-size 64] [--rounds 3]
       [--hog] [--blas-threads N] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def probe_workload(cache_path: Path, blas_threads: int | None = None, jobs: int = 1) -> dict:
    """The probe stage's work on one cache; wall and CPU seconds and the thread settings it found."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from pipeline import open_cache
    from pipeline.probes import ProbeConfig, run_probes

    settings = {Path(p["filepath"]).name: p["num_threads"] for p in threadpool_info()}
    if "torch" in sys.modules:
        settings["torch"] = sys.modules["torch"].get_num_threads()
    out = Path(tempfile.mkdtemp(prefix="notebook-probe-"))
    wall, cpu = time.perf_counter(), time.process_time()
    run_probes(cache_path, ProbeConfig(probes=("logreg", "lgbm"), folds=5), out=out / "r.json", jobs=jobs,
               progress=False)
    probe = time.perf_counter() - wall, time.process_time() - cpu
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(blas_threads, user_api="blas")  # None: leave them as they are
    wall, cpu = time.perf_counter(), time.process_time()
    with open_cache(cache_path) as cache:
        for layer, pooling in cache.outputs:
            x = cache.codes(layer, pooling).astype(np.float64)
            np.linalg.svd(x, full_matrices=False)
            np.linalg.eigh(x.T @ x)
    a = np.random.default_rng(0).standard_normal((400, 400))
    for _ in range(3):
        np.linalg.svd(a @ a.T)
        np.linalg.eigh(a @ a.T)
    linalg = time.perf_counter() - wall, time.process_time() - cpu
    limits.restore_original_limits()
    shutil.rmtree(out)
    return {"probe_wall": probe[0], "probe_cpu": probe[1], "linalg_wall": linalg[0], "linalg_cpu": linalg[1],
            "threads": settings}


def _extract_in_process(images: Path, cache_path: Path, model: str, img_size: int) -> None:
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import from_folder

    extract(from_folder(images), ExtractConfig(model=model, random_init=True, img_size=img_size, batch_size=16),
            out=cache_path, progress=False)


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli_extract(images: Path, cache_path: Path, model: str, img_size: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--images", str(images), "--model", model,
                    "--random-init", "--img-size", str(img_size), "--batch-size", "16", "--out", str(cache_path),
                    "--quiet"], env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--model", default="test_efficientnet")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, help="BLAS threads for the linear algebra (default: as found)")
    parser.add_argument("--jobs", type=int, default=1, help="the probe stage's --jobs (at 2 and more this "
                        "process fits too, beside jobs - 1 workers; its CPU seconds are this process's alone)")
    parser.add_argument("--hog", action="store_true", help="a busy process on one core all along (a shared machine)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # child: the probe stage alone on this cache
    parser.add_argument("--notebook", nargs=2, help=argparse.SUPPRESS)  # child: extract IMAGES into CACHE, then probe
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe_workload(Path(args.probe), args.blas_threads, args.jobs)))
        return
    if args.notebook:
        _extract_in_process(Path(args.notebook[0]), Path(args.notebook[1]), args.model, args.img_size)
        print(json.dumps(probe_workload(Path(args.notebook[1]), args.blas_threads, args.jobs)))
        return

    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_folder

    folder = Path(tempfile.mkdtemp(prefix="notebook-"))
    images = make_folder(folder / "images", n_per_class=args.images // 2)
    found: dict[str, list[dict]] = {"two CLI stages": [], "one process": []}
    blas = ([] if args.blas_threads is None else ["--blas-threads", str(args.blas_threads)]) + ["--jobs", str(args.jobs)]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    for _ in range(args.rounds):
        cache = folder / "cli.h5"
        cache.unlink(missing_ok=True)
        _cli_extract(images, cache, args.model, args.img_size)
        found["two CLI stages"].append(_child([*blas, "--probe", str(cache)]))
        cache = folder / "nb.h5"
        cache.unlink(missing_ok=True)
        found["one process"].append(_child([*blas, "--model", args.model, "--img-size", str(args.img_size),
                                            "--notebook", str(images), str(cache)]))
    if hog is not None:
        hog.kill()
        hog.wait()
    shutil.rmtree(folder)
    print(f"{'with a busy process on one core; ' if args.hog else ''}BLAS threads {args.blas_threads or 'as found'}; "
          f"probe --jobs {args.jobs}")
    print(f"{args.images} generated images, {args.model} (random init) at {args.img_size} px; "
          f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at the end")
    med = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "threads"}
           for name, rows in found.items()}
    for name, rows in found.items():
        spread = ", ".join(f"{r['probe_wall']:.2f}/{r['linalg_wall']:.2f}" for r in rows)
        print(f"{name:15s} probes {med[name]['probe_wall']:.2f} s wall {med[name]['probe_cpu']:.2f} s CPU | "
              f"linear algebra {med[name]['linalg_wall']:.2f} s wall {med[name]['linalg_cpu']:.2f} s CPU "
              f"(rounds, probes/linalg wall: {spread}); threads {rows[-1]['threads']}")
    for key in ("probe_wall", "probe_cpu", "linalg_wall", "linalg_cpu"):
        print(f"ratio one process / two CLI stages, {key.replace('_', ' ')}: "
              f"{med['one process'][key] / med['two CLI stages'][key]:.2f}")


if __name__ == "__main__":
    main()
