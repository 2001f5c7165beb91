"""Choices made on validation data: temperatures, ensemble weights, the cascade's order and tau, abstention.

Nothing here looks at the test split.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import f1_score

from xray.contract.ensembles import calibrated_softmax, classic, confidence_cascade, members

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


def _simplex(count: int, steps: int) -> list[tuple[int, ...]]:
    """Every way of giving `steps` equal shares to `count` models."""
    if count == 1:
        return [(steps,)]
    return [(first, *rest) for first in range(steps + 1) for rest in _simplex(count - 1, steps - first)]


def weighted_mean_f1(
    per_model: Mapping[str, np.ndarray], labels: np.ndarray, weights: Mapping[str, float] | None
) -> float:
    """Validation macro-F1 of the classic mean with `weights` (None: unweighted)."""
    names = members(per_model, weights)
    factors = np.asarray([1.0 if weights is None else weights[name] for name in names])
    mean = np.tensordot(factors / factors.sum(), np.stack([per_model[name] for name in names]), axes=1)
    return float(f1_score(labels, mean.argmax(axis=1), average="macro"))


def choose_weights(
    per_model: Mapping[str, np.ndarray], labels: np.ndarray, *, steps: int = 10
) -> tuple[dict[str, float], float]:
    """The weights of the classic mean with the best validation macro-F1, on a grid of 1/`steps`.

    The grid includes each model alone and the unweighted mean (when `steps` is a multiple of the
    number of models); ties go to the weights nearest the unweighted mean, so that equal scores
    never move weight away from a model.

    Returns:
        (weights summing to 1, validation macro-F1).
    """
    names = list(per_model)
    best: tuple[float, float, tuple[int, ...]] | None = None
    for shares in _simplex(len(names), steps):
        weights = {name: share / steps for name, share in zip(names, shares, strict=True)}
        if not any(weights.values()):
            continue
        score = round(weighted_mean_f1(per_model, labels, weights), 12)
        spread = -sum(abs(share / steps - 1 / len(names)) for share in shares)
        if best is None or (score, spread) > best[:2]:
            best = (score, spread, shares)
    assert best is not None
    return {name: share / steps for name, share in zip(names, best[2], strict=True)}, best[0]


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


def choose_abstain_threshold(
    per_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    target_accuracy: float = 0.95,
    max_abstain: float = 1.0,
    count_disagreement: bool = True,
    weights: Mapping[str, float] | None = None,
) -> tuple[float, float, float]:
    """The lowest `abstain_below` whose answered cases reach `target_accuracy` on validation.

    An answer is kept when the classic ensemble's confidence (with `weights`) is at least the
    threshold and (with `count_disagreement`, as the service does) its members' top labels agree.
    If the target cannot be met while abstaining on at most `max_abstain` of the cases, the
    threshold that abstains on as close to that share as possible is used.

    Returns:
        (threshold, coverage = share of cases kept, accuracy on the kept cases).
    """
    count = len(labels)
    decisions = [
        classic({name: probs[i] for name, probs in per_model.items()}, abstain_below=0.0, weights=weights)
        for i in range(count)
    ]
    confidence = np.asarray([d.confidence for d in decisions])
    correct = np.asarray([d.label_index for d in decisions]) == labels
    tops = np.stack([np.asarray(per_model[name]).argmax(axis=1) for name in members(per_model, weights)])
    agree = np.all(tops == tops[0], axis=0) if count_disagreement else np.ones(count, dtype=bool)
    # Candidate thresholds: 0 and every distinct confidence; a threshold keeps the cases at or above it.
    candidates = np.concatenate([[0.0], np.unique(confidence)])
    best: tuple[float, float, float] | None = None
    fallback: tuple[float, float, float] | None = None
    for threshold in candidates:
        kept = (confidence >= threshold) & agree
        coverage = float(kept.mean())
        accuracy = float(correct[kept].mean()) if kept.any() else 1.0
        if coverage < 1 - max_abstain - 1e-12:
            break
        fallback = (float(threshold), coverage, accuracy)
        if accuracy >= target_accuracy:
            best = fallback
            break
    chosen = (
        best or fallback or (0.0, float(agree.mean()), float(correct[agree].mean()) if agree.any() else 1.0)
    )
    return chosen
