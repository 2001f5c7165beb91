"""Temperature scaling and the ensemble choices made on validation data."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import (
    choose_abstain_threshold,
    choose_cascade,
    choose_weights,
    fit_temperature,
    weighted_mean_f1,
)
from xray.contract.ensembles import calibrated_softmax


def sampled(logits: np.ndarray, temperature: float, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits / T): data for which T is the true temperature."""
    rng = np.random.default_rng(seed)
    probabilities = calibrated_softmax(logits, temperature)
    return np.asarray([rng.choice(3, p=p) for p in probabilities])


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_true_temperature(true_temperature: float) -> None:
    logits = np.random.default_rng(1).normal(0, 3, (6000, 3))
    labels = sampled(logits, true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.08)


def test_cascade_puts_the_more_reliable_model_first() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 400)
    good = np.full((400, 3), 0.02)
    good[np.arange(400), labels] = 0.96
    noisy = rng.dirichlet([1, 1, 1], 400)
    order, tau, score = choose_cascade({"noisy": noisy, "good": good, "other": noisy[::-1]}, labels)
    assert order[0] == "good"
    assert score == pytest.approx(1.0)
    assert tau >= 0.8


def test_abstain_threshold_reaches_the_target_accuracy_on_kept_cases() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 1000)
    confident = rng.random(1000) < 0.8
    probabilities = np.full((1000, 3), 0.3)
    # Confident cases are right (0.9 on the true class); the others are wrong and unsure (0.45).
    probabilities[confident] = 0.05
    probabilities[confident, labels[confident]] = 0.9
    wrong = (labels[~confident] + 1) % 3
    probabilities[~confident] = 0.275
    probabilities[np.flatnonzero(~confident), wrong] = 0.45
    threshold, coverage, accuracy = choose_abstain_threshold(
        {"m": probabilities}, labels, target_accuracy=0.95
    )
    assert 0.45 < threshold <= 0.9
    assert accuracy == 1.0
    assert coverage == pytest.approx(confident.mean())


def test_abstention_is_capped_when_the_target_is_out_of_reach() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 400)
    probabilities = rng.dirichlet([1, 1, 1], 400)  # chance-level
    _, coverage, _ = choose_abstain_threshold(
        {"m": probabilities}, labels, target_accuracy=0.99, max_abstain=0.25
    )
    assert coverage == pytest.approx(0.75, abs=0.01)


def test_disagreeing_models_are_not_counted_as_answered() -> None:
    labels = np.zeros(4, dtype=int)
    # Both models right and agreeing on the first two; on the last two they disagree, and the mean is wrong.
    first = np.asarray([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.85, 0.05], [0.1, 0.85, 0.05]])
    second = np.asarray([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    threshold, coverage, accuracy = choose_abstain_threshold(
        {"a": first, "b": second}, labels, target_accuracy=0.95
    )
    assert (threshold, coverage, accuracy) == (0.0, 0.5, 1.0)
    threshold, coverage, accuracy = choose_abstain_threshold(
        {"a": first, "b": second}, labels, target_accuracy=0.95, count_disagreement=False
    )
    assert threshold == pytest.approx(0.8)
    assert (coverage, accuracy) == (0.5, 1.0)


def test_weights_leave_out_a_model_that_only_adds_noise() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 600)
    good = rng.dirichlet([1, 1, 1], 600) * 0.5
    good[np.arange(600), labels] += 0.5
    passenger = rng.dirichlet([0.2, 0.2, 0.2], 600)  # confident and random
    per_model = {"good": good, "passenger": passenger, "also_good": good[:, [0, 1, 2]] * 0.9 + 0.1 / 3}
    weights, score = choose_weights(per_model, labels)
    assert weights["passenger"] == 0.0
    assert sum(weights.values()) == pytest.approx(1.0)
    assert score == pytest.approx(1.0)
    assert weighted_mean_f1(per_model, labels, None) < 0.95  # the unweighted mean pays for the passenger


def test_equal_models_keep_equal_weights() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 200)
    same = rng.dirichlet([1, 1, 1], 200)
    weights, score = choose_weights({"a": same, "b": same}, labels)
    assert weights == {"a": 0.5, "b": 0.5}  # every split scores alike: the tie goes to the even one
    assert score == pytest.approx(weighted_mean_f1({"a": same}, labels, None))
