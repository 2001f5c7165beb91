"""Classification metrics: per class, macro, ROC-AUC, confusion matrix, calibration error."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (for reliability diagrams)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in itertools.pairwise(edges):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            rows.append(
                {
                    "low": float(low),
                    "high": float(high),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Every metric of the evaluation report for one predictor on one set of images.

    Classes absent from `labels` get no recall, F1 or AUC (None) and are left out of macro-F1,
    so that a source without tuberculosis (NIH) is scored on the classes it has.
    """
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(classes)))
    present = [c for c in indices if np.any(labels == c)]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    per_class: dict[str, dict[str, float | int | None]] = {}
    for c, name in enumerate(classes):
        auc: float | None = None
        if 0 < np.sum(labels == c) < len(labels):  # needs positives and negatives
            auc = float(roc_auc_score(labels == c, probabilities[:, c]))
        per_class[name] = {
            "precision": float(precision[c]),
            "recall": float(recall[c]) if c in present else None,
            "f1": float(f1[c]) if c in present else None,
            "support": int(support[c]),
            "roc_auc": auc,
        }
    aucs = [per_class[classes[c]]["roc_auc"] for c in present]
    return {
        "count": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": float(np.mean([f1[c] for c in present])) if present else None,
        "macro_roc_auc": float(np.mean([a for a in aucs if a is not None]))
        if any(a is not None for a in aucs)
        else None,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "ece": expected_calibration_error(labels, probabilities),
    }


def pairwise_auc(labels: np.ndarray, probabilities: np.ndarray, positive: int, negative: int) -> float | None:
    """ROC-AUC of `positive` vs `negative` on the images of those two classes only.

    The score is p(positive) / (p(positive) + p(negative)), the two-class renormalisation.
    """
    mask = (labels == positive) | (labels == negative)
    if not mask.any() or np.all(labels[mask] == positive) or np.all(labels[mask] == negative):
        return None
    pair = probabilities[mask][:, [positive, negative]]
    score = pair[:, 0] / np.clip(pair.sum(axis=1), 1e-12, None)
    return float(roc_auc_score(labels[mask] == positive, score))
