"""Scoring and saving a network with its optimizer's moving average of the weights.

With `TrainConfig.weight_average` the optimizer keeps an exponential moving average of the
trainable weights, updated after every step (Keras's `use_ema`; Polyak averaging). On a small
data set the live weights' validation macro-F1 swings by several points from one epoch to the
next; the average follows the same trajectory with the step-to-step noise smoothed out, so
choosing the best epoch by it picks less of a lucky swing.

The average lives in the optimizer, so a checkpoint (`last.keras`) carries it and a resumed run
continues it. Batch-norm statistics are not trainable: they stay the live network's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras


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
        live = keras.ops.convert_to_numpy(variable)
        variable.assign(average)
        average.assign(live)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[None]:
    """Within the block, `model` holds its optimizer's moving-average weights; after it, its own again.

    The two are exchanged in place (no copy of the network is built), and exchanged back even when
    the block raises.

    Raises:
        ValueError: The model's optimizer keeps no moving average.
    """
    if not has_weight_average(model):
        raise ValueError("the model's optimizer keeps no moving average of the weights (use_ema)")
    _swap(model.optimizer)
    try:
        yield
    finally:
        _swap(model.optimizer)
