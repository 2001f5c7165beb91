"""Scoring and saving a network with its optimizer's moving average of the weights.

With `TrainConfig.weight_average` the optimizer keeps an exponential moving average of the
trainable weights, updated after every step (Keras's `use_ema`; Polyak averaging). On a small
data set the live weights' validation macro-F1 swings by several points from one epoch to the
next; the average follows the same trajectory with the step-to-step noise smoothed out, so
choosing the best epoch by it picks less of a lucky swing.

The average lives in the optimizer, so a checkpoint (`last.keras`) carries it and a resumed run
continues it. Batch-norm statistics are not trainable, and the live network's describe the live
weights' activations, not the average's: with the learning rate still high the averaged network
scored 0.712 with them and 0.743 with statistics recomputed on 400 training images (`scratch`,
run r26, epoch 59; the live weights: 0.684). So the average is scored and kept with batch-norm
statistics of its own (`recompute_batch_norm_statistics`), as stochastic weight averaging does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

#: Training images whose activations give the averaged network its batch-norm statistics.
RECALIBRATION_IMAGES = 512


def has_weight_average(model: keras.Model) -> bool:
    """Whether `model`'s optimizer keeps a moving average of its trainable weights (and has built it)."""
    optimizer = getattr(model, "optimizer", None)
    return bool(getattr(optimizer, "use_ema", False)) and hasattr(
        optimizer, "_model_variables_moving_average"
    )


def _swap(optimizer: Any) -> None:
    # Keras's SwapEMAWeights callback swaps the same two lists; it has no public accessor for them.
    for variable, average in zip(
        optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
    ):
        if average is None:
            continue
        # Through host copies: any backend's variables take an array.
        live, averaged = keras.ops.convert_to_numpy(variable), keras.ops.convert_to_numpy(average)
        variable.assign(averaged)
        average.assign(live)


def recalibration_batches(images: np.ndarray, batch_size: int, seed: int | list[int]) -> list[np.ndarray]:
    """Up to `RECALIBRATION_IMAGES` of `images` (uint8, (n, h, w)), unaugmented, as float32 model batches."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), min(RECALIBRATION_IMAGES, len(images)), replace=False))
    return [
        np.asarray(images[chosen[start : start + batch_size]]).astype(np.float32)[..., None]
        for start in range(0, len(chosen), batch_size)
    ]


def recompute_batch_norm_statistics(model: keras.Model, batches: Iterable[np.ndarray]) -> None:
    """Set every batch norm's moving statistics to the mean of its statistics over `batches`.

    Each batch runs forward in training mode with the layer's momentum set so that its moving
    statistics become the running mean of the batches' (momentum i / (i + 1) for batch i), so the
    result depends on every batch equally and not on the statistics before. Other non-trainable
    state (random generators) moves too: `averaged_weights` puts it back.
    """
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for index, batch in enumerate(batches):
            for layer in norms:
                layer.momentum = index / (index + 1)
            model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


@contextlib.contextmanager
def averaged_weights(model: keras.Model, batches: Iterable[np.ndarray] | None = None) -> Iterator[None]:
    """Within the block, `model` holds its optimizer's moving-average weights; after it, its own again.

    Args:
        model: A model whose optimizer keeps a moving average (`has_weight_average`).
        batches: Model inputs to recompute the batch-norm statistics on for the averaged weights
            (`recompute_batch_norm_statistics`); default: keep the live network's.

    The trainable weights are exchanged in place (no copy of the network is built); the
    non-trainable state is copied and put back exactly, so training goes on as if the block had
    not run, even when the block raises.

    Raises:
        ValueError: The model's optimizer keeps no moving average.
    """
    if not has_weight_average(model):
        raise ValueError("the model's optimizer keeps no moving average of the weights (use_ema)")
    saved = [keras.ops.convert_to_numpy(variable) for variable in model.non_trainable_variables]
    _swap(model.optimizer)
    try:
        if batches is not None:
            recompute_batch_norm_statistics(model, batches)
        yield
    finally:
        _swap(model.optimizer)
        for variable, value in zip(model.non_trainable_variables, saved, strict=True):
            variable.assign(value)
