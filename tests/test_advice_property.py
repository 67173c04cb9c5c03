"""Property test: many synthetic probe tables fed to the advice; no advice contradicts itself and every
number in a sentence is one of the numbers recorded with it."""

import re

import numpy as np
import pytest

from pipeline.probes.compare import compare_rows
from pipeline.similarity import Curve, advise
from tests.advice_tables import KINDS, OUTPUTS, synthetic_table

NUMBER = re.compile(r"-?\d+(?:\.\d+)?%?")
OPENING = {"similar": "Similar to ImageNet", "different": "Different from ImageNet",
           "uncertain": "Uncertain whether"}
FINE_TUNE = {"likely": "Fine-tuning is likely", "unlikely": "Fine-tuning is unlikely",
             "uncertain": "Fine-tuning: uncertain"}


def _values(numbers) -> list[float]:
    if isinstance(numbers, dict):
        return [v for x in numbers.values() for v in _values(x)]
    if isinstance(numbers, (list, tuple)):
        return [v for x in numbers for v in _values(x)]
    if isinstance(numbers, (int, float)) and not isinstance(numbers, bool):
        return [float(numbers)]
    return []


def _shown(token: str, value: float) -> bool:
    if token.endswith("%"):
        token, value = token[:-1], value * 100
    digits = len(token.split(".")[1]) if "." in token else 0
    return f"{value:.{digits}f}" in (token, token.replace("-", "")) or f"{value:.{digits}f}" == f"-{token}"


def check_numbers(finding, names) -> None:
    text = finding.text
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, "")
    values = _values(finding.numbers)
    for token in NUMBER.findall(text):
        assert any(_shown(token, v) for v in values), (token, finding.topic, finding.text, finding.numbers)


def check_consistent(advice, main, other) -> None:
    assert advice.similarity in OPENING and advice.fine_tune in FINE_TUNE
    found = {f.topic: f for f in advice.findings}
    assert advice.layer in advice.tied or not main.signal
    if main.verdict == "similar" or not main.signal:
        assert advice.layer == OUTPUTS[-1]  # shown as good as the best, or a default: the simplest choice
    else:
        assert advice.layer == main.best
        if OUTPUTS[-1] in advice.tied and main.best != OUTPUTS[-1]:  # the simpler alternative, with its cost
            assert f"The last output, {OUTPUTS[-1]}" in found["layer"].text
    if "metrics" in found:
        assert advice.similarity == "uncertain" and other is not None and other.verdict != main.verdict
    else:
        assert found["similarity"].text.startswith(OPENING[advice.similarity])
        assert other is None or other.verdict == main.verdict
    assert found["fine_tune"].text.startswith(FINE_TUNE[advice.fine_tune])
    if advice.similarity == "different":
        assert advice.layer != OUTPUTS[-1] and main.p_last_worse > 0.975 and main.last_behind_best.low > 0
    if advice.fine_tune == "likely":
        assert advice.similarity == "different" and not advice.saturated
    if advice.saturated:
        assert advice.fine_tune == "unlikely" and "saturated" in found and "saturated" in found["fine_tune"].text
    if advice.similarity == "similar":
        assert main.signal and main.beats_last_by_at_most <= main.margin
    if not main.signal:
        assert advice.similarity == "uncertain" and advice.fine_tune != "likely"
    text = advice.text()
    assert ("'different'" in text) == ("metrics" in found and "different" in (main.verdict, other.verdict))


@pytest.mark.parametrize("kind", KINDS)
def test_advice_never_contradicts_itself_and_shows_only_its_numbers(kind):
    logme = Curve("logme", OUTPUTS, (0.1, 0.3, 0.5, 0.4, 0.2))
    distance = Curve("w2", OUTPUTS, (0.9, 0.4, 0.3, 0.2, 0.6))
    for seed in range(25):
        rows = synthetic_table(kind, seed, n_estimates=(5, 10, 25)[seed % 3])
        for metric, second in (("roc_auc", "balanced_accuracy"), ("balanced_accuracy", "roc_auc")):
            main = compare_rows(rows, metric, 0.25, 2)
            other = compare_rows(rows, second, 0.25, 2, main.probe)
            n_images = (40, 400, 4000)[seed % 3]
            advice = advise(n_images, 2, distance, logme, main, other)
            check_consistent(advice, main, other)
            for finding in advice.findings:
                check_numbers(finding, OUTPUTS + ("w2",))


def test_logme_alone_never_claims_a_verdict():
    rng = np.random.default_rng(0)
    for _ in range(100):
        values = tuple(rng.normal(0, 0.05, 5))
        advice = advise(int(rng.integers(20, 5000)), 2, None, Curve("logme", OUTPUTS, values))
        found = {f.topic: f for f in advice.findings}
        assert advice.similarity == "uncertain" and advice.fine_tune in ("unlikely", "uncertain")
        assert advice.layer in advice.tied and (OUTPUTS[-1] not in advice.tied or advice.layer == OUTPUTS[-1])
        assert found["similarity"].text.startswith("Uncertain whether")
        for finding in advice.findings:
            check_numbers(finding, OUTPUTS)


def test_disagreeing_metrics_are_named():
    seen = 0
    for seed in range(25):
        rows = synthetic_table("disagree", seed)
        main = compare_rows(rows, "roc_auc", 0.25, 2)
        other = compare_rows(rows, "balanced_accuracy", 0.25, 2, main.probe)
        if main.verdict == other.verdict:
            continue
        seen += 1
        advice = advise(400, 2, None, Curve("logme", OUTPUTS, (0.1,) * 5), main, other)
        found = {f.topic: f for f in advice.findings}
        assert advice.similarity == "uncertain" and found["metrics"].text.startswith("The metrics disagree: by ROC AUC")
        # asking with the other metric gives the same headline: the verdict never flips silently
        flipped = advise(400, 2, None, Curve("logme", OUTPUTS, (0.1,) * 5), other, main)
        assert flipped.similarity == "uncertain" and "metrics" in {f.topic for f in flipped.findings}
    assert seen >= 5
