"""Temperature scaling and the ensemble choices made on validation data."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import (
    accuracy_lower_bound,
    choose_abstain_threshold,
    choose_cascade,
    choose_members,
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
    choice = choose_abstain_threshold({"m": probabilities}, labels, target_accuracy=0.95)
    assert 0.45 < choice.threshold <= 0.9
    assert choice.accuracy == 1.0
    assert choice.coverage == pytest.approx(confident.mean())
    assert choice.reached
    # 804 right of 804: the 95 % one-sided lower bound is 0.05 ** (1 / 804).
    assert choice.accuracy_lower_bound == pytest.approx(0.05 ** (1 / round(choice.coverage * 1000)))


def test_the_threshold_asks_the_bound_of_the_kept_accuracy_not_the_point_estimate() -> None:
    # 100 cases; the 40 most confident are right but one; the 60 others are a coin toss.
    labels = np.zeros(100, dtype=int)
    top = np.linspace(0.99, 0.5, 100)
    probabilities = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)
    wrong = np.r_[[20], np.arange(40, 100, 2)]
    probabilities[wrong] = probabilities[wrong][:, [1, 0, 2]]  # the top class becomes pneumonia
    point = choose_abstain_threshold({"m": probabilities}, labels, target_accuracy=0.95, confidence=None)
    bounded = choose_abstain_threshold({"m": probabilities}, labels, target_accuracy=0.95)
    # The point estimate keeps the most cases whose accuracy is still >= 0.95: the 42 most
    # confident, 40 right (0.952); one more adds a wrong one (40 / 43 = 0.930).
    assert (round(point.coverage * 100), point.accuracy) == (42, pytest.approx(40 / 42))
    assert point.accuracy_lower_bound is None
    # 39 of 40 right has a 95 % lower bound of 0.887 (p ** 40 + 40 p ** 39 (1 - p) = 0.05); all
    # 20 right above the one wrong case, 0.05 ** (1 / 20) = 0.861; it takes 59 right in a row to
    # reach 0.95.
    assert not bounded.reached
    assert bounded.coverage == pytest.approx(0.01)
    assert accuracy_lower_bound(39, 40, 0.95) == pytest.approx(0.8868, abs=1e-4)
    assert accuracy_lower_bound(20, 20, 0.95) == pytest.approx(0.05 ** (1 / 20))
    assert accuracy_lower_bound(0, 10, 0.95) == 0.0


def test_abstention_is_capped_when_the_target_is_out_of_reach() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 400)
    probabilities = rng.dirichlet([1, 1, 1], 400)  # chance-level
    choice = choose_abstain_threshold({"m": probabilities}, labels, target_accuracy=0.99, max_abstain=0.25)
    assert choice.coverage == pytest.approx(0.75, abs=0.01)
    assert not choice.reached


def test_disagreeing_models_are_not_counted_as_answered() -> None:
    labels = np.zeros(4, dtype=int)
    # Both models right and agreeing on the first two; on the last two they disagree, and the mean is wrong.
    first = np.asarray([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.85, 0.05], [0.1, 0.85, 0.05]])
    second = np.asarray([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    choice = choose_abstain_threshold(
        {"a": first, "b": second}, labels, target_accuracy=0.95, confidence=None
    )
    assert (choice.threshold, choice.coverage, choice.accuracy) == (0.0, 0.5, 1.0)
    choice = choose_abstain_threshold(
        {"a": first, "b": second}, labels, target_accuracy=0.95, confidence=None, count_disagreement=False
    )
    assert choice.threshold == pytest.approx(0.8)
    assert (choice.coverage, choice.accuracy) == (0.5, 1.0)


def _noisy_copy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Probabilities whose argmax is right on about `accuracy` of the cases."""
    rng = np.random.default_rng(seed)
    guesses = np.where(rng.random(len(labels)) < accuracy, labels, rng.integers(0, 3, len(labels)))
    probabilities = rng.dirichlet([1, 1, 1], len(labels)) * 0.4
    probabilities[np.arange(len(labels)), guesses] += 0.6
    return probabilities


def test_a_passenger_that_drags_the_mean_down_is_left_out() -> None:
    labels = np.random.default_rng(4).integers(0, 3, 600)
    per_model = {
        "good": _noisy_copy(labels, 0.85, 1),
        "passenger": np.random.default_rng(9).dirichlet([0.1, 0.1, 0.1], 600),  # confident and random
        "also_good": _noisy_copy(labels, 0.85, 2),
    }
    choice = choose_members(per_model, labels)
    assert choice.weights is not None
    assert choice.weights["passenger"] == 0.0
    assert sum(choice.weights.values()) == pytest.approx(1.0)
    assert choice.best_f1 > choice.all_f1
    assert choice.win_rate >= 0.95
    assert choice.all_f1 == pytest.approx(weighted_mean_f1(per_model, labels, None))


def test_a_gain_within_the_noise_keeps_every_model() -> None:
    labels = np.random.default_rng(5).integers(0, 3, 300)
    per_model = {name: _noisy_copy(labels, 0.75, seed) for seed, name in enumerate(("a", "b", "c"))}
    choice = choose_members(per_model, labels)
    assert choice.weights is None  # a subset may score a little higher, but not with confidence
    assert choice.win_rate < 0.95
    assert sum(choice.best.values()) == pytest.approx(1.0)


def test_equal_models_keep_every_model() -> None:
    labels = np.random.default_rng(6).integers(0, 3, 200)
    same = _noisy_copy(labels, 0.7, 3)
    choice = choose_members({"a": same, "b": same}, labels)
    assert choice.weights is None
    assert choice.best == {"a": 0.5, "b": 0.5}  # every subset scores alike: the tie goes to all
