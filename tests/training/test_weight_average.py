"""The optimizer's moving average of the weights: swapped in to score, kept as the best weights."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.training.test_train import _tiny_data
from training.config import TrainConfig
from training.train import CUSTOM_OBJECTS, fit_network
from training.weight_average import (
    RECALIBRATION_IMAGES,
    averaged_weights,
    has_weight_average,
    recalibration_batches,
    recompute_batch_norm_statistics,
)


def _trained_dense(use_ema: bool) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=0.1, use_ema=use_ema, ema_momentum=0.9), loss="mse"
    )
    rng = np.random.default_rng(0)
    for _ in range(8):  # step by step: `fit` would end by writing the average into the model
        model.train_on_batch(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)))
    return model


def test_the_average_is_in_the_model_only_within_the_block_even_when_it_raises() -> None:
    model = _trained_dense(use_ema=True)
    live = [w.copy() for w in model.get_weights()]
    average = [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]
    assert not np.allclose(live[0], average[0])  # after eight steps at momentum 0.9 they differ

    with averaged_weights(model):
        inside_weights = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        for inside, expected in zip(inside_weights, average, strict=True):
            np.testing.assert_array_equal(inside, expected)
    for after, expected in zip(model.get_weights(), live, strict=True):
        np.testing.assert_array_equal(after, expected)

    with pytest.raises(RuntimeError), averaged_weights(model):
        raise RuntimeError
    for after, expected in zip(model.get_weights(), live, strict=True):
        np.testing.assert_array_equal(after, expected)


def test_batch_norm_statistics_become_the_mean_over_the_batches_and_momentum_is_restored() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=i, scale=1 + i, size=(8, 3)).astype(np.float32) for i in range(3)]
    recompute_batch_norm_statistics(model, batches)
    norm = model.layers[0]
    expected_mean = np.mean([batch.mean(axis=0) for batch in batches], axis=0)
    expected_variance = np.mean([batch.var(axis=0) for batch in batches], axis=0)
    np.testing.assert_allclose(norm.moving_mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), expected_variance, rtol=1e-4)
    assert norm.momentum == 0.9


def test_recalibrated_statistics_are_the_averages_inside_the_block_and_the_live_ones_after() -> None:
    model = _trained_dense(use_ema=True)
    live = [keras.ops.convert_to_numpy(v).copy() for v in model.non_trainable_variables]
    batches = [np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)]
    with averaged_weights(model, batches):
        norm = model.layers[-1]
        # One batch: the moving mean is the averaged network's mean activation on it.
        features = model.layers[0](batches[0])
        np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(features, axis=0), rtol=1e-5, atol=1e-6)
    for after, expected in zip(model.non_trainable_variables, live, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(after), expected)


def test_recalibration_takes_a_seeded_sample_of_unaugmented_images() -> None:
    images = np.arange(600 * 2 * 2, dtype=np.uint8).reshape(600, 2, 2)
    batches = recalibration_batches(images, 100, [42, 3])
    assert [len(batch) for batch in batches] == [100] * 5 + [RECALIBRATION_IMAGES - 500]
    assert batches[0].shape[1:] == (2, 2, 1)
    assert batches[0].dtype == np.float32
    again = recalibration_batches(images, 100, [42, 3])
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert len(recalibration_batches(images[:10], 4, 0)) == 3  # fewer images than the sample: all of them


def test_a_model_without_an_average_is_refused() -> None:
    model = _trained_dense(use_ema=False)
    assert not has_weight_average(model)
    with pytest.raises(ValueError, match="moving average"), averaged_weights(model):
        pass


def test_a_run_with_an_average_scores_and_keeps_the_average(tmp_path: Path) -> None:
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32", weight_average=0.9
    )
    run = tmp_path / "run"
    fit_network(config, _tiny_data(), run, workers=1)

    last = keras.models.load_model(run / "last.keras", custom_objects=CUSTOM_OBJECTS)
    best = keras.models.load_model(run / "best.keras", custom_objects=CUSTOM_OBJECTS)
    assert has_weight_average(last)
    # One epoch: the best is that epoch, and its weights are the average, not the live weights.
    averages = [keras.ops.convert_to_numpy(v) for v in last.optimizer._model_variables_moving_average]
    kernels = [keras.ops.convert_to_numpy(v) for v in best.trainable_variables]
    for kept, average in zip(kernels, averages, strict=True):
        np.testing.assert_allclose(kept, average, rtol=1e-6)
    live = [keras.ops.convert_to_numpy(v) for v in last.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(live, kernels, strict=True))

    row = json.loads((run / "state.json").read_text())["history"][0]
    assert 0.0 <= row["val_macro_f1_live"] <= 1.0
    assert 0.0 <= row["val_macro_f1"] <= 1.0
