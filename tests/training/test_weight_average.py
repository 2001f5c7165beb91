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
from training.weight_average import averaged_weights, has_weight_average


def _trained_dense(use_ema: bool) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
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
        for inside, expected in zip(model.get_weights(), average, strict=True):
            np.testing.assert_array_equal(inside, expected)
    for after, expected in zip(model.get_weights(), live, strict=True):
        np.testing.assert_array_equal(after, expected)

    with pytest.raises(RuntimeError), averaged_weights(model):
        raise RuntimeError
    for after, expected in zip(model.get_weights(), live, strict=True):
        np.testing.assert_array_equal(after, expected)


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
