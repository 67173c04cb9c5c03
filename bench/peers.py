"""layerprobe's extract stage against its peers on the same JPEGs, layers and pooling (issue 16).

N Br35H JPEGs (a seeded stratified subset), tf_efficientnet_lite0 with its
bundled weights, every stage (blocks.0/1/2/4/6) average-pooled plus pre_logits,
batch 32. Each variant runs in a fresh child process; variants are interleaved
round by round so that load from other work hits them alike:

  layerprobe   `extract()` with the default outputs into a new HDF5 cache
               (model build, check pass, content hashes, HDF5 writing included)
  thingsvision thingsvision's documented workflow (`get_extractor_from_model`
               on the same model object with the same timm transform, its
               `ImageDataset`/`DataLoader`, `extract_features` on the same
               modules, `global_pool` being pre_logits), then the average
               pooling of each map and one `.npz` written
  loop         what a user writes by hand: PIL decode, the model's own timm
               transform, `forward_intermediates`, global average pooling,
               numpy, one `.npz`; no allocator tuning, no channels_last
  bare         the ceiling: the same model as layerprobe runs it (channels_last,
               BatchNorm folded into the convolutions, every stage observed,
               glibc's allocator set as extraction sets it) on preprocessed
               tensors already in memory; only the forward passes are timed
  bare-timm    the same, with the model as timm builds it (BatchNorm not folded)
               and glibc's default allocator: the bare forward the issue measured

thingsvision is not a dependency of this project; it is looked for in
--tv-path (default /tmp/tv_pkgs, made by `pip install --no-deps --target`
plus the modules it imports, see BENCHMARKS.md). Two workarounds let 2.7.3
run beside this venv's torch 2.14 and numpy 2: `np.AxisError` is set to
`np.exceptions.AxisError` (thingsvision pins numpy<2), and timm (so torch,
torchvision and triton) is imported before thingsvision imports TensorFlow
(the other order segfaults in triton's C extension). If it still does not
import, its row says why.

Printed per variant: median wall time of the whole child process and its
img/s, the median time of the work alone (after imports: model build, reading,
decoding, forward, writing; for `bare` the forward passes only; the wall time
includes interpreter start and imports, TensorFlow's for thingsvision) and its img/s,
ratios, and peak RSS (VmHWM) of the child. Then peak RSS of layerprobe and
thingsvision at a second, smaller N (--rss-images).

Usage: python bench/peers.py [--images 1200] [--rounds 2] [--rss-images 300] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("layerprobe", "thingsvision", "loop", "bare", "bare-timm")
MODEL = "tf_efficientnet_lite0"
STAGES = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
BATCH = 32


def peak_rss_gb() -> float:
    """VmHWM of this process (ru_maxrss would carry the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def subset(images: int):
    from pipeline.inputs import bundled, stratified_subset

    return stratified_subset(bundled("br35h"), images, seed=0)


def run_layerprobe(images: int, out: Path) -> dict:
    from pipeline.activations import ExtractConfig, extract

    result = extract(subset(images), ExtractConfig(batch_size=BATCH), out=out / "cache.h5", progress=False)
    return {"rows": result.rows}


def import_thingsvision():
    """thingsvision 2.7.3 as installed beside this venv (see the module docstring for the two workarounds)."""
    import numpy as np
    import timm  # noqa: F401  (torch, torchvision and triton load before TensorFlow: the other order segfaults)

    np.AxisError = np.exceptions.AxisError  # thingsvision 2.7.3 pins numpy<2 and reads np.AxisError at import
    import thingsvision
    from thingsvision import get_extractor_from_model  # noqa: F401

    return thingsvision


def run_thingsvision(images: int, out: Path) -> dict:
    import numpy as np

    import_thingsvision()
    from thingsvision import get_extractor_from_model
    from thingsvision.utils.data import DataLoader, ImageDataset

    from pipeline.model import build_model

    chosen = subset(images)
    loaded = build_model(MODEL)
    extractor = get_extractor_from_model(model=loaded.module, device="cpu", backend="pt",
                                         preprocess=loaded.preprocessing.transform())
    # thingsvision's class-folder dataset fails with file_names (2.7.3: `_get_classes()` takes no argument),
    # so the chosen files are linked into one flat folder, an "instance dataset"
    flat = out / "images"
    flat.mkdir()
    names = []
    for record in chosen.records:
        names.append(record.id.replace("/", "__"))
        (flat / names[-1]).symlink_to(record.path)
    dataset = ImageDataset(root=str(flat), out_path=str(out / "order"), backend="pt", file_names=names,
                           transforms=extractor.get_transformations())
    batches = DataLoader(dataset=dataset, batch_size=BATCH, backend="pt")
    modules = [*STAGES, "global_pool"]  # global_pool's output is pre_logits (1280)
    features = extractor.extract_features(batches=batches, module_names=modules, flatten_acts=False,
                                          output_type="ndarray")
    pooled = {m: (a.mean(axis=(2, 3)) if a.ndim == 4 else a) for m, a in features.items()}
    np.savez(out / "features.npz", **pooled)
    return {"rows": len(pooled["global_pool"]), "widths": [pooled[m].shape[1] for m in modules]}


def run_loop(images: int, out: Path) -> dict:
    import numpy as np
    import timm
    import torch
    from PIL import Image

    from pipeline.model import build_model

    model = build_model(MODEL).module.eval()  # the same weights; a user would call timm.create_model
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    paths = [r.path for r in subset(images).records]
    codes = {name: [] for name in (*STAGES, "pre_logits")}
    with torch.inference_mode():
        for start in range(0, len(paths), BATCH):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start:start + BATCH]])
            final, stages = model.forward_intermediates(batch)
            for name, fmap in zip(STAGES, stages):
                codes[name].append(fmap.mean(dim=(2, 3)).numpy())
            codes["pre_logits"].append(model.forward_head(final, pre_logits=True).numpy())
    np.savez(out / "features.npz", **{k: np.concatenate(v) for k, v in codes.items()})
    return {"rows": len(paths)}


def run_bare(images: int, out: Path, as_timm_builds_it: bool = False) -> dict:
    from contextlib import ExitStack

    import torch
    from PIL import Image

    from pipeline.activations.allocator import steady_allocator
    from pipeline.activations.fold import folded_batchnorm
    from pipeline.model import build_model

    loaded = build_model(MODEL)
    transform = loaded.preprocessing.transform()
    tensors = torch.stack([transform(Image.open(r.path).convert("RGB")) for r in subset(images).records])
    model = loaded.module.to(memory_format=torch.channels_last)
    batches = [tensors[s:s + BATCH].contiguous(memory_format=torch.channels_last)
               for s in range(0, len(tensors), BATCH)]
    with ExitStack() as stack:
        if not as_timm_builds_it:
            stack.enter_context(steady_allocator())
            stack.enter_context(folded_batchnorm(model, loaded.preprocessing.input_size, list(STAGES)))
        stack.enter_context(torch.inference_mode())
        model(batches[0])  # one warm-up batch, not timed
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        forward = time.perf_counter() - start
    return {"rows": len(tensors), "work": forward}


RUNNERS = {"layerprobe": run_layerprobe, "thingsvision": run_thingsvision, "loop": run_loop, "bare": run_bare,
           "bare-timm": lambda images, out: run_bare(images, out, as_timm_builds_it=True)}


def child(variant: str, images: int, out: str) -> None:
    """Run one variant in this process; print one JSON line (work seconds, peak RSS)."""
    import pipeline.activations  # noqa: F401  (imports torch, timm, PIL, h5py: not part of the work time)
    import pipeline.model  # noqa: F401

    if variant == "thingsvision":
        import_thingsvision()  # TensorFlow too: thingsvision imports it unconditionally
    start = time.perf_counter()
    info = RUNNERS[variant](images, Path(out))
    work = info.pop("work", time.perf_counter() - start)
    print(json.dumps({"work": work, "rss_gb": peak_rss_gb(), **info}))


def run_child(variant: str, images: int, tv_path: str, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if variant == "thingsvision":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), tv_path) if p)
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", variant, "--images", str(images), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": failure(proc)}
    return {"wall": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def failure(proc: subprocess.CompletedProcess) -> str:
    """The exception line of a failed child (TensorFlow logs to stderr too), or its exit status."""
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and not line.startswith(("I0000", "W0000"))]
    return errors[-1].strip() if errors else f"exit status {proc.returncode}"


def thingsvision_problem(tv_path: str) -> str | None:
    """None if thingsvision imports from ``tv_path`` beside this venv's torch, else why not."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peers, torch; "
            "peers.import_thingsvision(); print(torch.__file__)")
    env = {**os.environ, "PYTHONPATH": tv_path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return failure(proc)
    torch_file = proc.stdout.split()[-1]
    if tv_path in torch_file:
        return f"a second torch was installed under {tv_path} ({torch_file}); reinstall with --no-deps"
    return None


def table(results: dict, images: int) -> None:
    """Medians, then the fastest round of each variant (on a shared machine, the least disturbed one)."""
    ok = {v: rows for v, rows in results.items() if rows and "error" not in rows[0]}
    for label, pick in (("median of rounds", statistics.median), ("fastest round", min)):
        val = lambda v, key: pick(r[key] for r in ok[v])  # noqa: E731
        print(f"\n{label}:\n{'variant':<13} {'wall s':>7} {'img/s':>7} {'work s':>7} {'img/s':>7} "
              f"{'lp x it (wall)':>14} {'lp x it (work)':>14} {'peak RSS GB':>11}")
        lp = "layerprobe" in ok
        for variant in VARIANTS:
            if variant not in results:
                continue
            if variant not in ok:
                print(f"{variant:<13} not run: {results[variant][0]['error']}")
                continue
            wall, work = val(variant, "wall"), val(variant, "work")
            ratio_wall = f"{wall / val('layerprobe', 'wall'):14.2f}" if lp and not variant.startswith("bare") else f"{'':>14}"
            ratio_work = f"{work / val('layerprobe', 'work'):14.2f}" if lp else f"{'':>14}"
            print(f"{variant:<13} {wall:7.1f} {images / wall:7.1f} {work:7.1f} {images / work:7.1f} "
                  f"{ratio_wall} {ratio_work} {max(r['rss_gb'] for r in ok[variant]):11.2f}")
    print("per round (wall s / work s): " + "; ".join(
        f"{v} " + ", ".join(f"{r['wall']:.1f}/{r['work']:.1f}" for r in rows) for v, rows in ok.items()))
    print("'lp x it' = layerprobe's img/s divided by that variant's (>1: layerprobe faster); for bare, "
          "layerprobe's whole stage (work) against the forward passes alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss-images", type=int, default=300, help="second N for peak RSS (0: skip)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tv-path", default="/tmp/tv_pkgs", help="folder thingsvision was pip-installed into")
    parser.add_argument("--quick", action="store_true", help="64 images, 1 round, RSS at 32")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.images, args.out)
    if args.quick:
        args.images, args.rounds, args.rss_images = 64, 1, 32
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    problem = thingsvision_problem(args.tv_path) if "thingsvision" in variants else None
    if problem:
        print(f"thingsvision cannot run: {problem}")
        variants.remove("thingsvision")

    print(f"{args.images} Br35H JPEGs, {MODEL} (bundled weights), {', '.join(STAGES)} avg + pre_logits, "
          f"batch {BATCH}, {os.cpu_count()} CPUs, {args.rounds} interleaved round(s); "
          f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {v: [] for v in variants}
    if problem:
        results["thingsvision"] = [{"error": problem}]
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for variant in variants:
                results[variant].append(run_child(variant, args.images, args.tv_path,
                                                  Path(tmp) / f"{variant}{round_no}"))
        table(results, args.images)
        if args.rss_images:
            print(f"\npeak RSS in N (one run each at {args.rss_images} images; {args.images} from above):")
            for variant in ("layerprobe", "thingsvision", "loop"):
                if variant not in variants or "error" in results[variant][0]:
                    continue
                small = run_child(variant, args.rss_images, args.tv_path, Path(tmp) / f"{variant}-rss")
                big = max(r["rss_gb"] for r in results[variant])
                print(f"{variant:<13} {args.rss_images}: {small.get('rss_gb', float('nan')):.2f} GB   "
                      f"{args.images}: {big:.2f} GB   ratio {big / small.get('rss_gb', float('nan')):.2f}")
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
