"""The evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import classification_metrics, expected_calibration_error, pairwise_auc

CLASSES = ["normal", "pneumonia", "tuberculosis"]


def test_ece_is_zero_when_confidence_equals_accuracy_and_known_otherwise() -> None:
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.75, 0.25, 0.0]] * 4)  # 75 % confident, 75 % right
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0)
    overconfident = np.array([[1.0, 0.0, 0.0]] * 4)
    assert expected_calibration_error(labels, overconfident) == pytest.approx(0.25)


def test_metrics_of_a_known_confusion() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    metrics = classification_metrics(labels, probabilities, CLASSES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["per_class"]["pneumonia"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["pneumonia"]["recall"] == pytest.approx(1.0)
    assert metrics["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))


def test_a_class_absent_from_the_labels_is_left_out() -> None:
    labels = np.array([0, 0, 1, 1])  # no tuberculosis, as in the NIH source
    probabilities = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    metrics = classification_metrics(labels, probabilities, CLASSES)
    assert metrics["per_class"]["tuberculosis"]["f1"] is None
    assert metrics["per_class"]["tuberculosis"]["roc_auc"] is None
    assert metrics["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3]))


def test_pairwise_auc_uses_only_the_two_classes() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7], [0.0, 1.0, 0.0]]
    )
    assert pairwise_auc(labels, probabilities, positive=1, negative=0) == pytest.approx(1.0)
    assert pairwise_auc(np.array([0, 0]), probabilities[:2], positive=1, negative=0) is None
