"""The ``layerprobe`` command: a thin layer over the library.

Options are parsed here, turned into config objects and handed to library
functions; library errors become one-line messages and a non-zero exit. stdout
carries results only (paths, tables, JSON); progress and logs go to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import signal
import sys

import click

from . import __version__
from .errors import CacheWriteError, PipelineError

log = logging.getLogger("pipeline")


class _Group(click.Group):
    """Turns library errors into ``Error: <message>`` and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None


def _split_list(values) -> tuple[str, ...]:
    """Accept ``--opt a,b`` and ``--opt a --opt b`` alike."""
    items = []
    for value in values or ():
        items += [v.strip() for v in str(value).split(",") if v.strip()]
    return tuple(items)


def model_options(func):
    """--weights and --random-init, shared by every command that builds a model."""

    @click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Local weights (.pth/.bin/.safetensors; timm or torchvision names, or "
              "another naming in the model's tensor order).")
    @click.option("--random-init", is_flag=True, help="Use an untrained model (explicit, never silent).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="layerprobe")
@click.option("-v", "--verbose", is_flag=True, help="Log more detail to stderr.")
@click.pass_context
def main(ctx, verbose):
    """Which layer of a pretrained CNN transfers to your images? Measure it.

    \b
    Stages:
      extract      codes of many layers in one forward pass -> one HDF5 cache (GPU if present)
      info/verify  what a cache holds; whether it is sound
      merge        the shard caches of extract --shard (or torchrun) as one cache
      duplicates   near-duplicate images, stored as groups for leakage-safe folds
      probe        logistic regression, SVM and LightGBM on every layer, cross-validated
      similarity   distance to ImageNet or another data set, and transferability, by layer
      advise       which layer, whether the data set is "different", whether to fine-tune
      report       an HTML report of the probe results
      fit/predict  a saved probe, and its predictions on new images

    \b
    Example, on the bundled Br35H MRI set and EfficientNet-Lite0:
      CACHE=$(layerprobe extract --dataset br35h --limit 300 --quiet)
      layerprobe duplicates "$CACHE"
      layerprobe probe "$CACHE" --groups auto --jobs 2
    """
    ctx.obj = {"verbose": verbose}
    _setup_logging(verbose, quiet=False)


@main.command()
@click.argument("model_name", metavar="MODEL")
@model_options
@click.option("--img-size", type=click.IntRange(min=8), help="Input side in pixels (default: the model's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(model_name, weights, random_init, img_size, as_json):
    """List the layers of MODEL that can be extracted.

    Index and module name of every stage, its channels and stride, its layout
    (NCHW or NHWC map, NLC tokens with K prefix tokens and the patch grid, NC
    vector) and the poolings it accepts, and the two special outputs
    pre_logits (pooled final features) and logits (ImageNet head). Any of
    these, or any other module name, can be passed to `extract --layers`.
    Lists the architecture: no pretrained weights are needed or downloaded
    (--weights FILE is checked against it when given).

    \b
    Example:
      layerprobe layers tf_efficientnet_lite0
    """
    from .activations.pooling import accepted_poolings
    from .model import available_layers, build_architecture, build_model

    loaded = (build_model(model_name, weights, random_init, img_size) if weights
              else build_architecture(model_name, img_size))
    specs = available_layers(loaded)
    if as_json:
        click.echo(json.dumps([{**s.as_dict(), "poolings": accepted_poolings(s.layout)} for s in specs], indent=2))
        return
    rows = [("index", "layer", "kind", "channels", "stride", "layout", "poolings")]
    for s in specs:
        rows.append(("" if s.index is None else str(s.index), s.name, s.kind, str(s.channels),
                     "" if s.stride is None else str(s.stride), s.layout.describe(),
                     ",".join(accepted_poolings(s.layout))))
    click.echo(_table(rows))


class _Shard(click.ParamType):
    """``I/N`` (shard I of N, counting from 0) or the word ``auto``."""

    name = "I/N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or value == "auto":
            return value
        index, slash, count = str(value).partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            self.fail(f"{value!r} is neither I/N (such as 0/4) nor 'auto'", param, ctx)
        index, count = int(index), int(count)
        if count < 1:
            self.fail(f"the shard count must be at least 1, got {count}", param, ctx)
        if index >= count:
            self.fail(f"shard index {index} is out of range (0 to {count - 1}) for {count} shards", param, ctx)
        return index, count


class _Workers(click.ParamType):
    """``auto``, ``thread`` or a number of decoding processes (0: decode in line)."""

    name = "auto|thread|N"

    def convert(self, value, param, ctx):
        from .activations.config import check_workers  # torch-free

        try:
            return check_workers(value.strip() if isinstance(value, str) else value)
        except PipelineError:
            self.fail(f"{value!r} is none of auto, thread or a number of decoding processes (0, 1, 2, ...)", param, ctx)


_WORKERS_HELP = (
    "How images are decoded while the model runs. auto (default): the first batches are decoded in turn in line, "
    "with one decode-ahead thread (and, on a CPU of more than 4 cores, with decoding processes), each run of 3 "
    "batches timed from asking for the first to the end of the last forward pass; in line carries on unless another "
    "way was 3% faster in every round (then the fastest of those; in line below 13 batches; on a GPU decoding "
    "processes). The choice and the figures go into the cache manifest (runtime.decoding). 0: decode each batch in "
    "line, between forward passes, its images side by side on one thread per core; thread: one decode-ahead thread; "
    "N: N decoding processes.")


@main.command()
@click.option("--images", type=click.Path(), help="Folder with one sub-folder of images per class.")
@click.option("--csv", "csv_file", type=click.Path(), help="Table with columns path,label[,group][,split].")
@click.option("--dataset", type=click.Choice(["br35h"]), help="A bundled data set.")
@click.option("--dicom", type=click.Path(), help="DICOM files: a folder (one sub-folder per class) or a CSV of paths.")
@click.option("--nifti", type=click.Path(), help="NIfTI volumes: a CSV path,label[,group][,split], cut into slices.")
@click.option("--window", help="DICOM/NIfTI window: a preset (brain, lung, bone, soft-tissue), CENTER,WIDTH such as "
                               "40,80, or 'file' (DICOM default: the file's own window).")
@click.option("--percentiles", help="NIfTI: scale from the volume's LOW,HIGH percentiles (default 0.5,99.5).")
@click.option("--slice-axis", type=click.IntRange(0, 2),
              help="NIfTI: slice along this canonical axis (default 2, axial).")
@click.option("--slice-step", type=click.IntRange(min=1), help="NIfTI: every k-th slice (default 1).")
@click.option("--slice-range", metavar="START:STOP", help="NIfTI: only slices START..STOP-1.")
@click.option("--model", "model_name", default="tf_efficientnet_lite0", show_default=True, help="Any timm model name, or torchvision/<name>.")
@model_options
@click.option("--layers", "layer_tokens", multiple=True, default=["all"], show_default=True,
              help="'all' (every stage + pre_logits), stage indices such as 1,3,-1, module names, pre_logits, logits.")
@click.option("--pool", "pools", multiple=True, default=["avg"], show_default=True, help="Pooling(s): avg, max, avgmax, gem over positions (patch tokens only for token outputs), token (the class token of token outputs); comma-separated or repeated.")
@click.option("--img-size", type=click.IntRange(min=8), help="Input side in pixels (default: the model's data config).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=_Workers(), default="auto", show_default=True, help=_WORKERS_HELP)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="What the model computes in: auto = fp16 autocast on a GPU, fp32 on a CPU; bf16/fp16 autocast may be "
                   "faster and change the codes slightly (part of the cache key; see BENCHMARKS.md).")
@click.option("--fold-batchnorm/--no-fold-batchnorm", default=True, show_default=True,
              help="Fold each BatchNorm into the convolution before it where that computes the same numbers (checked "
                   "on a test image; EfficientNet-Lite0's forward pass is 1.27x faster on 2 CPU cores). Not with "
                   "--bn-stats nor under bf16/fp16 autocast. Codes change only in their last bits, as between batch "
                   "sizes, so an existing cache is reused either way.")
@click.option("--limit", type=click.IntRange(min=1), help="Use a stratified, seeded subset of N images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit subset.")
@click.option("--on-bad-image", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Stop naming every undecodable file, or skip them (listed in the manifest).")
@click.option("--out", type=click.Path(dir_okay=False), help="Cache file (default: content-addressed under --cache-dir).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="cache", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for another extraction into the same cache instead of failing.")
@click.option("--bn-stats", is_flag=True,
              help="Also accumulate the data's per-channel mean and variance at every BatchNorm input (for `similarity`).")
@click.option("--shard", type=_Shard(), metavar="I/N|auto",
              help="Only shard I of N (I from 0): the images whose sha256(id) mod N is I, into the cache path with "
                   ".shardI-of-N before .h5; join them with `layerprobe merge`. 'auto' (the default under torchrun "
                   "with WORLD_SIZE > 1): shard RANK of WORLD_SIZE on GPU LOCAL_RANK.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or log lines; only the cache path.")
def extract(images, csv_file, dataset, dicom, nifti, window, percentiles, slice_axis, slice_step, slice_range,
            model_name, weights, random_init, layer_tokens, pools, img_size, batch_size,
            device, workers, precision, fold_batchnorm, limit, seed, on_bad_image, out, cache_dir, wait, bn_stats,
            shard, quiet):
    """Extract pooled codes of many layers into one HDF5 cache.

    One forward pass per batch yields every requested layer; rows are sorted by
    image id and written batch by batch. Prints the cache path on stdout. If a
    finished cache of the same settings and images exists, it is reused.

    \b
    Examples:
      layerprobe extract --dataset br35h
      layerprobe extract --images ./lesions --layers 1,3,pre_logits --pool avg,gem
      layerprobe extract --csv slices.csv --model tf_efficientnet_lite2 --limit 500
      layerprobe extract --dataset br35h --shard 2/4
      layerprobe extract --dicom ./studies --window brain
      layerprobe extract --nifti volumes.csv --slice-axis 2 --slice-step 4
      torchrun --nproc_per_node 8 -m pipeline.cli extract --csv slides.csv
    """
    from .activations import ExtractConfig, launched_in_parallel, rank_config
    from .activations import extract as run_extract

    if quiet:
        _setup_logging(False, quiet=True)
    image_set = _image_set(images, csv_file, dataset, dicom, nifti, window=window, percentiles=percentiles,
                           axis=slice_axis, step=slice_step, slice_range=slice_range)
    config = ExtractConfig(
        model=model_name, weights=weights, random_init=random_init, layers=_split_list(layer_tokens),
        pools=_split_list(pools), img_size=img_size, batch_size=batch_size, device=device, workers=workers,
        precision=precision, fold_batchnorm=fold_batchnorm, limit=limit, seed=seed, on_bad_image=on_bad_image,
        wait=wait, bn_stats=bn_stats, shard=None if shard == "auto" else shard,
    )
    if shard == "auto" or (shard is None and launched_in_parallel()):
        config = rank_config(config)
    try:
        with _sigterm_interrupts():
            result = run_extract(image_set, config, out=out, cache_dir=cache_dir, progress=not quiet)
    except CacheWriteError as exc:
        # HDF5 cannot always close a file after a failed write and may crash at
        # interpreter exit; committed rows are already on disk, so leave now.
        click.echo(f"Error: {exc}", err=True)
        sys.stderr.flush()
        os._exit(1)
    except KeyboardInterrupt as exc:
        command = shlex.join(["layerprobe", *sys.argv[1:]])
        what = "Terminated" if isinstance(exc, _Terminated) else "Interrupted"
        click.echo(f"{what}; committed rows are kept. Resume with:\n  {command}", err=True)
        sys.exit(128 + signal.SIGTERM if isinstance(exc, _Terminated) else 130)
    if result.reused:
        log.info("up to date: %s (%d rows)", result.path, result.rows)
    else:
        rate = result.rows / result.seconds if result.seconds else 0.0
        skipped = f", skipped {len(result.skipped)} bad image(s)" if result.skipped else ""
        log.info("wrote %d rows to %s in %.1f s (%.1f img/s)%s", result.rows, result.path, result.seconds, rate, skipped)
    click.echo(str(result.path))


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill`), handled like Ctrl-C: the writer closes and the lock is released."""


@contextlib.contextmanager
def _sigterm_interrupts():
    def interrupt(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_INPUT_OPTIONS = {"--images DIR": "folder", "--csv FILE": "csv", "--dataset br35h": "dataset",
                  "--dicom PATH": "dicom", "--nifti CSV": "nifti"}  # option -> source
_DECODING_FLAGS = {"window": "--window", "percentiles": "--percentiles", "axis": "--slice-axis",
                   "step": "--slice-step", "slice_range": "--slice-range"}


def _image_set(*values, **options):
    from .errors import InputError
    from .inputs.sources import get_source, load_input

    given = [(flag, value) for flag, value in zip(_INPUT_OPTIONS, values) if value]
    if len(given) != 1:
        found = f"got {' and '.join(flag.split()[0] for flag, _ in given)}" if given else "got none"
        flags = list(_INPUT_OPTIONS)
        raise InputError(f"pass exactly one input source: {', '.join(flags[:-1])} or {flags[-1]} ({found})")
    flag, value = given[0]
    source = get_source(_INPUT_OPTIONS[flag])
    stray = [k for k, v in options.items() if v is not None and k not in source.options]
    if stray:
        takers = [f.split()[0] for f, name in _INPUT_OPTIONS.items() if set(get_source(name).options) & set(stray)]
        verb = "does" if len(stray) == 1 else "do"
        raise InputError(f"{' and '.join(_DECODING_FLAGS[k] for k in stray)} {verb} not apply to {flag.split()[0]}; "
                         f"only to {' or '.join(takers)}")
    return load_input(source.name, value, **options)


@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and shapes as JSON.")
def info(cache_path, as_json):
    """Show what a cache holds: manifest, rows, per-layer shapes.

    \b
    Example:
      layerprobe info cache/br35h-tf_efficientnet_lite0-0123456789ab.h5
    """
    from .cache import open_cache

    with open_cache(cache_path) as cache:
        outputs = [{"output": f"{l}/{p}", **cache.output_info(l, p)} for l, p in cache.outputs]
        labels = cache.labels
        counts = {name: int((labels == i).sum()) for i, name in enumerate(cache.class_names)}
        manifest, typed, rows, extras = cache.manifest, cache.provenance, cache.n_rows, cache.extras()
    if as_json:
        click.echo(json.dumps({"path": str(cache_path), "rows": rows, "class_counts": counts, "stored": extras,
                               "outputs": outputs, "manifest": manifest}, indent=2, default=list))
        return
    click.echo(_describe(cache_path, rows, counts, typed))
    click.echo(_stored(extras))
    table = [("output", "kind", "channels", "stride", "shape")]
    for o in outputs:
        table.append((o["output"], str(o.get("kind", "")), str(o.get("channels", "")), str(o.get("stride", "") or ""),
                      " x ".join(map(str, o["shape"]))))
    click.echo("")
    click.echo(_table(table))


@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--no-inputs", is_flag=True, help="Skip re-hashing the input images.")
def verify(cache_path, no_inputs):
    """Check a whole cache: structure, row counts, commit marker, checksums, values, inputs.

    Reads every stored code and the BatchNorm sums (so HDF5's chunk checksums
    and the recorded content hashes are checked), looks for NaN or infinite values, and re-hashes the input images to find files that
    changed or disappeared since extraction. Exits 1 when anything is wrong.

    \b
    Example:
      layerprobe verify cache/br35h-tf_efficientnet_lite0-0123456789ab.h5
    """
    from .cache import verify_cache

    report = verify_cache(cache_path, check_inputs=not no_inputs)
    for line in report.checked:
        click.echo(f"checked  {line}")
    if report.ok:
        click.echo(f"OK       {cache_path}")
        return
    for problem in report.problems:
        click.echo(f"PROBLEM  {problem}")
    sys.exit(1)


@main.command()
@click.argument("shards", metavar="SHARDS...", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Merged cache (default: the shards' path without .shardI-of-N).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or log lines; only the cache path.")
def merge(shards, out, quiet):
    """Join the N shard caches of `extract --shard I/N` (or of torchrun) into one cache.

    Refuses shards that are missing, unfinished, damaged, given twice or from
    another run (other model, weights, preprocessing, precision, input, layers,
    pooling or shard count), and checks that together they hold every image
    exactly once. The result equals a single-process extraction: same ids in the
    same order, same codes, labels, groups and splits, BatchNorm sums added.
    Prints the merged cache's path.

    \b
    Example:
      layerprobe merge cache/br35h-tf_efficientnet_lite0-0123456789ab.shard*-of-4.h5
    """
    from .cache import merge_shards

    if quiet:
        _setup_logging(False, quiet=True)
    try:
        result = merge_shards(shards, out, progress=not quiet)
    except CacheWriteError as exc:
        click.echo(f"Error: {exc}", err=True)  # as in extract: leave without further HDF5 calls
        sys.stderr.flush()
        os._exit(1)
    if not result.reused:
        log.info("merged %d shards, %d rows, %.1f MB of codes into %s in %.1f s", result.shards, result.rows,
                 result.code_bytes / 1e6, result.path, result.seconds)
    click.echo(str(result.path))


class _Threshold(click.ParamType):
    """A cosine similarity in [-1, 1], or the word ``relative`` or ``auto``."""

    name = "threshold"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value in ("auto", "relative"):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'relative' or 'auto'", param, ctx)
        if not -1.0 <= number <= 1.0:
            self.fail(f"{number} is not a cosine similarity between -1 and 1 (or use 'relative' or 'auto')", param,
                      ctx)
        return number


@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--layer", help="Output to compare, e.g. pre_logits or blocks.6/avg (default: pre_logits, else the deepest).")
@click.option("--threshold", type=_Threshold(), default="relative", show_default=True,
              help="Code view: centred cosine at which two images count as near-duplicates, 'relative' (from the "
                   "data set's own neighbour distances) or 'auto' (Otsu).")
@click.option("--view", type=click.Choice(["both", "fingerprint", "code"]), default="both", show_default=True,
              help="Pairs from image fingerprints, from codes, or both (clusters from their union).")
@click.option("--print-threshold", type=click.FloatRange(-1, 1),
              help="Fingerprint view: correlation of the trimmed thumbnails' detail at which two images count as the "
                   "same (default: relative). The whole-image comparison keeps its own relative threshold (>= 0.99).")
@click.option("--mirror/--no-mirror", default=True, show_default=True,
              help="Fingerprint view: a horizontally mirrored image counts as the same image.")
@click.option("--pairs", "pairs_path", type=click.Path(dir_okay=False),
              help="CSV of every pair found (default: beside the cache, <cache>.duplicates.csv).")
@click.option("--no-store", is_flag=True, help="Only report; do not write the dup_cluster column into the cache.")
@click.option("--wait", is_flag=True, help="Wait for an extraction into the same cache instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def duplicates(cache_path, layer, threshold, view, print_threshold, mirror, pairs_path, no_store, wait, as_json):
    """Find near-duplicate images from fingerprints and codes, and store them as groups.

    Two views, blockwise (50,000 images need no 50,000 x 50,000 matrix): image
    fingerprints stored at extraction (contrast-normalised thumbnails: the
    detail of a border-trimmed one, compared under small crops, shifts,
    rotations and the mirror image, and the whole image, which must correlate
    at 0.99 or more; a cache without them gets them from its image files) and
    the codes, centred on the data
    set's mean. Each view's threshold is relative to the data set's own
    neighbour distances, so a homogeneous set does not collapse into a few
    giant clusters. Each pair is listed with the views that found it; clusters
    come from the union. Clusters with two labels are named: "same image"
    when the fingerprints are identical, else "look-alike" (check the labels,
    or expect these images to be hard). The clusters are written into the cache
    as the dup_cluster column, which `probe --groups auto` uses.

    \b
    Example:
      layerprobe duplicates cache/br35h-tf_efficientnet_lite0-0123456789ab.h5
    """
    from pathlib import Path

    from .duplicates import scan_and_store, write_pairs

    report = scan_and_store(cache_path, layer, threshold, store=not no_store, wait=wait, view=view, mirror=mirror,
                            print_threshold=print_threshold)
    pairs_path = Path(pairs_path) if pairs_path else Path(cache_path).with_suffix(".duplicates.csv")
    write_pairs(report, pairs_path)
    summary = {**report.summary(), "pairs_csv": str(pairs_path), "stored": not no_store}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    sizes = ", ".join(f"{n} of size {k}" for k, n in summary["cluster_sizes"].items()) or "none"
    views = summary["views"]
    compared = []
    if "fingerprint" in views:
        fp = views["fingerprint"]
        whole = f"; whole images at {fp['whole_threshold']} (relative)" if "whole_threshold" in fp else ""
        compared.append(("compared", f"{summary['rows']} images by fingerprint, detail at {fp['threshold']} "
                                     f"({fp['threshold_source']}){whole}"
                                     f"{', mirror included' if fp['mirror'] else ''}"))
    if "code" in views:
        compared.append(("compared", f"{summary['rows']} images by {summary['output']}, threshold "
                                     f"{summary['threshold']} ({summary['threshold_source']})"))
    kinds = ", ".join(f"{n} {k}" for k, n in summary["pair_kinds"].items()) or "none"
    conflicts = summary["label_conflicts"]
    same = sum(c["kind"] == "same image" for c in conflicts)
    lines = [
        *compared,
        ("pairs", f"{summary['pairs']} near-duplicate pairs (found by {kinds}), written to {pairs_path}"),
        ("clusters", f"{summary['clusters']} clusters hold {summary['rows_in_clusters']} images; "
                     f"{summary['distinct_images']} distinct images in all"),
        ("sizes", sizes),
        ("conflicts", f"{same} cluster(s) hold the same image under two labels (check the labels); "
                      f"{len(conflicts) - same} hold look-alike images with different labels (check the labels, "
                      "or expect these images to be hard)"),
        ("splits", f"{len(summary['split_crossings'])} cluster(s) across the split column"),
        ("stored", "dup_cluster column written into the cache; use probe --groups auto" if not no_store
                   else "not stored (--no-store)"),
    ]
    click.echo("\n".join(f"{k:<10} {v}" for k, v in lines))
    for conflict in conflicts[:10]:
        click.echo(f"{'same' if conflict['kind'] == 'same image' else 'look-alike':<10} "
                   + ", ".join(f"{i} ({l})" for i, l in zip(conflict["ids"], conflict["labels"])))
    for crossing in summary["split_crossings"][:10]:
        click.echo("crossing   " + ", ".join(f"{i} ({s})" for i, s in zip(crossing["ids"], crossing["splits"])))


# Similarity and advice: torch-free ---------------------------------------------------------------
def _number(value) -> str:
    return "–" if value is None else f"{value:.4g}"


def _members(names: list[str]) -> str:
    """A row's BatchNorm layers in short: their count, and the first and last by firing order."""
    if len(names) <= 1:
        return f"{len(names)} {names[0]}" if names else "0"
    return f"{len(names)} {names[0]}..{names[-1]}"


@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--reference", default="imagenet", show_default=True,
              help="'imagenet' (the BatchNorm statistics stored by extract --bn-stats) or a second cache made with "
                   "the same model, weights, preprocessing and outputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the row subsamples (MMD, domain classifier).")
@click.option("--max-rows", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Rows of each set used by MMD and the domain classifier.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also write a PNG of each measure against depth.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (with a row per BatchNorm layer).")
def similarity(cache_path, reference, seed, max_rows, plot_path, as_json):
    """How far the data are from ImageNet or another data set, and how well each layer transfers.

    Against ImageNet: per layer, the mean over channels of the 2-Wasserstein
    distance, symmetric KL and mean shift between the data's and ImageNet's
    per-channel statistics at each BatchNorm layer, in ImageNet standard
    deviations. Against a second cache: the same on the codes, plus the Fréchet
    distance, MMD² and a domain classifier's AUC (0.5: indistinguishable). With
    labels: LogME and H-score per layer (higher transfers better) and LEEP from
    the cached ImageNet logits.

    \b
    Examples:
      layerprobe similarity cache/br35h-tf_efficientnet_lite0-0123456789ab.h5 --plot br35h-similarity.png
      layerprobe similarity CACHE --reference cache/photos-tf_efficientnet_lite0-ba9876543210.h5 --json
    """
    from .atomic import atomic_write
    from .similarity import similarity_table
    from .similarity.plots import figure_png, similarity_figure

    table = similarity_table(cache_path, reference, seed=seed, max_rows=max_rows)
    if plot_path:
        log.info("plot: %s", atomic_write(plot_path, figure_png(similarity_figure(table))))
    if as_json:
        click.echo(json.dumps(table.as_dict(), indent=2))
        return
    against = (f"ImageNet, from {len(table.bn_rows)} BatchNorm layers" if table.bn_rows
               else f"{table.reference} ({table.n_reference} images)")
    click.echo(f"{table.n_images} images ({table.n_labelled} labelled, {table.n_classes} classes) of {table.model} "
               f"against {against}")
    header = ("layer", "channels", *table.distances, *table.transfers) + (("bn layers",) if table.bn_rows else ())
    lines = [header]
    for r in table.rows:
        extra = (_members(r.members),) if table.bn_rows else ()
        lines.append((r.name, str(r.channels), *(_number(r.values.get(m)) for m in table.distances + table.transfers),
                      *extra))
    click.echo(_table(lines))
    if table.bn_outside:
        click.echo(f"BatchNorm layers after the last output (in no row): {_members(table.bn_outside)}")
    if table.leep is not None:
        click.echo(f"LEEP (ImageNet logits): {table.leep:.4f}")
    for note in table.notes:
        click.echo(f"note: {note}")


@main.command("advise")
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="Probe results of this cache (layerprobe probe); without them the layer is chosen by LogME.")
@click.option("--metric", type=click.Choice(["roc_auc", "balanced_accuracy"]), default="roc_auc", show_default=True,
              help="Probe metric the advice reads.")
@click.option("--learning-curve", is_flag=True,
              help="With --results: refit the chosen probe at the chosen and the last layer on growing shares of "
                   "each training fold, to say whether more labelled images would help.")
@click.option("--curve-steps", type=click.IntRange(min=2), default=4, show_default=True,
              help="Shares of the learning curve: 1/N, 2/N, ..., 1 of each training fold (even N gives the halfway "
                   "point the advice compares with).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel fits of the curve.")
@click.option("--json", "as_json", is_flag=True, help="Print the advice, its numbers and its rules as JSON.")
def advise_command(cache_path, results_path, metric, learning_curve, curve_steps, jobs, as_json):
    """Which layer to use, whether the data set is like ImageNet, whether to fine-tune.

    Reads the number of images and classes, LogME per layer, the distance to
    ImageNet per layer (if extracted with --bn-stats) and, if given, the probe
    results, whose layers are compared pairwise on their shared folds. Verdicts
    are similar / different / uncertain and likely / unlikely / uncertain
    (README: "Reading the advice"); each sentence carries its numbers.

    \b
    Example:
      layerprobe advise cache/br35h-tf_efficientnet_lite0-0123456789ab.h5 \\
        --results cache/br35h-tf_efficientnet_lite0-0123456789ab.probes.json --learning-curve
    """
    from .similarity import advise_cache

    advice = advise_cache(cache_path, results_path, metric if results_path else None,
                          curve_steps if learning_curve else None, jobs)
    if as_json:
        click.echo(json.dumps(advice.as_dict(), indent=2))
        return
    click.echo(f"layer      {advice.layer} (by {advice.layer_by})")
    click.echo(f"imagenet   {advice.similarity}" + (" (saturated task)" if advice.saturated else ""))
    click.echo(f"fine-tune  {advice.fine_tune}")
    if advice.more_data is not None:
        click.echo(f"more data  {advice.more_data}")
    click.echo("")
    for finding in advice.findings:
        click.echo(f"- {finding.text}")


def _describe(path, rows, counts, m) -> str:
    src, inp, run = m.source, m.input, m.runtime
    pre, weights_source = src.preprocessing, m.model.weights.source
    classes = ", ".join(f"{k} ({v})" for k, v in counts.items()) or "unlabelled"
    lines = [
        ("cache", str(path)),
        ("model", f"{src.model}  weights {weights_source} sha256 {src.weights_sha256[:12]}"),
        ("images", f"{rows} from {inp.name} ({inp.source}); classes: {classes}"),
        ("preprocess", f"{pre['input_size'][1]}x{pre['input_size'][2]} {pre['interpolation']}, crop {pre['crop_pct']}, "
                       f"mean {tuple(pre['mean'])}, std {tuple(pre['std'])}"),
        ("made", f"{m.created} on {run.device} ({run.precision}{_folding(run.extra)}) in "
                 f"{'?' if run.duration_s is None else run.duration_s} s"),
        ("key", m.key),
    ]
    if inp.skipped:
        lines.append(("skipped", f"{len(inp.skipped)} bad image(s): " + ", ".join(s["id"] for s in inp.skipped[:5])))
    return "\n".join(f"{k:<11}{v}" for k, v in lines)


def _folding(runtime_extra: dict) -> str:
    """``, BatchNorm folded 49 of 49`` (or ``not folded: why``) for the ``made`` line; nothing for caches made
    before folding."""
    folding = runtime_extra.get("batchnorm_folding")
    if not folding or not folding.get("batchnorms"):
        return ""
    if folding.get("folded"):
        why = f"; {folding['why_not']}" if folding.get("why_not") else ""  # some layers left as they are
        return f", BatchNorm folded {folding['folded']} of {folding['batchnorms']}{why}"
    return f", BatchNorm not folded: {folding.get('why_not', 'none qualified')}"


def _stored(extras: dict) -> str:
    """One line each: groups, split, duplicate clusters, BatchNorm statistics, stored or not (and how to add)."""
    g, split, dup, bn = extras["groups"], extras["split"], extras["dup_clusters"], extras["bn_stats"]
    where = f" ({dup['threshold']} on {dup['output']})" if dup and "threshold" in dup and "output" in dup else ""
    lines = [
        ("groups", f"{g['distinct']} distinct, {g['rows_without']} row(s) without" if g
         else "none (a CSV's group column adds them)"),
        ("split", ", ".join(f"{k} {v}" for k, v in split.items()) if split else "none (a CSV's split column adds it)"),
        ("duplicates", f"{dup['clusters']} cluster(s) holding {dup['rows_in_clusters']} images{where}" if dup
         else "not stored (layerprobe duplicates CACHE stores them)"),
        ("bn stats", f"{bn['layers']} BatchNorm layers over {bn['images']} images" if bn
         else "not stored (extract --bn-stats adds them)"),
    ]
    return "\n".join(f"{k:<11}{v}" for k, v in lines)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# Probing: torch-free commands (probe, report, fit) and predict ----------------------------------
_METRIC_NAMES = ("roc_auc", "balanced_accuracy", "accuracy", "f1_macro", "log_loss", "sensitivity", "specificity")


class _Repeats(click.ParamType):
    name = "N|auto"

    def convert(self, value, param, ctx):
        if value is None or str(value) == "auto":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"{value!r} is neither a positive whole number nor 'auto'; pass e.g. --repeats 5", param, ctx)
        return number


def _metric_option(func):
    return click.option("--metric", type=click.Choice(_METRIC_NAMES), default="roc_auc", show_default=True,
                        help="Metric shown in the table and plot (every metric is stored).")(func)


@main.command()
@click.argument("cache_paths", metavar="CACHE...", nargs=-1, required=True, type=click.Path())
@click.option("--probes", "probe_names", multiple=True, default=["logreg,svm,lgbm"], show_default=True,
              help="Probes to fit: logreg, svm, lgbm, knn (comma-separated or repeated).")
@click.option("--layers", "layer_tokens", multiple=True,
              help="Outputs to probe: layer/pooling, a layer name or an index (default: every output in the cache).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Outer cross-validation folds.")
@click.option("--repeats", type=_Repeats(), default="auto", show_default=True,
              help="Repeat the folds with seeds seed, seed+1, ...; auto: enough repeats for 25 paired estimates "
                   "(folds x repeats) below 2000 labelled images, 1 above.")
@click.option("--groups", help="Keep groups within one fold: 'none' or a stored group column such as 'groups' "
                               "(default: the cache's group column if it has one).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of folds, inner folds, models and bootstrap.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel fits (CPU processes; with --backend dask and no --scheduler, local Dask workers).")
@click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Run the fits in local processes, or on a Dask cluster (pip install 'layerprobe[dask]').")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler for --backend dask, e.g. tcp://10.0.0.5:8786 (default: start a local cluster). "
                   "Every worker must be able to open CACHE at the same path.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@_metric_option
@click.option("--out", type=click.Path(dir_okay=False), help="Results file (default: <cache>.probes.json beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--compare-splits", is_flag=True,
              help="Also score every row on plain stratified folds (<results>.leaky.json) to show the inflation.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or log lines.")
def probe(cache_paths, probe_names, layer_tokens, folds, repeats, groups, seed, jobs, backend, scheduler, n_boot,
          metric, out, as_json, compare_splits, quiet):
    """Cross-validate probes on every layer of a cache and print the table.

    Given several caches of the same images (other models, weights, sizes or
    poolings), runs one study: every cache on one shared set of folds, into one
    study file (default: study-<digest>.study.json beside the first cache), with
    the best (model, layer), the candidates tied with it and the cheapest of them.

    Every (layer, probe) is scored on the same stored folds: stratified, or
    stratified by group when groups are given, so no group is on both sides of a
    split. --groups auto joins near-duplicate clusters (from `layerprobe
    duplicates`, or a scan at its defaults) with any group column; it is the
    default once duplicates are stored. A split that lets near-duplicates cross
    folds is reported with how many test rows it leaks. Each cell is the mean ±
    sd over folds and a 95% bootstrap interval; * marks the best layer of each
    probe, = the layers tied with it (paired corrected t-test over the shared
    folds, 95%; ROC AUC and balanced accuracy). Running again with the same split options and --out adds missing rows
    on the same folds.

    \b
    Examples:
      layerprobe probe cache/br35h-tf_efficientnet_lite0-0123456789ab.h5 --jobs 2
      layerprobe probe CACHE --groups auto --compare-splits
      layerprobe probe CACHE --probes logreg --layers blocks.6/avg,pre_logits --folds 10 --repeats 3
      layerprobe probe CACHE --backend dask --scheduler tcp://10.0.0.5:8786
      layerprobe probe cache/br35h-tf_efficientnet_lite0-*.h5 cache/br35h-tf_efficientnet_lite2-*.h5 --jobs 2
    """
    from dataclasses import replace

    from .errors import ProbeError
    from .probes import ProbeConfig, comparison_path, default_results_path, run_probes, split_comparison, summary_rows

    if quiet:
        _setup_logging(False, quiet=True)
    config = ProbeConfig(probes=_split_list(probe_names), layers=_split_list(layer_tokens), folds=folds,
                         repeats=repeats, groups=groups, seed=seed, n_boot=n_boot)
    where = {"backend": backend, "scheduler": scheduler}
    if len(cache_paths) > 1:
        if compare_splits:
            raise ProbeError("--compare-splits works on one cache; a study reports the leakage of a plain split "
                             "from each cache's stored duplicates instead: leave out --compare-splits")
        _study(list(cache_paths), config, out, jobs, quiet, where, metric, as_json)
        return
    cache_path = cache_paths[0]
    out = out or default_results_path(cache_path)
    results = run_probes(cache_path, config, out=out, jobs=jobs, progress=not quiet, **where)
    log.info("results: %s", out)
    comparison = None
    if compare_splits:
        if results.data["groups"] == "none":
            raise ProbeError("--compare-splits sets group-aware folds against plain ones, but this run used "
                             "--groups none; pass --groups auto (or a group column)")
        leaky = run_probes(cache_path, replace(config, groups="none"), out=comparison_path(out), jobs=jobs,
                           progress=not quiet, **where)
        comparison = split_comparison(results, leaky, metric)
        log.info("plain-split results: %s", comparison_path(out))
    rows = summary_rows(results, metric)
    if as_json:
        click.echo(json.dumps({"results": str(out), "metric": metric, "rows": rows, "comparison": comparison},
                              indent=2))
        return
    levels = list(dict.fromkeys(how for r in rows for how in r["patient"]))  # patient-level aggregations
    table = [("layer", "probe", metric, "95% CI", "best", *(f"patient {how}" for how in levels))]
    for r in rows:
        low, high = (f"{v:.3f}" if v is not None else "nan" for v in r["ci"])
        table.append((r["output"], r["probe"], f"{r['mean']:.3f} ± {r['sd']:.3f}", f"[{low}, {high}]",
                      "*" if r["best"] else ("=" if r["tied"] else ""),
                      *(_patient_cell(r["patient"].get(how)) for how in levels)))
    click.echo(_table(table))
    if comparison:
        click.echo("")
        lines = [("layer", "probe", f"{metric} groups {results.data['groups']}", f"{metric} plain split", "inflation")]
        for c in comparison:
            lines.append((c["output"], c["probe"], f"{c['grouped']:.3f}", f"{c['plain']:.3f}", f"{c['difference']:+.3f}"))
        click.echo(_table(lines))


def _study(cache_paths, config, out, jobs, quiet, where, metric, as_json) -> None:
    from .probes import default_study_path, run_study, study_rows

    out = out or default_study_path(cache_paths)
    study = run_study(cache_paths, config, out=out, jobs=jobs, progress=not quiet, **where)
    log.info("study: %s", out)
    rows = study_rows(study, metric)
    if as_json:
        click.echo(json.dumps({"results": str(out), "metric": metric, "rows": rows, "chosen": study.chosen,
                               "costs": {m["label"]: m["cost"] for m in study.models}}, indent=2))
        return
    table = [("model", "layer", "probe", metric, "95% CI", "best")]
    for r in rows:
        low, high = (f"{v:.3f}" if v is not None else "nan" for v in r["ci"])
        table.append((r["backbone"], r["output"], r["probe"], f"{r['mean']:.3f} ± {r['sd']:.3f}", f"[{low}, {high}]",
                      "*" if r["best"] else ("=" if r["tied"] else "")))
    click.echo(_table(table))
    if study.chosen:
        c = study.chosen
        click.echo(f"\nchosen: {c['backbone']} {c['output']} with {c['probe']} (the cheapest of {c['tied']} tied with "
                   f"the best by {c['metric']}, {' '.join(c['best'])})")


def _patient_cell(m: dict | None) -> str:
    if m is None:
        return ""
    low, high = (f"{v:.3f}" if v is not None else "nan" for v in m["ci"])
    return f"{m['mean']:.3f} [{low}, {high}]"


@main.command()
@click.argument("results_path", metavar="RESULTS", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file (default: RESULTS with .html); the PNG goes beside it.")
@_metric_option
@click.option("--compare-splits", is_flag=True,
              help="Show each row on group-aware and on plain folds side by side (needs probe --compare-splits).")
@click.option("--no-similarity", is_flag=True,
              help="Leave out the section on distance to ImageNet, transferability and advice.")
@click.option("--sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Study report: the operating point reaches this sensitivity (default 0.95).")
@click.option("--specificity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Study report: the operating point reaches this specificity instead.")
def report(results_path, out, metric, compare_splits, no_similarity, sensitivity, specificity):
    """Write one self-contained HTML report (plot embedded) and the plot as PNG.

    The metric against layer depth, one line per probe with its 95% band, the
    table of every metric, and the data set, model, folds and seeds behind them;
    then, when the cache is at hand, distance to ImageNet (extract --bn-stats),
    transferability by layer and the advice of `layerprobe advise`. Prints the
    HTML path.

    \b
    Given a study file (`layerprobe probe CACHE_A CACHE_B`), writes the study
    report: the answer, each model's cost and best layer, a model x layer heat
    map, per-model curves, the chosen probe's confusion matrix, ROC curve,
    reliability diagram and operating point, thumbnails, duplicates, leakage
    and the advice.

    \b
    Examples:
      layerprobe report cache/br35h-tf_efficientnet_lite0-0123456789ab.probes.json --out report.html
      layerprobe report cache/study-0123456789ab.study.json --specificity 0.9
    """
    from .errors import ProbeError
    from .probes import is_study
    from .report import write_report, write_study_report

    if sensitivity is not None and specificity is not None:
        raise ProbeError("give one operating point: --sensitivity or --specificity, not both")
    if is_study(results_path):
        if compare_splits:
            raise ProbeError("--compare-splits applies to one cache's results; the study report shows leakage "
                             "from the stored duplicates: leave it out")
        target = ("specificity", specificity) if specificity is not None else ("sensitivity", sensitivity or 0.95)
        written = write_study_report(results_path, out, metric, target, advice=not no_similarity)
        click.echo(str(written.html))
        return
    written = write_report(results_path, out, metric, compare_splits=compare_splits, similarity=not no_similarity)
    log.info("plot: %s", written.png)
    click.echo(str(written.html))


@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.option("--layer", required=True, help="The output to fit on: layer/pooling, a layer name or an index.")
@click.option("--probe", "probe_name", required=True, help="logreg, svm, lgbm or knn.")
@click.option("--groups", help="Group column for the inner folds that choose C ('none' or a stored column).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Probe file (default: beside the cache, *.probe.npz).")
def fit(cache_path, layer, probe_name, groups, seed, out):
    """Fit one probe on every labelled row of one layer and save it safely.

    The file holds arrays, JSON and LightGBM model text (no pickle), and a
    manifest naming the model, weights sha256, layer, pooling and preprocessing
    its input must come from. Prints the probe file's path.

    \b
    Example:
      layerprobe fit cache/br35h-tf_efficientnet_lite0-0123456789ab.h5 --layer pre_logits --probe logreg
    """
    from pathlib import Path

    from .probes import PROBE_SUFFIX, fit_probe, save_probe

    fitted = fit_probe(cache_path, layer, probe_name, groups=groups, seed=seed)
    if out is None:
        cache = Path(cache_path)
        out = cache.with_name(f"{cache.stem}.{fitted.output.replace('/', '-')}.{fitted.probe}{PROBE_SUFFIX}")
    path = save_probe(fitted, out)
    log.info("%s on %s; chosen %s", fitted.probe, fitted.output, fitted.manifest["chosen"] or "no tuning")
    click.echo(str(path))


@main.command()
@click.argument("probe_path", metavar="PROBE", type=click.Path())
@click.argument("inputs", metavar="IMAGES_OR_DIR_OR_CSV", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="CSV file (default: stdout).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="Local copy of the probe's weights file (its sha256 must match the probe's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the batch size the probe's cache used.")
@click.option("--workers", type=_Workers(), default="auto", show_default=True,
              help="How images are decoded: auto, thread or N decoding processes, as for extract.")
@click.option("--per-patient", is_flag=True,
              help="One row per patient (group: DICOM PatientID, NIfTI volume, CSV group): mean probabilities, "
                   "and for two classes the largest positive one.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or log lines.")
def predict(probe_path, inputs, out, weights, device, batch_size, workers, per_patient, quiet):
    """Predict images with a saved probe: one forward pass to its layer, then the probe.

    Takes image files, a folder (of images, or of class sub-folders) or a CSV
    table, or an existing cache made with the probe's model. Refuses a model
    whose weights or preprocessing differ from the probe's. Writes one row per
    image: id, predicted class, one probability per class.

    \b
    Examples:
      layerprobe predict br35h.pre_logits-none.logreg.probe.npz new_scans/ --out preds.csv
      layerprobe predict tumour.probe.npz scan1.jpg scan2.jpg
      layerprobe predict ich.probe.npz new_studies/ --per-patient --out patients.csv
    """
    from pathlib import Path

    from .probes import apply_probe, load_probe

    if quiet:
        _setup_logging(False, quiet=True)
    fitted = load_probe(probe_path)
    if len(inputs) == 1 and Path(inputs[0]).suffix == ".h5":
        predictions = apply_probe(fitted, inputs[0])
    else:
        from .predict import images_from_paths, predict_images

        predictions = predict_images(fitted, images_from_paths(list(inputs)), weights=weights, device=device,
                                     batch_size=batch_size, workers=workers, progress=not quiet)
    text = predictions.per_group_csv() if per_patient else predictions.to_csv()
    if out:
        from .atomic import atomic_write

        atomic_write(out, text.encode())
        log.info("wrote %d %s predictions to %s", text.count("\n") - 1, "patient" if per_patient else "image", out)
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":
    main()
