"""The report's patient-level table: shown only when the results hold patient-level rows."""

from __future__ import annotations

import html

from ..probes import ProbeResults, get_metric

_HOW = {"mean": "mean of the patient's images", "max": "largest positive probability (any image positive)"}


def _cell(m: dict | None) -> str:
    if not m:
        return "<td>–</td>"
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    low, high = m["ci"]
    return f"<td>{fmt(m['mean'])} ± {fmt(m['sd'])}<br><span class=note>[{fmt(low)}, {fmt(high)}]</span></td>"


def patient_section(results: ProbeResults, metric: str) -> str:
    """Per (layer, probe): the metric per image and after aggregating each patient (group); empty without them."""
    rows = [r for r in results.rows if r.get("patient_metrics")]
    if not rows:
        return ""
    label = html.escape(get_metric(metric).label)
    levels = list(dict.fromkeys(how for r in rows for how in r["patient_metrics"]))
    info = results.data.get("patients", {})
    head = "".join(f"<th>{label} per patient, {html.escape(_HOW.get(h, h))}</th>" for h in levels)
    lines = [f"<h2>Patient-level results</h2>\n<p class=note>{info.get('n', '?')} patients (the cache's group "
             "column). Each patient's out-of-fold probabilities are aggregated, then scored on the same folds; the "
             "95% interval resamples patients.</p>",
             f"<table><thead><tr><th>layer</th><th>probe</th><th>{label} per image</th>{head}</tr></thead><tbody>"]
    for r in rows:
        cells = "".join(_cell(r["patient_metrics"].get(h, {}).get(metric)) for h in levels)
        lines.append(f"<tr><td>{html.escape(r['output'])}</td><td>{html.escape(r['probe'])}</td>"
                     f"{_cell(r['metrics'].get(metric))}{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)
