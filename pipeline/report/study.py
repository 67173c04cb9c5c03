"""The report of a study: which backbone and which layer, at what cost, and how the chosen probe behaves.

One self-contained HTML page (figures and thumbnails embedded) laid out for a
1280-px window: the answer first, then the model x layer heat map, per-model
curves, score against cost, the chosen probe's confusion matrix, ROC curve,
reliability diagram and operating point, sample images and the largest
near-duplicate clusters, duplicates and leakage, the advice, and every row.
"""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import PipelineError, ProbeError
from ..probes import StudyResults, get_metric, load_study, metric_names
from . import thumbs
from .diagnostics import calibration, confusion, operating_point
from .figures import confusion_figure, cost_figure, heat_map, model_curves, reliability_figure, roc_figure
from .plots import figure_png

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222;
       box-sizing: border-box; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h4 { margin: 0.6em 0 0.2em; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.8em; width: 100%; table-layout: auto; }
th, td { padding: 0.2em 0.45em; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; }
th { background: #f4f4f4; }
td.name, th.name { text-align: left; overflow-wrap: anywhere; }
tr.chosen td { background: #eef6e4; font-weight: bold; } tr.tied td { background: #f8fbf3; }
img { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 0.6em; align-items: start; }
.answer { background: #f3f8ec; border: 1px solid #cfe3b5; padding: 0.6em 1em; border-radius: 4px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 4px; }
.thumbs figure { margin: 0; width: 76px; font-size: 0.65em; color: #666; overflow-wrap: anywhere; }
img.thumb { width: 72px; height: 72px; object-fit: cover; display: block; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.2em 1em; font-size: 0.85em; }
dt { font-weight: bold; } dd { margin: 0; overflow-wrap: anywhere; }
.note { color: #666; font-size: 0.85em; }
"""
DEFAULT_TARGET = ("sensitivity", 0.95)
TABLE_METRICS = ("roc_auc", "balanced_accuracy", "accuracy", "sensitivity", "specificity", "log_loss")


@dataclass(frozen=True)
class StudyReport:
    html: Path


def _png(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(figure_png(fig)).decode()


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png(fig)}">'


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _e(value) -> str:
    return html.escape(str(value))


def _row(study: StudyResults, model: str, output: str, probe: str) -> dict:
    return next(r for r in study.rows if (r["backbone"], r["output"], r["probe"]) == (model, output, probe))


def _answer(study: StudyResults) -> str:
    c = study.chosen
    if not c:
        return "<p class=answer>No row holds ROC AUC or balanced accuracy: nothing to choose.</p>"
    label = get_metric(c["metric"]).label
    comparison = study.comparisons[c["metric"]][c["probe"]]
    cand = {(x["backbone"], x["output"]): x for x in comparison["candidates"]}
    chosen, best = cand[(c["backbone"], c["output"])], cand[tuple(c["best"])]
    tied_models = sorted({m for m, _ in comparison["tied"]})
    cost = study.model(c["backbone"])["cost"]
    same = tuple(c["best"]) == (c["backbone"], c["output"])
    why = ("it is the best" if same else
           f"it is tied with the best ({_e(best['backbone'])} {_e(best['output'])}, {_f(best['mean'])}) and costs less")
    return (f"<p class=answer><b>Use {_e(c['backbone'])}, layer {_e(c['output'])}, with the {_e(c['probe'])} probe</b>: "
            f"{label} {_f(chosen['mean'])} (95% interval {_f(chosen['interval'][0])} to {_f(chosen['interval'][1])}, "
            f"{comparison['n_estimates']} paired fold estimates). {why[0].upper() + why[1:]}. "
            f"{len(comparison['tied'])} of {len(comparison['candidates'])} (model, layer) candidates are tied with "
            f"the best (corrected resampled t-test, 95%), from {len(tied_models)} model(s): "
            f"{_e(', '.join(tied_models))}. {_e(c['backbone'])}: {_params(cost['n_params'])}, "
            f"{_rate(cost)}, code width {chosen_width(study)}.</p>")


def chosen_width(study: StudyResults) -> int:
    c = study.chosen
    return _row(study, c["backbone"], c["output"], c["probe"])["channels"]


def _params(n) -> str:
    return "parameters unknown" if n is None else f"{n / 1e6:.2f} M parameters"


def _rate(cost: dict) -> str:
    if not cost.get("images_per_s"):
        return "throughput unknown"
    return f"{cost['images_per_s']:.1f} images/s when extracted ({cost['device']})"


def _models_table(study: StudyResults) -> str:
    c = study.chosen
    metric, probe = c["metric"], c["probe"]
    comparison = study.comparisons[metric][probe]
    label = html.escape(get_metric(metric).label)
    lines = [f"<table><thead><tr><th class=name>model</th><th>parameters</th><th>input</th><th>images/s</th>"
             f"<th>extract s</th><th class=name>best layer ({_e(probe)})</th><th>{label}</th><th>95% interval</th>"
             "<th>tied layers</th><th>width</th></tr></thead><tbody>"]
    for m in study.models:
        mine = [x for x in comparison["candidates"] if x["backbone"] == m["label"]]
        if not mine:
            continue
        top = max(mine, key=lambda x: x["mean"])
        tied = sum(1 for x in comparison["tied"] if x[0] == m["label"])
        cost, size = m["cost"], m["cost"].get("input_size") or ["", "?", "?"]
        width = _row(study, m["label"], top["output"], probe)["channels"]
        css = " class=chosen" if m["label"] == c["backbone"] else ""
        lines.append(f"<tr{css}><td class=name>{_e(m['label'])}</td><td>{_f((cost['n_params'] or 0) / 1e6, 2)} M</td>"
                     f"<td>{size[1]}x{size[2]}</td><td>{_f(cost['images_per_s'], 1)}</td>"
                     f"<td>{_f(cost['extract_seconds'], 0)}</td><td class=name>{_e(top['output'])}</td>"
                     f"<td>{_f(top['mean'])}</td><td>{_f(top['interval'][0])} to {_f(top['interval'][1])}</td>"
                     f"<td>{tied} of {len(mine)}</td><td>{width}</td></tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _diagnostics(study: StudyResults, target: tuple[str, float]) -> tuple[str, dict]:
    c = study.chosen
    proba = np.asarray(study.predictions.get("proba", []), dtype=np.float64)
    if proba.size == 0:
        return "<p class=note>The study file holds no out-of-fold predictions of the chosen row.</p>", {}
    proba, y = proba[0], np.asarray(study.data["y"])
    names = study.data["class_names"]
    cal = calibration(y, proba)
    figures = [_img(confusion_figure(confusion(y, proba), names), "confusion matrix")]
    numbers = {"ece": cal.ece, "brier": cal.brier}
    point_html = ""
    if proba.shape[1] == 2:
        point = operating_point(y, proba[:, 1], *target)
        numbers["operating_point"] = point.as_dict()
        figures.append(_img(roc_figure(y, proba[:, 1], point), "ROC curve"))
        k = point.counts
        point_html = (
            f"<p>At a stated <b>{point.target} of {point.wanted:g}</b> for <b>{_e(names[1])}</b> (the positive class), "
            f"the threshold on P({_e(names[1])}) is <b>{point.threshold:.3f}</b>: sensitivity "
            f"{point.sensitivity:.3f}, specificity {point.specificity:.3f}, positive predictive value "
            f"{_f(point.ppv)}, negative predictive value {_f(point.npv)} ({k['tp']} true and {k['fp']} false "
            f"positives, {k['tn']} true and {k['fn']} false negatives of {len(y)} images).</p>")
    figures.append(_img(reliability_figure(cal), "reliability diagram"))
    return (f"<h2>The chosen probe: {_e(c['backbone'])} {_e(c['output'])} {_e(c['probe'])}</h2>"
            f"<div class=grid>{''.join(figures)}</div>{point_html}"
            f"<p class=note>Out-of-fold predictions of the first repeat of the shared folds: every image predicted "
            f"once, by the probe fitted without its fold. Expected calibration error {cal.ece:.3f} over 10 equal-width "
            f"bins of {html.escape(cal.what)}; Brier score {cal.brier:.3f} (0 is perfect). The confusion matrix "
            f"predicts the most probable class.</p>", numbers)


def _cache_clusters(study: StudyResults, label: str) -> np.ndarray | None:
    """The stored near-duplicate clusters of one model's cache, in the study's row order (None if absent)."""
    from ..cache import open_cache

    try:
        with open_cache(study.model(label)["cache"]["path"]) as cache:
            clusters = cache.dup_cluster
            ids = cache.ids
    except PipelineError as exc:
        log.warning("no duplicate clusters from %s: %s", label, exc)
        return None
    if clusters is None:
        return None
    where = dict(zip(ids.tolist(), clusters.tolist()))
    return np.asarray([where.get(i, -1) for i in study.data["ids"]])


def _images(study: StudyResults) -> str:
    m = study.model(study.chosen["backbone"] if study.chosen else study.labels[0])
    root = m.get("root")
    samples = thumbs.class_samples(root, study.data["ids"], study.data["y"], study.data["class_names"],
                                   study.config.get("seed", 0))
    clusters = thumbs.largest_clusters(root, study.data["ids"], _cache_clusters(study, m["label"]))
    if not samples:
        return ("<h2>Images</h2><p class=note>The image files are not at hand (looked under "
                f"{_e(root)}), so no thumbnails are shown.</p>")
    dup = ("<h3>Largest near-duplicate clusters</h3>" + clusters) if clusters else (
        "<p class=note>No near-duplicate clusters are stored in the chosen model's cache "
        "(`layerprobe duplicates CACHE` finds them).</p>")
    return f"<h2>Images</h2><h3>A few per class</h3>{samples}{dup}"


def _leakage(study: StudyResults) -> str:
    lines = []
    for m in study.models:
        d, leak = m.get("duplicates"), m.get("leakage")
        if not d:
            lines.append(f"<tr><td class=name>{_e(m['label'])}</td><td colspan=5 class=name>no duplicates stored "
                         "(`layerprobe duplicates CACHE`)</td></tr>")
            continue
        lines.append(
            f"<tr><td class=name>{_e(m['label'])}</td><td>{d.get('clusters')}</td><td>{d.get('rows_in_clusters')}</td>"
            f"<td>{_e(d.get('threshold', '–'))}</td>"
            f"<td>{leak['study_folds'] if leak else '–'}</td>"
            f"<td>{leak['plain_folds'] if leak else '–'} ({100 * leak['plain_fraction']:.1f}%)</td></tr>")
    return ("<h2>Duplicates and leakage</h2><table><thead><tr><th class=name>clusters found by</th><th>clusters</th>"
            "<th>images in clusters</th><th>threshold</th><th>test images with a duplicate in training: study folds"
            "</th><th>same, plain stratified folds</th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
            f"<p class=note>The study's folds keep the groups of {_e(study.data['groups'])} whole "
            f"({study.data.get('n_groups') or 'no'} groups), joined over every cache, so a near-duplicate found by "
            "any model's codes never sits on both sides of a split. The last column is what a plain random "
            "split with the same seed would have leaked.</p>")


def _advice(study: StudyResults, metric: str) -> str:
    from ..similarity import advise_cache, similarity_table
    from ..similarity.plots import similarity_figure

    label = study.chosen["backbone"] if study.chosen else study.labels[0]
    m = study.model(label)
    view = study.model_results(label)
    try:
        advice = advise_cache(m["cache"]["path"], metric=metric if metric in ("roc_auc", "balanced_accuracy") else None,
                              results=view)
        figure = _img(similarity_figure(similarity_table(m["cache"]["path"], "imagenet" if _has_bn(m) else None)),
                      "distance to ImageNet and transferability by layer")
    except PipelineError as exc:
        log.warning("report without the advice: %s", exc)
        return f"<h2>Advice</h2><p class=note>No advice: {_e(exc)}</p>"
    findings = "".join(f"<li>{html.escape(f.text)}</li>" for f in advice.findings)
    return (f"<h2>Advice for {_e(label)}</h2><p>Layer <b>{_e(advice.layer)}</b> (by {_e(advice.layer_by)}); like "
            f"ImageNet in the sense that matters: <b>{_e(advice.similarity)}</b>; fine-tuning: "
            f"<b>{_e(advice.fine_tune)}</b>.</p><ul>{findings}</ul>"
            f"<details><summary>Distance to ImageNet and transferability by layer</summary>{figure}</details>")


def _has_bn(m: dict) -> bool:
    from ..cache import open_cache

    with open_cache(m["cache"]["path"]) as cache:
        return bool(cache.bn_stats())


def _cell(m: dict | None) -> str:
    if m is None or m.get("mean") is None:
        return "<td>–</td>"
    low, high = m["ci"]
    return f"<td>{_f(m['mean'])}<br><span class=note>{_f(low)}–{_f(high)}</span></td>"


def _all_rows(study: StudyResults, metric: str) -> str:
    names = [n for n in TABLE_METRICS if n in metric_names(len(study.data["class_names"]))]
    tied = {(p, tuple(t)) for p, c in study.comparisons.get(metric, {}).items() for t in c["tied"]}
    c = study.chosen
    head = "".join(f"<th>{html.escape(get_metric(n).label)}</th>" for n in names)
    lines = [f"<table><thead><tr><th class=name>model</th><th class=name>layer</th><th class=name>probe</th>{head}"
             "<th>width</th></tr></thead><tbody>"]
    for r in study.rows:
        key = (r["backbone"], r["output"], r["probe"])
        css = "chosen" if c and key == (c["backbone"], c["output"], c["probe"]) else (
            "tied" if (r["probe"], (r["backbone"], r["output"])) in tied else "")
        mark = " =" if css == "tied" else (" ✓" if css == "chosen" else "")
        cells = "".join(_cell(r["metrics"].get(n)) for n in names)
        lines.append(f"<tr class='{css}'><td class=name>{_e(r['backbone'])}</td><td class=name>{_e(r['output'])}</td>"
                     f"<td class=name>{_e(r['probe'])}{mark}</td>{cells}<td>{r['channels']}</td></tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _facts(study: StudyResults) -> str:
    d, f, cfg = study.data, study.folds, study.config
    counts = ", ".join(f"{k} ({v})" for k, v in d["class_counts"].items())
    first = study.models[0]["cache"]["input"]
    facts = [("data set", f"{first['name']} ({first['source']}): {d['n_rows']} labelled images; {counts}"),
             ("folds", f"{f.kind}, {f.n_folds} folds x {f.repeats} repeat(s), seeds {list(f.seeds)}; groups: "
                       f"{d['groups']} ({d.get('n_groups') or 'none'})"),
             ("probes", f"{', '.join(cfg['probes'])}; bootstrap {cfg['n_boot']} resamples; seed {cfg['seed']}"),
             ("made", f"{study.created} with layerprobe {study.version}, --jobs {study.runtime.get('jobs')}, "
                      f"{study.runtime.get('duration_s')} s of probing")]
    for m in study.models:
        w = study.model_results(m["label"]).provenance.model.weights
        facts.append((m["label"], f"weights {w.source} sha256 {w.sha256[:16]}…; cache "
                                  f"{m['cache']['path']} (key {m['cache']['key'][:16]}…)"))
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"


def render_study(study: StudyResults, metric: str = "roc_auc", target: tuple[str, float] = DEFAULT_TARGET,
                 advice: bool = True) -> str:
    """The study report as one HTML page."""
    probe = study.chosen.get("probe") if study.chosen else None
    headline = study.chosen.get("metric", metric) if study.chosen else metric
    title = f"Which backbone and which layer? {', '.join(study.labels)} on {study.models[0]['cache']['input']['name']}"
    label = html.escape(get_metric(metric).label)
    parts = [f"<h1>{html.escape(title)}</h1>", _answer(study)]
    if probe:
        parts += ["<h2>Models, cost and their best layer</h2>", _models_table(study),
                  f"<p class=note>Throughput: images computed over the wall time of the extraction that wrote each "
                  f"cache (decoding included), as measured on its machine; rerun on one machine to compare fairly. "
                  f"The chosen candidate is the cheapest model of those tied with the best (highest throughput, then "
                  f"fewest parameters) at its best tied layer.</p>",
                  "<h2>Model x layer</h2>", _img(heat_map(study, headline, probe), "model x layer heat map"),
                  f"<div class=grid>{_img(model_curves(study, metric), f'{label} by depth, one line per model')}</div>",
                  _img(cost_figure(study, headline, probe), "score against throughput")]
        section, _ = _diagnostics(study, target)
        parts.append(section)
    parts += [_images(study), _leakage(study)]
    if advice:
        parts.append(_advice(study, headline))
    parts += [f"<h2>Every row</h2><p class=note>Fold mean and, below, the 95% bootstrap interval of the out-of-fold "
              f"predictions. ✓ the chosen row; = tied with the best of its probe by {html.escape(headline)} across "
              f"every model and layer.</p>", _all_rows(study, headline), "<h2>Where the numbers come from</h2>",
              _facts(study)]
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width'><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def write_study_report(study_path: str | Path, out: str | Path | None = None, metric: str = "roc_auc",
                       target: tuple[str, float] = DEFAULT_TARGET, advice: bool = True) -> StudyReport:
    """Write the report of a study file to ``out`` (default: the study file with .html)."""
    get_metric(metric)
    study = load_study(study_path)
    if metric not in metric_names(len(study.data["class_names"])):
        raise ProbeError(f"metric {metric!r} applies to two classes only; this study has "
                         f"{len(study.data['class_names'])}")
    out = Path(out) if out is not None else Path(study_path).with_suffix(".html")
    return StudyReport(atomic_write(out, render_study(study, metric, target, advice).encode()))
