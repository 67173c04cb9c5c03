"""Advice in plain words, each sentence with the numbers behind it.

The rules (constants here and in :mod:`pipeline.probes.compare`; every
threshold is a judgement call, written down so that it can be argued with):

1. **Which layer.** With probe results, the best probe's outputs are compared
   pairwise on their shared folds (corrected resampled t-test). The outputs
   whose gap to the best has a 95% interval covering 0 are *tied*. The last
   output (the simplest choice: the standard CNN codes) is chosen when it is
   shown to be as good, within ``MARGIN`` (the "similar" verdict below), or
   when no output beats chance (a default); otherwise the best, and a tied last
   output is named as the simpler alternative with what it may cost. Without
   probe results, LogME chooses the last output when it is within
   ``LOGME_MARGIN`` nats per image of the best (a tie), else the best.
2. **Similar, different or uncertain.** ``different``: the last output is
   worse than the best with 95% confidence. ``similar``: some layer beats
   chance with 95% confidence and no output beats the last by more than
   ``MARGIN`` (every 95% upper bound of ``output - last``). Otherwise, and
   always without probe results (LogME has no interval) or when ROC AUC and
   balanced accuracy give different verdicts, ``uncertain``.
3. **Saturated.** A tied output scores at least ``CEILING``: the task cannot
   tell layers apart, and fine-tuning has nothing to gain.
4. **Will fine-tuning pay?** ``unlikely`` for a saturated task, below
   ``FEW_PER_CLASS`` images per class, or for a "similar" task that leaves less
   than ``HEADROOM`` of the way from chance to a perfect score; ``likely`` for a
   "different" task; ``uncertain`` otherwise (no signal, an "uncertain" verdict,
   or a "similar" task with much headroom, where only a trial can tell).
5. **Will more images help?** From a learning curve (optional): the gain of
   the last doubling of the training folds, paired over folds.
   ``likely`` when its 95% interval lies above 0, ``unlikely`` when its
   upper bound is below ``SMALL_GAIN`` (or the task is saturated),
   ``uncertain`` otherwise.
6. **Where the data depart from ImageNet** (when BatchNorm statistics were
   stored) and **do LogME and the probes agree** (best layers, Spearman's rho).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import SimilarityError
from ..probes.compare import CEILING, CONFIDENCE, MARGIN, Comparison, compare_outputs

if TYPE_CHECKING:
    from ..cache import CacheManifest

FEW_PER_CLASS = 50
HEADROOM = 0.2  # share of the way from chance to perfect a probe leaves unexplained
LOGME_MARGIN = 0.01  # nats per image within which LogME counts two outputs as tied
SMALL_GAIN = 0.01  # a doubling of the training images that surely adds less than this adds little
LOGITS = "logits"
LABELS = {"roc_auc": "ROC AUC", "balanced_accuracy": "balanced accuracy", "logme": "LogME"}
OTHER_METRIC = {"roc_auc": "balanced_accuracy", "balanced_accuracy": "roc_auc"}


@dataclass(frozen=True)
class Curve:
    """One measure along the layers, in depth order (LogME, a distance)."""

    measure: str
    outputs: tuple[str, ...]
    values: tuple[float | None, ...]
    source: str = ""

    def __post_init__(self):
        if len(self.outputs) != len(self.values):
            raise SimilarityError(f"curve {self.measure!r}: {len(self.outputs)} outputs but {len(self.values)} values")

    def known(self) -> list[int]:
        return [i for i, v in enumerate(self.values) if _finite(v)]

    def best(self) -> int:
        """Index of the highest value (ties: the deeper layer)."""
        known = self.known()
        if not known:
            raise SimilarityError(f"curve {self.measure!r} has no finite value; nothing to advise on")
        return max(known, key=lambda i: (self.values[i], i))


@dataclass(frozen=True)
class Finding:
    """One sentence of advice and every number it shows."""

    topic: str  # data, layer, similarity, metrics, saturated, fine_tune, more_data, imagenet, agreement
    text: str
    numbers: dict


@dataclass
class Advice:
    layer: str
    layer_by: str  # "probe <name>, <metric>" or "LogME"
    similarity: str  # similar, different, uncertain
    fine_tune: str  # likely, unlikely, uncertain
    tied: list[str] = field(default_factory=list)
    saturated: bool = False
    more_data: str | None = None  # likely, unlikely, uncertain; None without a learning curve
    findings: list[Finding] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)  # LearningCurve.as_dict() of each curve behind more_data
    rules: dict = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join(f.text for f in self.findings)

    def as_dict(self) -> dict:
        return {"layer": self.layer, "layer_by": self.layer_by, "similarity": self.similarity,
                "fine_tune": self.fine_tune, "tied": list(self.tied), "saturated": self.saturated,
                "more_data": self.more_data, "findings": [asdict(f) for f in self.findings], "rules": self.rules,
                "curves": self.curves}


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _label(measure: str) -> str:
    return LABELS.get(measure, measure)


def rules() -> dict:
    return {"confidence": CONFIDENCE, "margin": MARGIN, "ceiling": CEILING, "few_per_class": FEW_PER_CLASS,
            "headroom": HEADROOM, "logme_margin": LOGME_MARGIN, "small_gain": SMALL_GAIN}


def advise(n_images: int, n_classes: int, distance: Curve | None, transfer: Curve,
           probes: Comparison | None = None, other: Comparison | None = None, curves: Sequence = ()) -> Advice:
    """Advice from the data's size, the distance to ImageNet, LogME and (optionally) probe comparisons.

    ``probes``: the comparison of the metric asked for; ``other``: the same
    probe under the other metric (ROC AUC vs balanced accuracy), to catch
    disagreement; ``curves``: learning curves
    (:class:`~pipeline.probes.curve.LearningCurve`), the first of the chosen
    output, then any other (the last output).
    """
    if n_images < 1 or n_classes < 2:
        raise SimilarityError(f"advice needs labelled images of at least 2 classes; got {n_images} image(s) in "
                              f"{n_classes} class(es)")
    per_class = n_images / n_classes
    findings = [_data_finding(n_images, n_classes, per_class)]
    if probes is None:
        advice = _from_logme(transfer, per_class, findings)
    else:
        advice = _from_probes(probes, other, per_class, n_classes, findings)
    for i, curve in enumerate(curves):
        level, finding = _more_data(curve, advice.saturated)
        advice.more_data = level if i == 0 else advice.more_data
        findings.append(finding)
    if distance is not None and distance.known():
        findings.append(_imagenet_finding(distance, advice.layer, advice.similarity))
    if probes is not None:
        findings.append(_agreement_finding(transfer, probes))
    advice.findings, advice.rules, advice.curves = findings, rules(), [c.as_dict() for c in curves]
    return advice


# With probe results -------------------------------------------------------------------------------
def _from_probes(c: Comparison, other: Comparison | None, per_class: float, n_classes: int,
                 findings: list[Finding]) -> Advice:
    findings.append(_layer_finding(c))
    findings.append(_similarity_finding(c))
    verdict = c.verdict
    if other is not None and other.verdict != c.verdict:
        verdict = "uncertain"
        findings.append(_metrics_finding(c, other))
    if c.saturated:
        findings.append(_saturated_finding(c))
    level, finding = _fine_tune(c, verdict, per_class)
    findings.append(finding)
    return Advice(c.chosen, f"probe {c.probe}, {c.metric}", verdict, level, list(c.tied), c.saturated)


def _interval(d) -> str:
    return f"95% interval {d.low:.3f} to {d.high:.3f}"


def _layer_finding(c: Comparison) -> Finding:
    chosen, best = c.score(c.chosen), c.score(c.best)
    others = [o for o in c.tied if o != c.chosen]
    numbers = {"layer": c.chosen, "value": chosen.mean, "low": chosen.interval[0], "high": chosen.interval[1],
               "estimates": c.n_estimates, "best": c.best, "best_value": best.mean, "tied": list(c.tied),
               "confidence": c.confidence}
    text = (f"Use {c.chosen}: the {c.probe} probe scores {chosen.mean:.3f} {_label(c.metric)} there "
            f"(95% interval {chosen.interval[0]:.3f} to {chosen.interval[1]:.3f}, over {c.n_estimates} folds).")
    if c.chosen != c.best:
        gap = chosen.behind_best
        numbers.update(gap=gap.mean, gap_low=gap.low, gap_high=gap.high)
        how = "tied with" if chosen.tied else "behind"
        text += (f" It is the last output and {how} the highest, {c.best} ({best.mean:.3f}, ahead by "
                 f"{gap.mean:.3f}, {_interval(gap)}); " + ("ties go to the last output, the simplest choice."
                                                          if c.signal else "the last output is the default."))
    elif c.chosen != c.last and c.score(c.last).tied:
        last, gap = c.score(c.last), c.last_behind_best
        others = [o for o in others if o != c.last]
        numbers.update(last=c.last, last_value=last.mean, gap=gap.mean, gap_low=gap.low, gap_high=gap.high,
                       p_last_worse=c.p_last_worse)
        text += (f" The last output, {c.last} ({last.mean:.3f}), is tied with it at 95% confidence and is the "
                 f"simpler choice, but may be worse by up to {gap.high:.3f} (probability {c.p_last_worse:.3f} that "
                 "it is worse); not shown to be as good, it is not the one chosen.")
    if others:
        text += " Tied with it at 95% confidence: " + ", ".join(f"{o} ({c.score(o).mean:.3f})" for o in others) + "."
        numbers["tied_values"] = [c.score(o).mean for o in others]
    if not c.signal:
        numbers["chance"] = c.chance
        text += (f" No layer is shown to beat chance ({c.chance:.3f}), so this is a default, not a finding: "
                 "the codes may carry nothing about these labels.")
    return Finding("layer", text, numbers)


def _similarity_finding(c: Comparison) -> Finding:
    last, best, gap = c.score(c.last), c.score(c.best), c.last_behind_best
    numbers = {"verdict": c.verdict, "last": c.last, "last_value": last.mean, "best": c.best, "best_value": best.mean,
               "best_low": best.interval[0], "best_high": best.interval[1], "chance": c.chance, "gap": gap.mean,
               "gap_low": gap.low, "gap_high": gap.high, "p_last_worse": c.p_last_worse,
               "beats_last_by_at_most": c.beats_last_by_at_most, "margin": c.margin, "confidence": c.confidence}
    if len(c.outputs) == 1:
        text = (f"Uncertain whether the data set is like ImageNet: only {c.last} was probed ({last.mean:.3f}); "
                "probe the other layers (run_probes without layers; layerprobe probe without --layers) to "
                "compare them.")
    elif not c.signal:
        text = (f"Uncertain whether the data set is like ImageNet: no layer is shown to beat chance ({c.chance:.3f}); "
                f"the best, {c.best}, scores {best.mean:.3f} (95% interval {best.interval[0]:.3f} to "
                f"{best.interval[1]:.3f}).")
    elif c.verdict == "different":
        text = (f"Different from ImageNet for this task: the last output, {c.last}, scores {last.mean:.3f}, behind "
                f"the best, {c.best}, by {gap.mean:.3f} ({_interval(gap)}; probability {c.p_last_worse:.3f} that "
                "it is worse): the top of the network is tuned to ImageNet in a way that does not help here.")
    elif c.verdict == "similar":
        text = (f"Similar to ImageNet for this task: the last output, {c.last}, scores {last.mean:.3f}, and no "
                f"output beats it by more than {c.margin:.3f} (the largest 95% upper bound is "
                f"{c.beats_last_by_at_most:.3f}); its CNN codes are the features to use.")
    else:
        text = (f"Uncertain whether the data set is like ImageNet: the last output, {c.last}, scores {last.mean:.3f}, "
                f"tied with the best, {c.best} ({best.mean:.3f}; {_interval(gap)}, probability "
                f"{c.p_last_worse:.3f} that it is worse), but another output may beat it by up to "
                f"{c.beats_last_by_at_most:.3f}, more than {c.margin:.3f}; more images or repeats would decide.")
    return Finding("similarity", text, numbers)


def _metrics_finding(c: Comparison, other: Comparison) -> Finding:
    numbers = {c.metric: c.verdict, other.metric: other.verdict, f"p_last_worse_{c.metric}": c.p_last_worse,
               f"p_last_worse_{other.metric}": other.p_last_worse}
    text = (f"The metrics disagree: by {_label(c.metric)} the data set is '{c.verdict}' (probability "
            f"{c.p_last_worse:.3f} that the last output is worse), by {_label(other.metric)} '{other.verdict}' "
            f"(probability {other.p_last_worse:.3f}); the verdict stays 'uncertain' until they agree.")
    return Finding("metrics", text, numbers)


def _saturated_finding(c: Comparison) -> Finding:
    top = [o for o in c.tied if c.score(o).mean >= CEILING]
    numbers = {"ceiling": CEILING, "saturated": top, "values": [c.score(o).mean for o in top]}
    text = (f"The task is saturated: {', '.join(f'{o} ({c.score(o).mean:.3f})' for o in top)} "
            f"score at least {CEILING:.3f}, so this task cannot tell the layers apart.")
    return Finding("saturated", text, numbers)


def _fine_tune(c: Comparison, verdict: str, per_class: float) -> tuple[str, Finding]:
    best = c.score(c.best).mean
    headroom = (1.0 - best) / (1.0 - c.chance) if c.chance < 1 else 0.0
    numbers = {"per_class": per_class, "few_per_class": FEW_PER_CLASS, "headroom": headroom,
               "headroom_rule": HEADROOM, "best_value": best, "p_last_worse": c.p_last_worse}
    if c.saturated:
        return "unlikely", Finding("fine_tune", f"Fine-tuning is unlikely to pay: the task is saturated (best "
                                                f"{best:.3f}), there is nothing left to gain.", numbers)
    if per_class < FEW_PER_CLASS:
        return "unlikely", Finding("fine_tune", (
            f"Fine-tuning is unlikely to pay: with about {per_class:.0f} images per class (fewer than "
            f"{FEW_PER_CLASS}) a fine-tuned network would mostly fit noise; keep a probe on {c.chosen}."), numbers)
    if not c.signal:
        return "uncertain", Finding("fine_tune", "Fine-tuning: uncertain, as no layer is shown to beat chance yet; "
                                                 "check the labels, or add images.", numbers)
    if verdict == "different":
        return "likely", Finding("fine_tune", (
            f"Fine-tuning is likely to pay: the top of the network falls behind {c.best} (probability "
            f"{c.p_last_worse:.3f}), with about {per_class:.0f} images per class; fine-tune from {c.best} up, with "
            "augmentation and early stopping."), numbers)
    if verdict == "similar" and headroom < HEADROOM:
        return "unlikely", Finding("fine_tune", (
            f"Fine-tuning is unlikely to add much: the last output works as well as any and the probe leaves only "
            f"{headroom:.0%} of the way from chance to perfect; a probe on {c.chosen} is the economical choice."),
            numbers)
    if verdict == "similar":
        return "uncertain", Finding("fine_tune", (
            f"Fine-tuning: uncertain. The last output works as well as any, but the probe leaves {headroom:.0%} of "
            f"the way from chance to perfect, with about {per_class:.0f} images per class; only a trial can tell "
            "whether fine-tuning closes part of it."), numbers)
    return "uncertain", Finding("fine_tune", (
        f"Fine-tuning: uncertain, as it is not settled whether the top of the network falls behind (probability "
        f"{c.p_last_worse:.3f} that the last output is worse)."), numbers)


# Without probe results: LogME -------------------------------------------------------------------
def _from_logme(curve: Curve, per_class: float, findings: list[Finding]) -> Advice:
    best = curve.best()
    last = curve.known()[-1]
    floor = curve.values[best] - LOGME_MARGIN
    tied = [i for i in curve.known() if curve.values[i] >= floor]
    chosen = last if last in tied else best
    name, value = curve.outputs[chosen], curve.values[chosen]
    numbers = {"layer": name, "value": value, "best": curve.outputs[best], "best_value": curve.values[best],
               "last": curve.outputs[last], "last_value": curve.values[last], "margin": LOGME_MARGIN,
               "tied": [curve.outputs[i] for i in tied]}
    text = f"Use {name}: LogME {value:.3f} nats per image there"
    if chosen != best:
        text += (f", within {LOGME_MARGIN:.3f} of the highest, {curve.outputs[best]} ({curve.values[best]:.3f}); "
                 "ties go to the last output, the simplest choice.")
    else:
        text += ", the highest."
    findings.append(Finding("layer", text, numbers))
    lean = "similar" if last in tied else "different"
    gap = curve.values[best] - curve.values[last]
    findings.append(Finding("similarity", (
        f"Uncertain whether the data set is like ImageNet: LogME leans '{lean}' (the last output, "
        f"{curve.outputs[last]}, is {gap:.3f} nats per image below the best), but LogME gives no confidence "
        "interval; run the probes (layerprobe probe) and pass their results (--results) for a verdict."),
        {**numbers, "lean": lean, "gap": gap}))
    if per_class < FEW_PER_CLASS:
        level, text = "unlikely", (f"Fine-tuning is unlikely to pay: with about {per_class:.0f} images per class "
                                   f"(fewer than {FEW_PER_CLASS}) a fine-tuned network would mostly fit noise.")
    else:
        level, text = "uncertain", ("Fine-tuning: uncertain without probe results; the probes (layerprobe probe) "
                                    "and advice on their results (--results) can tell.")
    findings.append(Finding("fine_tune", text, {"per_class": per_class, "few_per_class": FEW_PER_CLASS}))
    return Advice(name, "LogME", "uncertain", level, [curve.outputs[i] for i in tied], False)


# Shared findings ------------------------------------------------------------------------------------
def _data_finding(n_images: int, n_classes: int, per_class: float) -> Finding:
    size = "few" if per_class < FEW_PER_CLASS else "enough"
    return Finding("data", f"{n_images} images in {n_classes} classes, about {per_class:.0f} per class: {size} "
                           "images for training a network.",
                   {"n_images": n_images, "n_classes": n_classes, "per_class": per_class})


def _more_data(curve, saturated: bool) -> tuple[str, Finding]:
    gain = curve.last_doubling
    half = next((p for p in curve.points if abs(p.fraction - 0.5) < 1e-9), None)
    full = curve.points[-1]
    numbers = {"output": curve.output, "probe": curve.probe, "metric": curve.metric, "n_half": half.n_train if half
               else None, "n_full": full.n_train, "value_half": half.mean if half else None, "value_full": full.mean,
               "gain": None if gain is None else gain.mean, "gain_low": None if gain is None else gain.low,
               "gain_high": None if gain is None else gain.high, "small_gain": SMALL_GAIN,
               "confidence": CONFIDENCE}
    if gain is None:
        return "uncertain", Finding("more_data", f"More images: uncertain, as the learning curve of {curve.output} "
                                                 "has no halfway point (use an even curve_steps, --curve-steps).",
                                   numbers)
    what = (f"on {curve.output} the {curve.probe} probe went from {half.mean:.3f} with about {half.n_train:.0f} "
            f"training images to {full.mean:.3f} with {full.n_train:.0f} (gain {gain.mean:.3f}, {_interval(gain)})")
    if saturated:
        level, text = "unlikely", f"More labelled images are unlikely to help: the task is saturated; {what}."
    elif gain.low > 0:
        level, text = "likely", (f"More labelled images are likely to help: {what}; another doubling would likely "
                                 f"add about as much or less, up to roughly {gain.mean:.3f}.")
    elif gain.high < SMALL_GAIN:
        level, text = "unlikely", (f"More labelled images are unlikely to help much: {what}; the curve has "
                                   f"flattened (a doubling surely adds less than {SMALL_GAIN:.3f}).")
    else:
        level, text = "uncertain", f"Whether more labelled images help is uncertain: {what}."
    return level, Finding("more_data", text, numbers)
def _imagenet_finding(distance: Curve, best_output: str, verdict: str) -> Finding:
    known = distance.known()
    low, high = min(known, key=lambda i: distance.values[i]), max(known, key=lambda i: distance.values[i])
    best = distance.outputs.index(best_output) if best_output in distance.outputs else None
    peak = None if best is None else ("before" if high < best else "at_or_after")
    numbers = {"measure": distance.measure, "closest": distance.outputs[low], "closest_value": distance.values[low],
               "furthest": distance.outputs[high], "furthest_value": distance.values[high], "peak_vs_best": peak}
    text = (f"Against ImageNet's BatchNorm statistics ({distance.measure}), the data are closest at "
            f"{distance.outputs[low]} ({distance.values[low]:.3f}) and furthest at {distance.outputs[high]} "
            f"({distance.values[high]:.3f}).")
    if peak == "before":
        text += (" The distance peaks before the best layer: the images differ from ImageNet mostly in low-level "
                 "appearance, which the deeper layers absorb.")
    elif peak and verdict == "different":
        text += (" The distance peaks at or after the best layer, where the scores fall: the top layers see these "
                 "images least like ImageNet, which agrees with choosing an earlier layer.")
    elif peak and verdict == "similar":
        text += (" The distance peaks at or after the best layer, yet the last layer scores about as well: this "
                 "departure from ImageNet does not hurt the task.")
    elif peak:
        text += " The distance peaks at or after the chosen layer."
    return Finding("imagenet", text, numbers)


def _agreement_finding(transfer: Curve, probes: Comparison) -> Finding:
    from scipy.stats import spearmanr

    common = [o.output for o in probes.outputs if o.output in transfer.outputs]
    pairs = [(transfer.values[transfer.outputs.index(o)], probes.score(o).mean) for o in common]
    pairs = [(a, b) for a, b in pairs if _finite(a) and _finite(b)]
    varied = len(pairs) >= 3 and all(len(set(side)) > 1 for side in zip(*pairs))
    rho = float(spearmanr(*zip(*pairs)).statistic) if varied else None  # undefined for a constant curve
    best_t, best_p = transfer.outputs[transfer.best()], probes.best
    agree = "agree" if best_t == best_p else "disagree"
    text = (f"LogME and the {probes.probe} probe {agree} on the best layer ({best_t} vs {best_p})"
            + (f"; their curves have Spearman correlation {rho:.2f} over {len(pairs)} layers." if _finite(rho)
               else "."))
    return Finding("agreement", text, {"logme_best": best_t, "probe_best": best_p, "spearman": rho,
                                       "layers": len(pairs)})


def curves_from_table(table, distance_measure: str = "w2") -> tuple[Curve | None, Curve]:
    """The distance and LogME curves of a :class:`SimilarityTable` made against ImageNet."""
    outputs = tuple(r.name for r in table.rows)
    if not table.transfers:
        raise SimilarityError("no advice: " + "; ".join(table.notes))
    transfer = Curve("logme", outputs, tuple(table.column("logme")))
    values = tuple(table.column(distance_measure)) if table.bn_rows else ()
    distance = Curve(distance_measure, outputs, values) if any(v is not None for v in values) else None
    return distance, transfer


def check_results_match(results, manifest: "CacheManifest", cache_name: str) -> None:
    """Refuse probe results made from other images or another model than the cache's."""
    made = results.provenance
    differ = [d.brief() for d in made.source.differences(manifest.source, among=("model", "weights_sha256"))]
    fingerprints = (made.input.fingerprint or "")[:12], (manifest.input.fingerprint or "")[:12]
    if fingerprints[0] != fingerprints[1]:
        differ.append("input fingerprint {} vs {}".format(*fingerprints))
    if differ:
        raise SimilarityError(f"the probe results were made from another cache than {cache_name} "
                              f"({'; '.join(differ)}); run `layerprobe probe` on this cache")


UNTRAINED_WEIGHTS = ("random-init", "none")


def advise_cache(cache_path: str | Path, results_path: str | Path | None = None, metric: str | None = None,
                 curve_steps: int | None = None, jobs: int = 1, results=None) -> Advice:
    """Advice for a cache: LogME per layer, the distance to ImageNet where BatchNorm statistics were
    stored, and, if ``results_path`` is given, the paired comparisons of its best probe under
    ``metric`` (default ROC AUC) checked against the other metric. ``curve_steps`` (with results):
    also fit learning curves of the chosen probe at the chosen and the last output
    (:func:`pipeline.probes.curve.learning_curve`) to say whether more images would help. ``results``: a
    ``ProbeResults`` already in memory (one model of a study) instead of ``results_path``."""
    from ..cache import open_cache
    from .tables import IMAGENET, similarity_table

    with open_cache(cache_path) as cache:
        manifest, has_bn = cache.provenance, bool(cache.bn_stats())
    weights = manifest.model.weights.source
    trained = weights not in UNTRAINED_WEIGHTS  # an untrained model's BatchNorm statistics are not ImageNet's
    probes = other = None
    curves = []
    if results is None and results_path is not None:
        from ..probes import load_results

        results = load_results(results_path)
    if results is not None:
        check_results_match(results, manifest, Path(cache_path).name)
        probes, other = probe_comparisons(results, metric)
        if curve_steps is not None:
            curves = learning_curves(cache_path, results, probes, curve_steps, jobs)
    elif curve_steps is not None:
        raise SimilarityError("a learning curve needs probe results: pass results_path (--results), written by "
                              "run_probes (layerprobe probe)")
    table = similarity_table(cache_path, IMAGENET if has_bn and trained else None)
    distance, transfer = curves_from_table(table)
    advice = advise(table.n_labelled, table.n_classes, distance, transfer, probes, other, curves)
    if has_bn and not trained:
        advice.findings.append(Finding("imagenet", f"No distance to ImageNet: the model's weights are {weights}, so "
                                                   "its BatchNorm statistics are not ImageNet's; extract with "
                                                   "pretrained weights to measure it.", {"weights": weights}))
    elif not has_bn:
        advice.findings.append(Finding("imagenet", "No distance to ImageNet: the cache holds no BatchNorm statistics "
                                                   "(extract with bn_stats=True (--bn-stats) to add it).", {}))
    return advice


def learning_curves(cache_path, results, probes: Comparison, steps: int, jobs: int = 1) -> list:
    """Learning curves of the compared probe at the chosen output and, if another, the last."""
    from ..probes.curve import learning_curve

    outputs = list(dict.fromkeys((probes.chosen, probes.last)))
    return [learning_curve(cache_path, results, o, probes.probe, probes.metric, steps, jobs) for o in outputs]


def probe_comparisons(results, metric: str | None = None) -> tuple[Comparison, Comparison | None]:
    """The best probe's comparison under ``metric`` and, where the rows hold it, under the other metric."""
    from ..errors import ProbeError

    metric = metric or "roc_auc"
    if metric not in OTHER_METRIC:
        raise SimilarityError(f"advice reads the probe metric roc_auc or balanced_accuracy, not {metric!r}")
    try:
        main = compare_outputs(results, metric)
    except ProbeError as exc:
        raise SimilarityError(str(exc)) from None
    try:
        other = compare_outputs(results, OTHER_METRIC[metric], main.probe)
    except ProbeError:
        other = None
    return main, other
