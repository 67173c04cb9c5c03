"""Advice in plain words, each sentence with the numbers behind it.

The rules (constants below; every threshold is a judgement call, written down
so that it can be argued with):

1. **Which layer.** With probe results, the layer where the best probe (the one
   with the highest best score) scores highest by its fold mean of ``metric``
   (ROC AUC by default). Without them, the layer with the highest LogME. Layers
   within one fold standard deviation of the best are named as ties.
2. **Is the data set "different"?** In the sense that matters for transfer:
   the best layer comes before the last feature layer (``pre_logits``, or
   whichever output is deepest, the ImageNet ``logits`` aside) *and* the last
   layer is worse than the best by more than noise (more than the best row's
   fold sd for probes; more than ``LOGME_MARGIN`` nats per image for LogME).
3. **Will fine-tuning pay?** ``unlikely`` below ``FEW_PER_CLASS`` images per
   class (a fine-tuned network would mostly fit noise). Otherwise fine-tuning
   is indicated when the best layer is at least ``FAR`` outputs below the last
   (the top of the network is not reusable as it is), or when a probe leaves a
   large share of the way from chance to a perfect score unexplained
   (``(1 - best) / (1 - chance) >= HEADROOM``): ``likely`` from
   ``ENOUGH_PER_CLASS`` images per class, ``possible`` between the two sizes.
   With neither sign it is ``unlikely`` to add much.
4. **Where the data depart from ImageNet** (when BatchNorm statistics were
   stored): the layers where the distance is smallest and largest, and whether
   its peak lies before the best layer (differences in low-level appearance
   that deeper layers absorb) or at or after it (the top sees the data least
   like ImageNet: in agreement with rule 2 when the data set is "different",
   harmless for the task when it is not).
5. **Do LogME and the probes agree?** Their best layers and the Spearman
   correlation of the two curves over the layers both have.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SimilarityError

FEW_PER_CLASS = 50
ENOUGH_PER_CLASS = 500
FAR = 2  # outputs between the best layer and the last that make the top "far"
HEADROOM = 0.2  # share of the way from chance to perfect a probe leaves unexplained
LOGME_MARGIN = 0.01  # nats per image by which LogME's best must beat the last layer
LOGITS = "logits"
CHANCE = {"roc_auc": lambda k: 0.5, "balanced_accuracy": lambda k: 1.0 / k}


@dataclass(frozen=True)
class Curve:
    """One measure along the layers, in depth order; ``spread`` is a noise scale per layer (or None)."""

    measure: str
    outputs: tuple[str, ...]
    values: tuple[float | None, ...]
    spread: tuple[float | None, ...] | None = None
    source: str = ""  # e.g. the probe's name

    def __post_init__(self):
        if len(self.outputs) != len(self.values) or (self.spread is not None and len(self.spread) != len(self.values)):
            raise SimilarityError(f"curve {self.measure!r}: {len(self.outputs)} outputs but {len(self.values)} values"
                                  + ("" if self.spread is None else f" and {len(self.spread)} spreads"))

    def known(self) -> list[int]:
        return [i for i, v in enumerate(self.values) if _finite(v)]

    def best(self) -> int:
        """Index of the highest value (ties: the shallower layer)."""
        known = self.known()
        if not known:
            raise SimilarityError(f"curve {self.measure!r} has no finite value; nothing to advise on")
        return max(known, key=lambda i: (self.values[i], -i))


@dataclass(frozen=True)
class Finding:
    """One sentence of advice and the numbers behind it."""

    topic: str  # layer, different, fine_tune, imagenet, agreement, data
    text: str
    numbers: dict


@dataclass
class Advice:
    layer: str
    layer_by: str  # "probe <name>, <metric>" or "LogME"
    different: bool
    fine_tune: str  # likely, possible, unlikely
    findings: list[Finding] = field(default_factory=list)
    rules: dict = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join(f.text for f in self.findings)

    def as_dict(self) -> dict:
        return {"layer": self.layer, "layer_by": self.layer_by, "different": self.different,
                "fine_tune": self.fine_tune, "findings": [asdict(f) for f in self.findings], "rules": self.rules}


def probe_curve(results, metric: str | None = None) -> Curve:
    """The curve of the best probe in a results file (``ProbeResults``-like: ``.rows``).

    The best probe is the one with the highest fold mean of ``metric`` on any
    feature layer (the ImageNet ``logits`` aside); ties go to the probe listed first.
    """
    rows = [r for r in results.rows if not r["output"].startswith(f"{LOGITS}/")]
    if metric is None:
        metric = "roc_auc" if any("roc_auc" in r["metrics"] for r in rows) else "balanced_accuracy"
    if metric not in CHANCE:
        raise SimilarityError(f"advice reads the probe metric roc_auc or balanced_accuracy, not {metric!r}")
    scored = [r for r in rows if _finite(r["metrics"].get(metric, {}).get("mean"))]
    if not scored:
        raise SimilarityError(f"the probe results hold no finite {metric} on any feature layer")
    probe = max(scored, key=lambda r: r["metrics"][metric]["mean"])["probe"]
    mine = [r for r in rows if r["probe"] == probe]
    return Curve(metric, tuple(r["output"] for r in mine), tuple(r["metrics"][metric].get("mean") for r in mine),
                 tuple(r["metrics"][metric].get("sd") for r in mine), source=probe)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def advise(n_images: int, n_classes: int, distance: Curve | None, transfer: Curve,
           probes: Curve | None = None) -> Advice:
    """Advice from the data's size, the distance to ImageNet per layer, LogME per layer and the probes."""
    if n_images < 1 or n_classes < 2:
        raise SimilarityError(f"advice needs labelled images of at least 2 classes; got {n_images} image(s) in "
                              f"{n_classes} class(es)")
    per_class = n_images / n_classes
    quality = probes if probes is not None else transfer
    findings = [_data_finding(n_images, n_classes, per_class)]
    layer, tied = _choose(quality)
    findings.append(_layer_finding(quality, layer, tied))
    different, steps, gap = _different(quality, layer)
    findings.append(_different_finding(quality, layer, different, steps, gap))
    level, finding = _fine_tune(quality, layer, steps, per_class, n_classes)
    findings.append(finding)
    if distance is not None and distance.known():
        findings.append(_imagenet_finding(distance, quality.outputs[layer], different))
    if probes is not None:
        findings.append(_agreement_finding(transfer, probes))
    by = f"probe {quality.source}, {quality.measure}" if probes is not None else "LogME"
    rules = {"few_per_class": FEW_PER_CLASS, "enough_per_class": ENOUGH_PER_CLASS, "far": FAR, "headroom": HEADROOM,
             "logme_margin": LOGME_MARGIN}
    return Advice(quality.outputs[layer], by, different, level, findings, rules)


def _label(curve: Curve) -> str:
    return {"roc_auc": "ROC AUC", "balanced_accuracy": "balanced accuracy", "logme": "LogME"}.get(curve.measure,
                                                                                                 curve.measure)


def _noise(curve: Curve, i: int) -> float:
    if curve.spread is None:
        return LOGME_MARGIN
    sd = curve.spread[i]
    return float(sd) if sd is not None and math.isfinite(sd) else 0.0


def _noise_words(curve: Curve, i: int) -> str:
    if curve.spread is None:
        return f"the margin of {LOGME_MARGIN} nats per image"
    return f"the noise, one fold sd ({_noise(curve, i):.3f})"


def _choose(curve: Curve) -> tuple[int, list[int]]:
    best = curve.best()
    floor = curve.values[best] - _noise(curve, best)
    return best, [i for i in curve.known() if i != best and curve.values[i] >= floor]


def _data_finding(n_images: int, n_classes: int, per_class: float) -> Finding:
    size = "few" if per_class < FEW_PER_CLASS else ("many" if per_class >= ENOUGH_PER_CLASS else "a moderate number of")
    return Finding("data", f"{n_images} images in {n_classes} classes, about {per_class:.0f} per class: {size} "
                           "images for training a network.",
                   {"n_images": n_images, "n_classes": n_classes, "per_class": per_class})


def _layer_finding(curve: Curve, best: int, tied: list[int]) -> Finding:
    name, value = curve.outputs[best], curve.values[best]
    how = f"the {curve.source} probe's" if curve.source else "the"
    text = (f"Use {name}: it has {how} highest {_label(curve)}, {value:.3f}"
            + (f" ± {_noise(curve, best):.3f} (fold sd)" if curve.spread is not None else "") + ".")
    if tied:
        others = ", ".join(f"{curve.outputs[i]} ({curve.values[i]:.3f})" for i in tied)
        text += f" Within {_noise_words(curve, best)} of it: {others}."
    return Finding("layer", text, {"layer": name, "measure": curve.measure, "value": value,
                                   "noise": _noise(curve, best), "ties": [curve.outputs[i] for i in tied]})


def _different(curve: Curve, best: int) -> tuple[bool, int, float]:
    last = curve.known()[-1]
    gap = float(curve.values[best] - curve.values[last])
    return best < last and gap > _noise(curve, best), last - best, gap


def _different_finding(curve: Curve, best: int, different: bool, steps: int, gap: float) -> Finding:
    last = curve.known()[-1]
    numbers = {"best": curve.outputs[best], "last": curve.outputs[last], "layers_below_last": steps,
               "best_value": curve.values[best], "last_value": curve.values[last], "gap": gap,
               "noise": _noise(curve, best)}
    if different:
        text = (f"The best layer is {steps} output(s) below the last, {curve.outputs[last]}, which scores {gap:.3f} "
                f"lower ({curve.values[last]:.3f}), more than {_noise_words(curve, best)}: the top of the "
                "network is tuned to ImageNet in a way that does not help here, so for this task the data set is "
                "'different' from ImageNet.")
    elif best == last:
        text = (f"The last layer, {curve.outputs[last]}, is the best: for this task the data set is 'similar' to "
                "ImageNet in the sense that matters; its CNN codes are the features to use.")
    else:
        text = (f"The last layer, {curve.outputs[last]}, scores {curve.values[last]:.3f}, only {gap:.3f} below the "
                f"best, within {_noise_words(curve, best)}: for this task the data set counts as 'similar' "
                "to ImageNet; the CNN codes work about as well.")
    return Finding("different", text, numbers)


def _fine_tune(curve: Curve, best: int, steps: int, per_class: float, n_classes: int) -> tuple[str, Finding]:
    headroom = None
    if curve.measure in CHANCE:
        chance = CHANCE[curve.measure](n_classes)
        headroom = (1.0 - curve.values[best]) / (1.0 - chance)
    far, open_ = steps >= FAR, headroom is not None and headroom >= HEADROOM
    numbers = {"per_class": per_class, "layers_below_last": steps, "headroom": headroom}
    reasons = ([f"the best layer is {steps} outputs below the top"] if far else []) + (
        [f"the best probe leaves {headroom:.0%} of the way from chance to perfect"] if open_ else [])
    if per_class < FEW_PER_CLASS:
        level = "unlikely"
        text = (f"Fine-tuning is unlikely to pay: with about {per_class:.0f} images per class (fewer than "
                f"{FEW_PER_CLASS}) a fine-tuned network would mostly fit noise; keep a linear probe on "
                f"{curve.outputs[best]}.")
    elif reasons:
        level = "likely" if per_class >= ENOUGH_PER_CLASS else "possible"
        how = ("is likely to pay" if level == "likely" else
               f"may pay, if you fine-tune only from {curve.outputs[best]} up, with augmentation and early stopping")
        text = f"Fine-tuning {how}: {' and '.join(reasons)}, with about {per_class:.0f} images per class."
    else:
        level = "unlikely"
        spare = "" if headroom is None else f", leaving only {headroom:.0%} of the way to perfect"
        text = (f"Fine-tuning is unlikely to add much: the best layer is at or near the top{spare}; a linear probe "
                f"on {curve.outputs[best]} is the economical choice.")
    return level, Finding("fine_tune", text, numbers)


def _imagenet_finding(distance: Curve, best_output: str, different: bool) -> Finding:
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
    elif peak and different:
        text += (" The distance peaks at or after the best layer, where the scores fall: the top layers see these "
                 "images least like ImageNet, which agrees with choosing an earlier layer.")
    elif peak:
        text += (" The distance peaks at or after the best layer, yet the last layer scores about as well: this "
                 "departure from ImageNet does not hurt the task.")
    return Finding("imagenet", text, numbers)


def _agreement_finding(transfer: Curve, probes: Curve) -> Finding:
    from scipy.stats import spearmanr

    common = [o for o in probes.outputs if o in transfer.outputs]
    pairs = [(transfer.values[transfer.outputs.index(o)], probes.values[probes.outputs.index(o)]) for o in common]
    pairs = [(a, b) for a, b in pairs if _finite(a) and _finite(b)]
    varied = len(pairs) >= 3 and all(len(set(side)) > 1 for side in zip(*pairs))
    rho = float(spearmanr(*zip(*pairs)).statistic) if varied else None  # undefined for a constant curve
    best_t, best_p = transfer.outputs[transfer.best()], probes.outputs[probes.best()]
    agree = "agree" if best_t == best_p else "disagree"
    text = (f"LogME and the {probes.source} probe {agree} on the best layer ({best_t} vs {best_p})"
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


def check_results_match(results, manifest: dict, cache_name: str) -> None:
    """Refuse probe results made from other images or another model than the cache's."""
    made = results.cache
    pairs = [("model", made["model"]["name"], manifest["model"]["name"]),
             ("weights sha256", made["model"]["weights"].get("sha256", "")[:12],
              manifest["model"]["weights"].get("sha256", "")[:12]),
             ("input fingerprint", (made.get("input") or {}).get("fingerprint", "")[:12],
              manifest["input"].get("fingerprint", "")[:12])]
    differ = [f"{what} {a} vs {b}" for what, a, b in pairs if a != b]
    if differ:
        raise SimilarityError(f"the probe results were made from another cache than {cache_name} "
                              f"({'; '.join(differ)}); run `layerprobe probe` on this cache")


def advise_cache(cache_path: str | Path, results_path: str | Path | None = None, metric: str | None = None) -> Advice:
    """Advice for a cache: LogME per layer, the distance to ImageNet where BatchNorm statistics were
    stored, and the probe curve of ``results_path`` if given."""
    from ..cache import open_cache
    from .tables import IMAGENET, similarity_table

    with open_cache(cache_path) as cache:
        manifest, has_bn = cache.manifest, bool(cache.bn_stats())
    results = None
    if results_path is not None:
        from ..probes import load_results

        results = load_results(results_path)
        check_results_match(results, manifest, Path(cache_path).name)
    table = similarity_table(cache_path, IMAGENET if has_bn else None)
    distance, transfer = curves_from_table(table)
    probes = probe_curve(results, metric) if results is not None else None
    advice = advise(table.n_labelled, table.n_classes, distance, transfer, probes)
    if not has_bn:
        advice.findings.append(Finding("imagenet", "No distance to ImageNet: the cache holds no BatchNorm statistics "
                                                   "(extract with --bn-stats to add it).", {}))
    return advice
