"""One self-contained HTML report of a results file, its plot embedded, plus the plot as PNG."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProbeError
from ..probes import ProbeResults, comparison_path, get_metric, load_results, metric_names, split_comparison
from ..atomic import atomic_write
from .patients import patient_section
from .plots import comparison_figure, figure_png, layer_figure

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
img { max-width: 100%; height: auto; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
td.grid { white-space: normal; max-width: 9em; overflow-wrap: anywhere; }
tr.best td { font-weight: bold; background: #f3f8ec; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em; }
dt { font-weight: bold; } dd { margin: 0; }
.note { color: #666; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class Report:
    """Where a report was written."""

    html: Path
    png: Path


def default_report_path(results_path: str | Path) -> Path:
    """``<results>.html`` beside the results file (``x.probes.json`` -> ``x.probes.html``)."""
    return Path(results_path).with_suffix(".html")


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(m: dict) -> str:
    low, high = m["ci"]
    return f"{_fmt(m['mean'])} ± {_fmt(m['sd'])}<br><span class=note>[{_fmt(low)}, {_fmt(high)}]</span>"


def _tied(results: ProbeResults, metric: str) -> set[tuple[str, str]]:
    """(output, probe) pairs tied with their probe's best at 95% (paired corrected t-test)."""
    from ..probes.compare import ADVICE_METRICS, compare_outputs

    if metric not in ADVICE_METRICS:
        return set()
    probes = dict.fromkeys(r["probe"] for r in results.rows if not r["output"].startswith("logits/"))
    tied = set()
    for probe in probes:
        try:
            tied.update((o, probe) for o in compare_outputs(results, metric, probe).tied)
        except ProbeError:
            continue
    return tied


def _table(results: ProbeResults, metric: str) -> str:
    names = metric_names(len(results.data["class_names"]))
    best = {id(r) for r in results.best(metric).values()}
    tied = _tied(results, metric)
    head = "".join(f"<th>{html.escape(get_metric(n).label)}</th>" for n in names)
    lines = [f"<table><thead><tr><th>layer</th><th>probe</th>{head}<th>chosen C</th></tr></thead><tbody>"]
    for r in results.rows:
        chosen = sorted({c["C"] for c in r.get("chosen", []) if "C" in c})
        cells = "".join(f"<td>{_cell(r['metrics'][n])}</td>" for n in names if n in r["metrics"])
        mark = " ★" if id(r) in best else (" =" if (r["output"], r["probe"]) in tied else "")
        lines.append(f"<tr class='{'best' if '★' in mark else ''}'><td>{html.escape(r['output'])}</td>"
                     f"<td>{html.escape(r['probe'])}{mark}</td>{cells}"
                     f"<td class=grid>{html.escape(', '.join(f'{c:g}' for c in chosen))}</td></tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _facts(results: ProbeResults) -> str:
    c, d, f, cfg = results.cache, results.data, results.folds, results.config
    made = results.provenance
    model, weights, pre = made.model, made.model.weights, made.preprocessing
    counts = ", ".join(f"{k} ({v})" for k, v in d["class_counts"].items())
    groups = f"{d['groups']} ({d['n_groups']} groups)" if d.get("n_groups") else "none (rows split independently)"
    settings = cfg["settings"]
    facts = [
        ("data set", f"{made.input.name} ({made.input.source}): {d['n_rows']} labelled images; {counts}"),
        ("model", f"{model.name}, weights {weights.source} sha256 {weights.sha256[:16]}…"),
        ("preprocessing", f"{pre['input_size'][1]}x{pre['input_size'][2]} {pre['interpolation']}, crop "
                          f"{pre['crop_pct']}, mean {pre['mean']}, std {pre['std']}"),
        ("cache", f"{c['path']} (key {c['key'][:16]}…)"),
        ("folds", f"{f.kind}, {f.n_folds} folds x {f.repeats} repeat(s), seeds {list(f.seeds)}; groups: {groups}"),
        ("probes", f"inner {settings['inner_folds']}-fold CV for C; logreg C grid {settings['c_grid']}; "
                   f"svm C grid {settings['svm_c_grid']}; PCA to {settings['pca_components']} components above "
                   f"{settings['pca_above']} channels (linear probes); class weight {settings['class_weight']}; "
                   f"lgbm {settings['lgbm_trees']} trees, {settings['lgbm_leaves']} leaves"),
        ("intervals", f"percentile bootstrap, {cfg['n_boot']} resamples of the out-of-fold predictions "
                      f"({'whole groups' if f.groups else 'rows'}), seed {cfg['seed']}"),
        ("made", f"{results.created} with layerprobe {results.version}, --jobs {results.runtime.get('jobs')}, "
                 f"{results.runtime.get('duration_s')} s; " +
                 ", ".join(f"{k} {v}" for k, v in results.runtime.get("packages", {}).items())),
    ]
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts) + "</dl>"


def _comparison(results: ProbeResults, leaky: ProbeResults, metric: str, png: bytes) -> str:
    label = html.escape(get_metric(metric).label)
    rows = split_comparison(results, leaky, metric)
    def line(c: dict) -> str:
        inflation = "–" if c["difference"] is None else f"{c['difference']:+.3f}"
        return (f"<tr><td>{html.escape(c['output'])}</td><td>{html.escape(c['probe'])}</td>"
                f"<td>{_fmt(c['grouped'])}</td><td>{_fmt(c['plain'])}</td><td>{inflation}</td></tr>")

    body = "".join(line(c) for c in rows)
    leak = leaky.data.get("leakage") or {}
    leaked = (f"On plain folds {leak['rows_with_duplicate_in_training']} of {leak['rows']} test images had a "
              "near-duplicate in training. " if leak else "")
    image = base64.b64encode(png).decode()
    return f"""<h2>Group-aware against plain folds</h2>
<p class=note>{html.escape(leaked)}The same probes on the same images, scored on folds that keep
{html.escape(results.data['groups'])} groups together and on plain stratified folds. The difference is what a
random split would have added to the reported {label}.</p>
<img alt="{label} by layer on both splits" src="data:image/png;base64,{image}">
<table><thead><tr><th>layer</th><th>probe</th><th>{label}, groups {html.escape(results.data['groups'])}</th>
<th>{label}, plain folds</th><th>inflation</th></tr></thead><tbody>{body}</tbody></table>
"""


def _similarity(results: ProbeResults, results_path: Path, metric: str) -> str:
    """Distance to ImageNet and transferability by layer, with the advice, when the cache is at hand."""
    import logging

    from ..cache import open_cache
    from ..errors import PipelineError
    from ..similarity import advise_cache, similarity_table
    from ..similarity.plots import similarity_figure

    cache_path = Path(results.cache["path"])
    try:
        with open_cache(cache_path) as cache:
            has_bn = bool(cache.bn_stats())
        advice = advise_cache(cache_path, results_path, metric if metric in ("roc_auc", "balanced_accuracy") else None)
        table = similarity_table(cache_path, "imagenet" if has_bn else None)
    except PipelineError as exc:
        logging.getLogger(__name__).warning("report without the similarity section: %s", exc)
        return ""
    image = base64.b64encode(figure_png(similarity_figure(table))).decode()
    findings = "".join(f"<li>{html.escape(f.text)}</li>" for f in advice.findings)
    return f"""<h2>Is the data set like ImageNet? Which layer transfers?</h2>
<p><b>Use {html.escape(advice.layer)}</b> (by {html.escape(advice.layer_by)}). Like ImageNet in the sense that
matters: <b>{html.escape(advice.similarity)}</b>{' (saturated task)' if advice.saturated else ''}.
Fine-tuning: <b>{html.escape(advice.fine_tune)}</b>.</p>
<ul>{findings}</ul>
<img alt="distance to ImageNet and transferability by layer" src="data:image/png;base64,{image}">
<p class=note>Distances compare the data's per-channel statistics at every BatchNorm input with the ImageNet
statistics stored in the network (extract --bn-stats); LogME and H-score rate how well each layer's codes
predict the labels (higher is better). `layerprobe similarity` and `layerprobe advise` print the numbers.</p>
"""


def render_html(results: ProbeResults, png: bytes, metric: str = "roc_auc", comparison: str = "",
                similarity: str = "") -> str:
    """The report page: facts, the embedded plot and the table of every metric."""
    label = get_metric(metric).label
    title = f"Which layer transfers? {results.provenance.model.name} on {results.provenance.input.name}"
    image = base64.b64encode(png).decode()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{_facts(results)}
<h2>{html.escape(label)} by layer</h2>
<img alt="{html.escape(label)} against layer depth, one line per probe" src="data:image/png;base64,{image}">
<h2>Results</h2>
<p class=note>Each cell: mean ± standard deviation over folds [95% bootstrap interval on the out-of-fold
predictions]. ★ marks the best layer of each probe by mean {html.escape(label)}; = marks layers tied with it
(the 95% interval of the paired difference over the shared folds, corrected resampled t-test, covers 0).</p>
{_table(results, metric)}
{patient_section(results, metric)}
{comparison}
{similarity}
</body></html>
"""


def write_report(results_path: str | Path, out: str | Path | None = None, metric: str = "roc_auc",
                 compare_splits: bool = False, similarity: bool = True) -> Report:
    """Write ``out`` (default ``<results>.html``) and the plot as a PNG beside it.

    ``compare_splits`` adds the rows scored on plain folds by ``probe --compare-splits``;
    ``similarity`` adds distance to ImageNet, transferability and advice when the cache is at hand.
    """
    get_metric(metric)
    results = load_results(results_path)
    if metric not in metric_names(len(results.data["class_names"])):
        raise ProbeError(f"metric {metric!r} applies to two classes only; these results have "
                         f"{len(results.data['class_names'])}")
    if not results.rows:
        raise ProbeError(f"{results_path} holds no results rows; run `layerprobe probe` first")
    out = Path(out) if out is not None else default_report_path(results_path)
    fig = layer_figure(results, metric)
    png = figure_png(fig)
    comparison = ""
    if compare_splits:
        other = comparison_path(results_path)
        if not Path(other).exists():
            raise ProbeError(f"no plain-split results at {other}; write them there first with run_probes and "
                             "groups='none' (layerprobe probe CACHE --compare-splits)")
        leaky = load_results(other)
        comparison = _comparison(results, leaky, metric, figure_png(comparison_figure(results, leaky, metric)))
    section = _similarity(results, Path(results_path), metric) if similarity else ""
    png_path = atomic_write(out.with_suffix(".png"), png)
    html_path = atomic_write(out, render_html(results, png, metric, comparison, section).encode())
    return Report(html_path, png_path)
