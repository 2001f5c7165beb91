"""Parameter and FLOP counts of Keras models, from their layers' shapes.

FLOPs are counted as 2 x multiply-adds of the convolutions and dense layers, which dominate
CNN cost; element-wise layers, pooling and normalisation are left out, as usual.
"""

from __future__ import annotations

import math

import keras


def _shape(tensor: object) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else 1 for d in tensor.shape)  # type: ignore[attr-defined]


def count_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of one image (batch dimension 1)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out = _shape(layer.output)
            kh, kw = layer.kernel_size
            total += 2 * math.prod(out[1:]) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            out = _shape(layer.output)
            in_channels = _shape(layer.input)[-1]
            kh, kw = layer.kernel_size
            total += 2 * math.prod(out[1:]) * kh * kw * in_channels // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * _shape(layer.input)[-1] * layer.units
    return total


def count_params(model: keras.Model) -> int:
    """All parameters, trainable or not."""
    return int(model.count_params())
