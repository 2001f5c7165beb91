"""Choices made on validation data: temperatures, ensemble weights, the cascade's order and tau, abstention.

Nothing here looks at the test split.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from sklearn.metrics import f1_score

from xray.contract.ensembles import (
    calibrated_softmax,
    classic,
    confidence_cascade,
    mean_probabilities,
    members,
)

_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of softmax(logits / T)."""
    probabilities = calibrated_softmax(logits, temperature)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 80) -> float:
    """The temperature minimising validation NLL (Guo et al. 2017), by golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the search finds the optimum.
    """
    low, high = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa = negative_log_likelihood(logits, labels, math.exp(a))
    fb = negative_log_likelihood(logits, labels, math.exp(b))
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return float(math.exp((low + high) / 2))


def _mean_labels(per_model: Mapping[str, np.ndarray], weights: Mapping[str, float] | None) -> np.ndarray:
    return np.asarray(mean_probabilities(per_model, weights).argmax(axis=-1))


def weighted_mean_f1(
    per_model: Mapping[str, np.ndarray], labels: np.ndarray, weights: Mapping[str, float] | None
) -> float:
    """Validation macro-F1 of the classic mean with `weights` (None: unweighted)."""
    return float(f1_score(labels, _mean_labels(per_model, weights), average="macro"))


def _macro_f1_rows(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 of each row of (resamples, n) label arrays, over the classes present in each row."""
    scores = []
    for truth, guess in zip(labels, predicted, strict=True):
        true_positive = np.bincount(truth[truth == guess], minlength=classes)
        support = np.bincount(truth, minlength=classes)
        predicted_count = np.bincount(guess, minlength=classes)
        present = (support + predicted_count) > 0
        f1 = 2 * true_positive[present] / (support[present] + predicted_count[present])
        scores.append(f1.mean())
    return np.asarray(scores)


#: Paired bootstrap resamples of the validation split, and the share of them a subset of the
#: models must win against all of them to be served instead.
MEMBER_RESAMPLES = 1000
MEMBER_CONFIDENCE = 0.95


@dataclass(frozen=True)
class MemberChoice:
    """Which models the classic mean should use, and the evidence.

    Attributes:
        weights: Equal weights over the chosen models and 0 for the others, or None: all of them.
        best: The subset with the best validation macro-F1 (model name → weight).
        best_f1: Its validation macro-F1.
        all_f1: The validation macro-F1 of the mean of all models.
        win_rate: Share of paired bootstrap resamples of the validation split in which `best`
            beats the mean of all models.
    """

    weights: dict[str, float] | None
    best: dict[str, float]
    best_f1: float
    all_f1: float
    win_rate: float


def choose_members(
    per_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    resamples: int = MEMBER_RESAMPLES,
    confidence: float = MEMBER_CONFIDENCE,
    seed: int = 0,
) -> MemberChoice:
    """Leave models out of the mean only when validation shows, with confidence, that it helps.

    Every non-empty subset of the models is scored (their unweighted mean); the best one is kept
    only if it beats the mean of all models in at least `confidence` of `resamples` paired
    bootstrap resamples of the validation images. Finer weights are not searched: on a few hundred
    images they fit the noise of the validation split (a grid of tenths chose weights here that
    were 1.6 points better on validation and 1.1 points worse on test).
    """
    names = list(per_model)
    subsets = [
        {name: (1.0 if name in chosen else 0.0) for name in names}
        for size in range(1, len(names) + 1)
        for chosen in itertools.combinations(names, size)
    ]
    scores = [weighted_mean_f1(per_model, labels, weights) for weights in subsets]
    # Ties go to the larger subset, then to the one listed first.
    index = max(range(len(subsets)), key=lambda i: (scores[i], sum(subsets[i].values()), -i))
    best, best_f1 = subsets[index], scores[index]
    all_f1 = weighted_mean_f1(per_model, labels, None)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), (resamples, len(labels)))
    classes = next(iter(per_model.values())).shape[1]
    best_scores = _macro_f1_rows(labels[draws], _mean_labels(per_model, best)[draws], classes)
    all_scores = _macro_f1_rows(labels[draws], _mean_labels(per_model, None)[draws], classes)
    win_rate = float(np.mean(best_scores > all_scores))
    total = sum(best.values())
    normalised = {name: weight / total for name, weight in best.items()}
    keep = win_rate >= confidence and any(weight == 0 for weight in best.values())
    return MemberChoice(normalised if keep else None, normalised, best_f1, all_f1, win_rate)


def _cascade_labels(
    per_model: Mapping[str, np.ndarray],
    order: Sequence[str],
    tau: float,
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    count = len(next(iter(per_model.values())))
    return np.asarray(
        [
            confidence_cascade(
                {name: probs[i] for name, probs in per_model.items()},
                order=order,
                tau=tau,
                abstain_below=0.0,
                weights=weights,
            ).label_index
            for i in range(count)
        ]
    )


def choose_cascade(
    per_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    taus: Sequence[float] = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99),
    length: int = 2,
    weights: Mapping[str, float] | None = None,
) -> tuple[list[str], float, float]:
    """The cascade order (`length` models) and tau with the best validation macro-F1.

    The fallback is the classic mean with `weights`. Ties go to the higher tau (a stricter
    cascade) and then to the order listed first.

    Returns:
        (order, tau, validation macro-F1).
    """
    names = list(per_model)
    best: tuple[float, float, list[str]] | None = None
    for order in itertools.permutations(names, min(length, len(names))):
        for tau in taus:
            score = float(f1_score(labels, _cascade_labels(per_model, order, tau, weights), average="macro"))
            key = (round(score, 12), tau)
            if best is None or key > (round(best[0], 12), best[1]):
                best = (score, tau, list(order))
    assert best is not None
    return best[2], best[1], best[0]


@dataclass(frozen=True)
class AbstainChoice:
    """The abstention threshold chosen on validation, and what it keeps there."""

    threshold: float
    #: Share of the validation cases answered (not flagged uncertain).
    coverage: float
    #: Accuracy on those cases.
    accuracy: float
    #: One-sided Clopper-Pearson lower bound of that accuracy at the chosen confidence (None: not asked).
    accuracy_lower_bound: float | None
    #: Whether the goal was met (else the threshold abstaining on at most `max_abstain` was used).
    reached: bool


def accuracy_lower_bound(correct: int, count: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion: `correct` of `count` (0 for none).

    The exact binomial bound: with probability at least `confidence`, the true accuracy is not
    below it.
    """
    if correct <= 0 or count <= 0:
        return 0.0
    return float(beta.ppf(1 - confidence, correct, count - correct + 1))


def choose_abstain_threshold(
    per_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    target_accuracy: float = 0.95,
    confidence: float | None = 0.95,
    max_abstain: float = 1.0,
    count_disagreement: bool = True,
    weights: Mapping[str, float] | None = None,
) -> AbstainChoice:
    """The lowest `abstain_below` at which the answered cases reach `target_accuracy` on validation.

    An answer is kept when the classic ensemble's confidence (with `weights`) is at least the
    threshold and (with `count_disagreement`, as the service does) its members' top labels agree.
    With `confidence`, the goal is met when the one-sided Clopper-Pearson lower bound of the kept
    cases' accuracy reaches `target_accuracy`, not the validation accuracy itself: a threshold
    that only just reaches the target on validation misses it on new images about half the time
    (the bound is per threshold, not corrected for the thresholds scanned). With `confidence`
    None, the validation accuracy itself must reach it.
    If the goal cannot be met while abstaining on at most `max_abstain` of the cases, the
    threshold that abstains on as close to that share as possible is used.

    Returns:
        The threshold, with the share of the validation cases it answers, their accuracy, its
        bound and whether the goal was reached.
    """
    count = len(labels)
    decisions = [
        classic({name: probs[i] for name, probs in per_model.items()}, abstain_below=0.0, weights=weights)
        for i in range(count)
    ]
    confidences = np.asarray([d.confidence for d in decisions])
    correct = np.asarray([d.label_index for d in decisions]) == labels
    tops = np.stack([np.asarray(per_model[name]).argmax(axis=1) for name in members(per_model, weights)])
    agree = np.all(tops == tops[0], axis=0) if count_disagreement else np.ones(count, dtype=bool)
    # Candidate thresholds: 0 and every distinct confidence; a threshold keeps the cases at or above it.
    candidates = np.concatenate([[0.0], np.unique(confidences)])
    choice: AbstainChoice | None = None
    for threshold in candidates:
        kept = (confidences >= threshold) & agree
        coverage = float(kept.mean())
        if choice is not None and coverage < 1 - max_abstain - 1e-12:
            break  # threshold 0 (abstaining only where the models disagree) is always a candidate
        right, answered = int(correct[kept].sum()), int(kept.sum())
        accuracy = right / answered if answered else 1.0
        bound = None if confidence is None else accuracy_lower_bound(right, answered, confidence)
        reached = (accuracy if bound is None else bound) >= target_accuracy
        choice = AbstainChoice(float(threshold), coverage, accuracy, bound, reached)
        if reached:
            break
    assert choice is not None  # threshold 0 is always scored
    return choice
